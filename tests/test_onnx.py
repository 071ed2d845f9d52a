"""ONNX: zoo exports (PyTorch's exporter) compile through the project's import and match ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tvm_shufflenet import models, reference
from tvm_shufflenet import weights as W
from tvm_shufflenet.build import build
from tvm_shufflenet.cli import main
from tvm_shufflenet.counting import count
from tvm_shufflenet.frontends import OnnxImportError, fold_static_shapes, from_onnx
from tvm_shufflenet.runtime import load

from conftest import tolerance


def _export(name, path, size=64, dynamic_batch=False):
    entry = models.get(name)
    reference.export_onnx(entry, W.seeded(entry.to_relax(input_size=size)), path, input_size=size, dynamic_batch=dynamic_batch)


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5", "mobilenet_v2_0_35", "mobilenet_v3_small"])
def test_onnx_compiles_and_matches_onnxruntime(tmp_path, name):
    _export(name, tmp_path / "m.onnx")
    build(str(tmp_path / "m.onnx"), "host", tmp_path / "m.so")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    model = load(tmp_path / "m.so")
    assert model.metadata["family"] == "onnx"
    assert np.abs(model(x) - want).max() <= tolerance(want)


def test_shuffle_split_becomes_static(tmp_path):
    """torch's chunk exports as Shape/Gather/Div/Slice; after folding no Shape or dynamic slice is left."""
    _export("shufflenet_v2_x0_5", tmp_path / "m.onnx")
    raw = onnx.load(tmp_path / "m.onnx")
    assert any(n.op_type == "Shape" for n in raw.graph.node)
    folded = fold_static_shapes(raw)
    assert not any(n.op_type in ("Shape", "Gather", "Div") for n in folded.graph.node)
    mod, shape = from_onnx(tmp_path / "m.onnx")
    assert shape == (1, 3, 64, 64)
    assert "dynamic_strided_slice" not in mod.script()
    # the import counts like the zoo model (BatchNorm folded by the exporter: params differ by BN's scale)
    assert count(mod).macs == count(models.get("shufflenet_v2_x0_5").to_relax(input_size=64).mod).macs


def test_dynamic_batch_is_fixed_at_import(tmp_path):
    _export("mobilenet_v1_0_25", tmp_path / "m.onnx", dynamic_batch=True)
    build(str(tmp_path / "m.onnx"), "host", tmp_path / "m.so", batch=2)
    assert load(tmp_path / "m.so").input_shape == (2, 3, 64, 64)


def test_export_onnx_cli(tmp_path):
    assert main(["export-onnx", "mobilenet_v1_0_25", "-o", str(tmp_path / "m.onnx"), "--input-size", "96"]) == 0
    dims = [d.dim_value for d in onnx.load(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 96, 96]


def test_bad_onnx_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(OnnxImportError, match="not a readable ONNX model"):
        from_onnx(tmp_path / "bad.onnx")
