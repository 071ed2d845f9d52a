"""Weights for zoo models: seeded initialisation, ``.npz`` files and PyTorch (torchvision-named) checkpoints.

Weights are plain ``dict[str, np.ndarray]`` keyed by the PyTorch parameter names the models use, so a
torchvision ``state_dict`` loads as is for ShuffleNet V2 and MobileNet V2/V3.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import UserError
from .models import RelaxModel

__all__ = ["WeightsError", "seeded", "save_npz", "load", "check"]

Weights = dict[str, np.ndarray]


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


def _is_batchnorm(name: str, names: set[str]) -> bool:
    prefix = name.rsplit(".", 1)[0]
    return f"{prefix}.running_var" in names


def seeded(model: RelaxModel, seed: int = 0) -> Weights:
    """Deterministic weights: He-normal convolutions and plausible BatchNorm statistics.

    Each tensor draws from its own generator seeded by ``(seed, crc32(name))``, so a tensor's values do not
    depend on which other layers exist. Activations keep a unit-ish scale through any depth, which keeps
    numerical comparisons meaningful.
    """
    names = set(model.param_names)
    out: Weights = {}
    for name, shape in zip(model.param_names, model.param_shapes):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        leaf = name.rsplit(".", 1)[-1]
        if _is_batchnorm(name, names):
            value = {
                "weight": lambda: rng.uniform(0.6, 1.2, shape),
                "bias": lambda: rng.normal(0.0, 0.1, shape),
                "running_mean": lambda: rng.normal(0.0, 0.1, shape),
                "running_var": lambda: rng.uniform(0.6, 1.4, shape),
            }[leaf]()
        elif len(shape) == 4:  # OIHW convolution, fan-in counts the group's input channels
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif len(shape) == 2:  # (out, in) fully connected
            value = rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
        else:
            value = rng.normal(0.0, 0.01, shape)
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def save_npz(weights: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write weights to an uncompressed ``.npz`` (atomically: a crash leaves no half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
    tmp.replace(path)


def _read_pth(path: Path) -> Weights:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path}: reading a .pth checkpoint needs PyTorch (pip install torch==2.13.0), "
            "or convert it to .npz where torch is installed"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}")
    out: Weights = {}
    for key, value in obj.items():
        if not hasattr(value, "detach") or key.endswith("num_batches_tracked"):
            continue
        out[key.removeprefix("module.")] = value.detach().to(torch.float32).numpy()
    return out


def _read_npz(path: Path) -> Weights:
    import zipfile

    redo = "write one with `tvm-shufflenet weights` or numpy.savez"
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is not an .npz archive (no zip structure; truncated or another format): {redo}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays would run arbitrary code on load: never loaded
            raise WeightsError(f"{path} holds pickled objects, not plain arrays, and is not loaded: {redo}") from None
        raise WeightsError(f"{path}: an array in it is unreadable ({str(exc).splitlines()[0]}): {redo}") from None
    except Exception as exc:
        raise WeightsError(f"{path}: an array in it is unreadable ({type(exc).__name__}): {redo}") from None


def load(path: str | Path, model: RelaxModel) -> Weights:
    """Read ``.npz`` or ``.pth``/``.pt`` weights and check them against ``model``'s parameters."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        weights = _read_npz(path)
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        weights = _read_pth(path)
    else:
        raise WeightsError(f"{path}: unknown weights format {suffix!r}; use .npz or a PyTorch .pth state_dict")
    return check(weights, model, source=str(path))


def _listing(items: list[str], limit: int = 4) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check(weights: Mapping[str, np.ndarray], model: RelaxModel, source: str = "weights") -> Weights:
    """Return the weights in the model's parameter order, or raise one error naming every misfit."""
    expected = dict(zip(model.param_names, model.param_shapes))
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [
        f"{k} {tuple(weights[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in weights and tuple(weights[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if misshaped:
        problems.append(f"mis-shaped {_listing(misshaped)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if problems:
        hint = ""
        if any(k.split(" ")[0] in _classifier_keys(model) for k in misshaped):
            hint = "; for a checkpoint with another number of classes pass --num-classes"
        raise WeightsError(f"{source} does not fit this model: {'; '.join(problems)}{hint}")
    return {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in model.param_names}


def _classifier_keys(model: RelaxModel) -> set[str]:
    return {n for n, s in zip(model.param_names, model.param_shapes) if s and s[0] == model.num_classes}
