"""Load and run a compiled library with only the TVM runtime (``TVM_USE_RUNTIME_LIB=1`` works).

This module imports no compiler code: on a board, ``pip install apache-tvm`` without the compiler library
(or a runtime built from source) is enough.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .elf import LibraryError, host_machine, read_metadata
from .errors import UserError

__all__ = ["set_threads", "LibraryError", "InputError", "CompiledModel", "load", "preprocess", "host_machine", "benchmark", "top_k"]


class InputError(UserError, ValueError):
    """An input of the wrong shape, dtype or kind."""


def _labels(num_classes: int) -> list[str] | None:
    if num_classes != 1000:
        return None
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text()
    return text.splitlines()


def preprocess(image: Any, pre: dict[str, Any]) -> np.ndarray:
    """An image (path or PIL image) -> float32 ``(1, 3, crop, crop)`` batch, per the library's recipe."""
    from PIL import Image

    img = Image.open(image) if isinstance(image, (str, Path)) else image
    img = img.convert("RGB")
    resize, crop = int(pre["resize"]), int(pre["crop"])
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) * float(pre.get("scale", 1 / 255))
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class CompiledModel:
    """A loaded library: call it on a float32 NCHW batch, or ``predict`` on an image.

    Attributes:
        path: the library file.
        metadata: the record embedded at build time (model, shapes, target, weights, versions).
        device: the TVM device it runs on.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], module: Any, device: Any):
        from tvm.runtime.vm import VirtualMachine

        self.path = path
        self.metadata = metadata
        self.device = device
        self.module = module
        self.vm = VirtualMachine(module, device)
        self.input_shape = tuple(metadata["input_shape"])
        self.input_dtype = metadata["input_dtype"]
        self.labels = _labels(int(metadata["num_classes"]))

    def __repr__(self) -> str:
        return f"CompiledModel({self.metadata['model']!r}, input={self.input_shape}, target={self.metadata['target_key']!r}, device={self.device})"

    def check_input(self, x: Any) -> np.ndarray:
        """Return ``x`` as a contiguous array or raise :class:`InputError` saying what was expected."""
        if not isinstance(x, np.ndarray):
            raise InputError(f"expected a numpy array of shape {self.input_shape}, got {type(x).__name__}")
        if x.dtype != np.dtype(self.input_dtype):
            raise InputError(
                f"expected {self.input_dtype} input, got {x.dtype}: pass x.astype(np.{self.input_dtype})"
            )
        if tuple(x.shape) != self.input_shape:
            raise InputError(
                f"expected input shape {self.input_shape} (NCHW), got {tuple(x.shape)}: "
                "rebuild with --batch/--input-size to change it"
            )
        return np.ascontiguousarray(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the network on a batch; returns the logits as numpy."""
        import tvm

        x = self.check_input(x)
        out = self.vm["main"](tvm.runtime.tensor(x, self.device))
        return out.numpy()

    def predict(self, image: Any, topk: int = 5) -> list[tuple[int, str, float]]:
        """Top-k ``(class index, label, probability)`` for one image file or PIL image."""
        if self.input_shape[0] != 1:
            raise InputError(f"predict takes one image; this library was built for batch {self.input_shape[0]}")
        logits = self(preprocess(image, self.metadata["preprocessing"]))[0].astype(np.float64)
        return top_k(logits, topk, self.labels)


def top_k(logits: np.ndarray, k: int, labels: Sequence[str] | None) -> list[tuple[int, str, float]]:
    """Softmax probabilities of the ``k`` largest logits, with labels when known."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:k]
    return [(int(i), labels[i] if labels else f"class {i}", float(probs[i])) for i in order]


def _device(kind: str | None, metadata: dict[str, Any]):
    import tvm

    spec = kind or metadata["target"].get("device", "cpu")
    name, _, index = spec.partition(":")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {spec!r}: use cpu or cuda[:N]")
    built_for = metadata["target"].get("device", "cpu")
    if name != built_for:
        raise LibraryError(f"{metadata['model']} was built for {built_for} (target {metadata['target_key']}), not {name}")
    dev = tvm.device(name, int(index or 0))
    if not dev.exist:
        raise LibraryError(f"no {name} device {int(index or 0)} on this machine; this library needs one")
    return dev


def set_threads(n: int | None = None) -> int:
    """Run kernels on ``n`` CPU threads (default: every CPU this process may use); returns the count in effect.

    TVM sizes its thread pool from ``TVM_NUM_THREADS`` when the pool first starts and ``config_threadpool``
    cannot grow it later (on a 2-vCPU VM its own default is 1), so both are set.
    """
    import os

    import tvm

    n = n or len(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(n)
    tvm.get_global_func("runtime.config_threadpool")(0, n)
    return int(tvm.get_global_func("runtime.NumThreads")())


def load(path: str | Path, device: str | None = None) -> CompiledModel:
    """Load a library built by ``tvm-shufflenet compile``.

    The file is checked before it is opened: its ELF machine must be this machine's and its checksum must
    match, so a cross-compiled or damaged library gets a clear :class:`LibraryError`, not a crash.
    ``device`` is ``cpu``, ``cuda`` or ``cuda:N``; by default the one the library was built for.
    """
    import tvm

    path = Path(path)
    info, metadata = read_metadata(path)
    here = host_machine()
    if info.machine != here:
        raise LibraryError(
            f"{path} was built for {info.machine} (target {metadata.get('target_key')}), this machine is {here}: "
            "copy it to a board of that architecture, or rebuild it with --target host"
        )
    dev = _device(device, metadata)
    if "TVM_NUM_THREADS" not in __import__("os").environ:
        set_threads()  # every CPU, like ONNX Runtime; an explicit TVM_NUM_THREADS wins
    try:
        module = tvm.runtime.load_module(str(path))
    except Exception as exc:
        raise LibraryError(f"{path}: the TVM runtime could not load it: {str(exc).strip().splitlines()[-1]}") from None
    return CompiledModel(path, metadata, module, dev)


def benchmark(model: CompiledModel, x: np.ndarray | None = None, number: int = 1, repeat: int = 20, warmup: int = 2, min_repeat_ms: int = 0) -> list[float]:
    """Latency of one forward pass in ms, ``repeat`` samples, each the mean of ``number`` runs.

    Uses TVM's time evaluator on the VM (``invoke_stateful``), the same measurement used over RPC.
    """
    import tvm

    x = model.check_input(np.zeros(model.input_shape, np.float32) if x is None else x)
    model.vm.set_input("main", tvm.runtime.tensor(x, model.device))
    for _ in range(warmup):
        model.vm.invoke_stateful("main")
    timer = model.vm.time_evaluator("invoke_stateful", model.device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return [t * 1e3 for t in timer("main").results]
