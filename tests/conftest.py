"""Shared fixtures. Markers: default (fast), ``slow``, ``board`` (emulated ARM), ``gpu`` (needs CUDA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TVM_NUM_THREADS", "2")  # before any kernel starts TVM's thread pool


def tolerance(reference: np.ndarray) -> float:
    """The parity bar of the project: max abs error <= 1e-4 of the reference output's range."""
    return 1e-4 * float(np.ptp(reference))


@pytest.fixture(scope="session", autouse=True)
def two_threads():
    """Kernels run on 2 threads in every test (as on CI), so a race between tiles shows up as a failure."""
    from tvm_shufflenet.runtime import set_threads

    assert set_threads(2) == 2


@pytest.fixture(scope="session")
def libdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("libs")


@pytest.fixture(scope="session")
def small_host_lib(libdir) -> tuple[Path, dict]:
    """ShuffleNet V2 x0.5 at 64x64 for this CPU, seeded weights: the library most runtime tests share."""
    from tvm_shufflenet.build import build

    path = libdir / "snv2_x0_5_64.so"
    record = build("shufflenet_v2_x0_5", "host", path, input_size=64)
    return path, record
