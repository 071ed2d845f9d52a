"""CUDA libraries on a real GPU: one model per family built for the GPU's arch, loaded, run, and compared with
the host build of the same weights. Run with ``pytest -m gpu``; every test skips, saying why, without a GPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tvm_shufflenet.build import build
from tvm_shufflenet.runtime import load

pytestmark = pytest.mark.gpu

FAMILIES = ["shufflenet_v1_g3_x0_5", "shufflenet_v2_x0_5", "mobilenet_v1_0_25", "mobilenet_v2", "mobilenet_v3_small"]


def _gpu_arch() -> str:
    import tvm

    dev = tvm.cuda(0)
    if not dev.exist:
        pytest.skip("no CUDA GPU on this machine (tvm.cuda(0) does not exist)")
    major, minor = str(dev.compute_version).split(".")
    return f"sm_{major}{minor}"


@pytest.fixture(scope="module")
def arch() -> str:
    return _gpu_arch()


@pytest.mark.parametrize("model", FAMILIES)
def test_cuda_library_matches_the_host_build(model, arch, tmp_path):
    from tvm_shufflenet.targets import CUDA_ARCHS

    if arch not in CUDA_ARCHS:
        pytest.skip(f"this GPU is {arch}, which the targets table does not list")
    gpu_lib, cpu_lib = tmp_path / "gpu.so", tmp_path / "cpu.so"
    build(model, "cuda", gpu_lib, cuda_arch=arch, input_size=96)
    build(model, "host", cpu_lib, input_size=96)
    gpu, cpu = load(gpu_lib), load(cpu_lib)
    assert gpu.device.device_type == 2  # kDLCUDA: the library really runs on the GPU
    x = np.random.default_rng(1).standard_normal(gpu.input_shape).astype(np.float32)
    want = cpu(x)
    got = gpu(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3 * float(np.ptp(want)), np.abs(got - want).max()


def test_cuda_model_is_safe_to_share_between_threads(arch, tmp_path):
    lib = tmp_path / "gpu.so"
    build("shufflenet_v2_x0_5", "cuda", lib, cuda_arch=arch, input_size=96)
    model = load(lib)
    xs = [np.random.default_rng(i).standard_normal(model.input_shape).astype(np.float32) for i in range(4)]
    want = [model(x) for x in xs]
    wrong: list[int] = []

    def caller(t: int) -> None:
        for i in range(50):
            k = (t + i) % 4
            if not np.allclose(model(xs[k]), want[k], rtol=0, atol=1e-5 * float(np.ptp(want[k]))):
                wrong.append(t)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_guidelines_at_batch_8_on_the_gpu(arch, tmp_path):
    """The paper's GPU setting: one guideline at batch 8 on CUDA, checked against PyTorch, in batches/s."""
    import json

    from tvm_shufflenet.cli import main

    out = tmp_path / "g.json"
    assert main(["guidelines", "g3", "--target", "cuda", "--cuda-arch", arch, "--batch", "8", "--widths", "1",
                 "--repeat", "3", "--json", str(out), "--build-dir", str(tmp_path / "b")]) == 0
    rows = json.loads(out.read_text())["guidelines"]["g3"]["rows"]
    assert len(rows) == 5 and all(r["unit"] == "batches/s" and r["paper_platform"] == "GPU, batch 8" for r in rows)
