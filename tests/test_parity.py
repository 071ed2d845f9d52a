"""Every zoo model, compiled, against its PyTorch reference on the same weights and input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tvm
from tvm import relax
from tvm_shufflenet import models, reference
from tvm_shufflenet.build import compile_source, load_source
from tvm_shufflenet.targets import resolve
from tvm_shufflenet import weights as W

from conftest import tolerance


def _compiled_output(name: str, size: int, batch: int, seed: int):
    src = load_source(name, seed=seed, batch=batch, input_size=size)
    ex = compile_source(src, resolve("host"))  # the project's pipeline: templates, shuffle folding
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(seed).standard_normal(src.input_shape).astype(np.float32)
    return x, vm["main"](tvm.runtime.tensor(x)).numpy()


def _reference_output(name: str, size: int, x: np.ndarray, seed: int):
    entry = models.get(name)
    values = W.seeded(entry.to_relax(input_size=size), seed)
    module = reference.load_weights(reference.build(entry), values)
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# Small resolutions keep the suite fast; every stride still divides them (the nets downsample 32x).
@pytest.mark.parametrize("name", models.names())
def test_matches_pytorch_reference(name):
    size = 64
    x, got = _compiled_output(name, size, batch=1, seed=1)
    want = _reference_output(name, size, x, seed=1)
    assert got.shape == want.shape == (1, 1000)
    assert np.abs(got - want).max() <= tolerance(want)


def test_batch_and_resolution_multiplier():
    x, got = _compiled_output("mobilenet_v3_small", 160, batch=3, seed=2)
    want = _reference_output("mobilenet_v3_small", 160, x, seed=2)
    assert got.shape == (3, 1000)
    assert np.abs(got - want).max() <= tolerance(want)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in models.names() if n.startswith(("shufflenet_v2", "mobilenet"))])
def test_matches_pytorch_reference_at_224(name):
    x, got = _compiled_output(name, 224, batch=1, seed=3)
    want = _reference_output(name, 224, x, seed=3)
    assert np.abs(got - want).max() <= tolerance(want)
