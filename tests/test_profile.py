"""``profile`` (kernel categories, JSON) and ``compare`` (engines side by side) on small inputs."""

from __future__ import annotations

import json

import pytest

from tvm_shufflenet.build import load_source
from tvm_shufflenet.cli import main
from tvm_shufflenet.compiler.pipeline import lower
from tvm_shufflenet.profile import CATEGORIES, categorize, kernel_calls
from tvm_shufflenet.targets import resolve


def test_stock_kernels_are_categorized_from_their_blocks():
    """The stock pipeline's ShuffleNet has concat/shuffle kernels and unfused BatchNorms: the profiler sees them."""
    calls = kernel_calls(lower(load_source("shufflenet_v2_x0_5", input_size=64).mod, resolve("host").tvm_target(), "stock"))
    cats = {c.category for c in calls}
    assert {"data_movement", "elementwise", "pointwise_conv", "depthwise_conv", "dense_conv", "pooling", "classifier"} <= cats
    assert categorize("fused_relu_concatenate_reshape_transpose_reshape_split") == "data_movement"
    assert categorize("fused_add_relu") == "elementwise"


def test_profile_json(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "shufflenet_v2_x0_5", "--input-size", "64", "--repeat", "2", "--kernels", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"model", "target", "total_ms", "kernels"} and data["total_ms"] > 0
    assert data["method"] == "in-network"  # timed inside the running network through the VM hook
    assert data["kernels"] and all(set(k) == {"name", "category", "calls", "time_ms"} for k in data["kernels"])
    assert {k["category"] for k in data["kernels"]} <= set(CATEGORIES)
    assert "data_movement" not in {k["category"] for k in data["kernels"]}
    # 56 fused convs (the first with its max pool), mean, classifier: no shuffle kernels, no max pool of its own
    assert sum(k["calls"] for k in data["kernels"]) == 58
    printed = capsys.readouterr().out
    assert "pointwise_conv" in printed and "2 threads" in printed


def test_compare_engines(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    monkeypatch.setenv("TVM_SHUFFLENET_TUNING_LOGS", str(tmp_path / "no-logs"))  # the engine workers inherit it
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    args = ["compare", "shufflenet_v2_x0_5", "--input-size", "64", "--repeat", "4", "--warmup", "1", "-o", str(out),
            "--plot", str(png), "--markdown"]
    assert main(args) == 0
    (rec,) = json.loads(out.read_text())
    eng = rec["engines"]
    assert rec["threads"] == 2 and rec["input_shape"] == [1, 3, 64, 64]
    assert eng["tvm_shufflenet_tuned"]["available"] is False and "tuning log" in eng["tvm_shufflenet_tuned"]["note"]
    for name in ("tvm_shufflenet", "tvm_stock", "onnxruntime", "openvino", "pytorch"):
        assert eng[name]["available"] and eng[name]["median_ms"] > 0 and eng[name]["ratio_vs_onnxruntime"] > 0
        assert eng[name]["max_err_vs_pytorch"] < 1e-4, name  # same weights, same input: the same function (f32)
    assert eng["onnxruntime"]["ratio_vs_onnxruntime"] == 1.0
    assert rec["fastest_peer"] in ("onnxruntime", "openvino") and eng[rec["fastest_peer"]]["ratio_vs_fastest_peer"] == 1.0
    assert rec["tuning_log"]["how"] == "none"
    assert png.stat().st_size > 1000
    assert "| shufflenet_v2_x0_5 |" in capsys.readouterr().out
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out
