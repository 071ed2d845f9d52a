"""Weights: seeded defaults, .npz round trips and torchvision-named .pth checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvm_shufflenet import models, reference
from tvm_shufflenet import weights as W
from tvm_shufflenet.build import build
from tvm_shufflenet.runtime import load

from conftest import tolerance


def test_seeded_is_deterministic_and_per_tensor():
    rm = models.get("shufflenet_v2_x0_5").to_relax()
    a, b = W.seeded(rm, 0), W.seeded(rm, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = W.seeded(rm, 1)
    assert not np.array_equal(a["conv1.0.weight"], c["conv1.0.weight"])
    # a tensor's values do not depend on the rest of the network
    other = W.seeded(models.get("shufflenet_v2_x1_0").to_relax(), 0)
    assert np.array_equal(a["conv1.0.weight"], other["conv1.0.weight"])
    assert (a["conv1.1.running_var"] > 0).all()


def test_npz_round_trip(tmp_path):
    rm = models.get("mobilenet_v1_0_25").to_relax()
    values = W.seeded(rm, 3)
    W.save_npz(values, tmp_path / "w.npz")
    back = W.load(tmp_path / "w.npz", rm)
    assert list(back) == rm.param_names
    assert all(np.array_equal(values[k], back[k]) for k in values)


def _torch_checkpoint(name: str, path, num_classes: int = 1000):
    """A checkpoint as torchvision would save one: PyTorch's own init, num_batches_tracked included."""
    torch.manual_seed(0)
    module = reference.build(models.get(name), num_classes)
    with torch.no_grad():  # non-trivial BN statistics, as a trained net has
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    torch.save(module.state_dict(), path)
    return module


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "mobilenet_v3_small"])
def test_pth_checkpoint_compiles_to_the_same_function(tmp_path, name):
    module = _torch_checkpoint(name, tmp_path / "ckpt.pth")
    lib = tmp_path / "m.so"
    build(name, "host", lib, weights=tmp_path / "ckpt.pth", input_size=64)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = load(lib)(x)
    assert np.abs(got - want).max() <= tolerance(want)
    assert load(lib).metadata["weights"]["source"].endswith("ckpt.pth")


def test_wrapped_and_dataparallel_checkpoints_load(tmp_path):
    module = _torch_checkpoint("mobilenet_v1_0_25", tmp_path / "plain.pth")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    rm = models.get("mobilenet_v1_0_25").to_relax()
    got = W.load(tmp_path / "wrapped.pth", rm)
    assert np.array_equal(got["fc.weight"], module.fc.weight.detach().numpy())


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    module = _torch_checkpoint("shufflenet_v2_x0_5", tmp_path / "ok.pth", num_classes=10)
    state = module.state_dict()
    state.pop("conv5.1.running_var")
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    rm = models.get("shufflenet_v2_x0_5").to_relax()
    with pytest.raises(W.WeightsError) as err:
        W.load(tmp_path / "bad.pth", rm)
    msg = str(err.value)
    assert "missing conv5.1.running_var" in msg
    assert "mis-shaped fc.weight (10, 1024) vs model (1000, 1024)" in msg
    assert "unexpected extra.weight" in msg
    assert "--num-classes" in msg and "\n" not in msg


def test_unreadable_files(tmp_path):
    rm = models.get("mobilenet_v1_0_25").to_relax()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(W.WeightsError, match="not a readable PyTorch checkpoint"):
        W.load(tmp_path / "junk.pth", rm)
    with pytest.raises(W.WeightsError, match="is not an .npz archive"):
        W.load(tmp_path / "junk.npz", rm)
    with pytest.raises(W.WeightsError, match="unknown weights format"):
        W.load(tmp_path / "w.h5", rm)
    with pytest.raises(W.WeightsError, match="does not exist"):
        W.load(tmp_path / "absent.npz", rm)
