"""Loading and running libraries with the TVM runtime: round trips, metadata and every kind of bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tvm_shufflenet import models, reference
from tvm_shufflenet import weights as W
from tvm_shufflenet.build import build
from tvm_shufflenet.elf import LibraryError
from tvm_shufflenet.runtime import InputError, benchmark, load, preprocess

from conftest import tolerance


def test_round_trip_matches_pytorch(small_host_lib):
    path, record = small_host_lib
    model = load(path)
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    entry = models.get("shufflenet_v2_x0_5")
    ref = reference.load_weights(reference.build(entry), W.seeded(entry.to_relax(input_size=64), 0))
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    assert np.abs(model(x) - want).max() <= tolerance(want)


def test_metadata_record(small_host_lib):
    path, record = small_host_lib
    meta = load(path).metadata
    for key in ("model", "input_shape", "input_dtype", "preprocessing", "target", "tvm_version", "tuning_log", "weights"):
        assert key in meta
    assert meta["model"] == "shufflenet_v2_x0_5" and meta["input_shape"] == [1, 3, 64, 64]
    assert meta["weights"]["source"] == "seeded:0" and meta["library_sha256"] == record["library_sha256"]
    assert meta["preprocessing"]["crop"] == 64


def test_predict_and_preprocessing(small_host_lib, tmp_path):
    from PIL import Image

    path, _ = small_host_lib
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    img.save(tmp_path / "x.png")
    x = preprocess(tmp_path / "x.png", load(path).metadata["preprocessing"])
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    # short side 90 -> 73, centre crop 64: the crop's mean is close to the image's, scaled and normalised
    top = load(path).predict(tmp_path / "x.png", topk=3)
    assert len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2] and isinstance(top[0][1], str)
    assert abs(sum(p for *_, p in load(path).predict(tmp_path / "x.png", topk=1000)) - 1) < 1e-6


def test_benchmark_returns_samples(small_host_lib):
    samples = benchmark(load(small_host_lib[0]), repeat=3)
    assert len(samples) == 3 and all(s > 0 for s in samples)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((1, 3, 224, 224), np.float32), r"expected input shape \(1, 3, 64, 64\)"),
        (np.zeros((1, 3, 64, 64), np.float64), "expected float32 input, got float64"),
        ([[1.0]], "expected a numpy array"),
    ],
)
def test_wrong_inputs(small_host_lib, x, message):
    with pytest.raises(InputError, match=message):
        load(small_host_lib[0])(x)


def test_damaged_libraries(small_host_lib, tmp_path):
    data = small_host_lib[0].read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    cases = {
        "flipped.so": (bytes(flipped), "checksum mismatch"),
        "truncated.so": (data[: len(data) // 3], "truncated or damaged"),
        "garbage.so": (b"hello world" * 100, "no ELF header"),
        "empty.so": (b"", "no ELF header"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LibraryError, match=message):
            load(tmp_path / name)
    with pytest.raises(LibraryError, match="does not exist"):
        load(tmp_path / "absent.so")


def test_foreign_shared_library_is_refused(tmp_path):
    import ctypes.util

    libm = ctypes.util.find_library("m")
    path = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6") if os.path.exists(p)) if libm else None
    if path is None:
        pytest.skip("no libm to try")
    with pytest.raises(LibraryError, match="not built by tvm-shufflenet"):
        load(path)


def test_library_for_another_machine_is_refused(tmp_path):
    build("mobilenet_v1_0_25", "rpi4", tmp_path / "arm.so", input_size=64)
    with pytest.raises(LibraryError, match="built for aarch64 .* this machine is x86_64"):
        load(tmp_path / "arm.so")


def test_cuda_library_without_gpu_is_a_clear_error(tmp_path):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present; see test_gpu.py")
    build("mobilenet_v1_0_25", "cuda", tmp_path / "cuda.so", input_size=64)
    with pytest.raises(LibraryError, match="no cuda device"):
        load(tmp_path / "cuda.so")
    with pytest.raises(LibraryError, match="built for cuda"):
        load(tmp_path / "cuda.so", device="cpu")


def test_runs_with_the_runtime_only(small_host_lib, tmp_path):
    """An app that imports only the TVM runtime (no compiler library loaded) loads and runs the library."""
    path, _ = small_host_lib
    x = np.random.default_rng(9).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import numpy as np, tvm_shufflenet
m = tvm_shufflenet.load({str(path)!r})
np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))
maps = open('/proc/self/maps').read()
import sys
print('compiler-loaded' if 'libtvm_compiler' in maps else 'runtime-only', sorted(k for k in sys.modules if k.startswith('tvm_shufflenet')))
"""
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "runtime-only" in out.stdout
    assert "tvm_shufflenet.models" not in out.stdout and "tvm_shufflenet.build" not in out.stdout
    assert np.allclose(np.load(tmp_path / "y.npy"), load(path)(x))
