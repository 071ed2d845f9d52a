"""Load and run a compiled library with only the TVM runtime (``TVM_USE_RUNTIME_LIB=1`` works).

This module imports no compiler code: on a board, ``pip install apache-tvm`` without the compiler library
(or a runtime built from source) is enough.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                img = opened.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"image {image} does not exist") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{image} is not a readable image ({type(exc).__name__}): pass a JPEG/PNG/... picture, or a .npy NCHW batch") from None
    else:
        img = image.convert("RGB")
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

    Safe to call from any number of threads at once: each call borrows a Relax VM of its own from a pool
    over the one loaded library (the weights are loaded once and shared read-only), so concurrent calls
    return exactly what sequential ones would. Every call runs its kernels on :func:`set_threads` threads, so
    ``k`` calls at once use ``k x n`` threads. ``close()`` (or ``with load(...) as model:``, or dropping the last
    reference) releases the library and its weights.

    Attributes:
        path: the library file.
        metadata: the record embedded at build time (model, shapes, target, weights, versions).
        device: the TVM device it runs on.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], library: "_Library", device: Any):
        self.path = path
        self.metadata = metadata
        self.device = device
        self._library: _Library | None = library
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self.input_shape = tuple(metadata["input_shape"])
        self.input_dtype = metadata["input_dtype"]
        self.labels = _labels(int(metadata["num_classes"]))

    def __repr__(self) -> str:
        state = "" if self._library else ", closed"
        return f"CompiledModel({self.metadata['model']!r}, input={self.input_shape}, target={self.metadata['target_key']!r}, device={self.device}{state})"

    def __enter__(self) -> "CompiledModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def module(self) -> Any:
        """The loaded TVM module (the VM executable with its kernels)."""
        if self._library is None:
            raise LibraryError(f"{self.path}: this model was closed; load() it again")
        return self._library.module

    def close(self) -> None:
        """Release this model's VMs and its hold on the library (its memory goes once no model uses it)."""
        with self._pool_lock:
            self._idle.clear()
            self._library = None

    @contextmanager
    def _vm(self) -> Iterator[Any]:
        """Borrow a VM nobody else is running; a new one when every VM is busy (the pool keeps the peak)."""
        from tvm.runtime.vm import VirtualMachine

        with self._pool_lock:
            vm = self._idle.pop() if self._idle else None
            module = self.module
        if vm is None:
            vm = VirtualMachine(module, self.device)
        _configure_this_thread(_threads_per_call())
        try:
            yield vm
        finally:
            with self._pool_lock:
                if self._library is not None:
                    self._idle.append(vm)

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
        """Run the network on a batch; returns the logits as numpy. Thread-safe."""
        return _on_runner(self._run, self.check_input(x))

    def _run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        with self._vm() as vm:
            return vm["main"](tvm.runtime.tensor(x, self.device)).numpy()

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
        raise InputError(f"unknown device {spec!r}: use cpu, cuda or cuda:N")
    built_for = metadata["target"].get("device", "cpu")
    if name != built_for:
        raise LibraryError(f"{metadata['model']} was built for {built_for} (target {metadata['target_key']}), not {name}")
    dev = tvm.device(name, int(index or 0))
    if not dev.exist:
        raise LibraryError(f"no {name} device {int(index or 0)} on this machine; this library needs one")
    return dev


_threads_lock = threading.Lock()
_threads_setting = [0]  # threads per call; 0: not set yet (TVM_NUM_THREADS or every CPU, read on first use)
_this_thread = threading.local()


def set_threads(n: int | None = None) -> int:
    """Run each call's kernels on ``n`` CPU threads (default: every CPU this process may use); returns the count.

    TVM keeps one thread pool per calling thread and ``config_threadpool`` reconfigures only the caller's,
    so the setting is kept here and each runner thread (see ``_on_runner``) applies it to its own pool at its
    next call.
    ``TVM_NUM_THREADS`` is set too: it sizes pools that start later, which cannot grow past it.
    """
    import tvm

    n = n or len(os.sched_getaffinity(0))
    with _threads_lock:
        os.environ["TVM_NUM_THREADS"] = str(n)
        _threads_setting[0] = n
    _configure_this_thread(n)
    return int(tvm.get_global_func("runtime.NumThreads")())


def _threads_per_call() -> int:
    if not _threads_setting[0]:
        _threads_setting[0] = int(os.environ.get("TVM_NUM_THREADS") or len(os.sched_getaffinity(0)))
    return _threads_setting[0]


def _configure_this_thread(n: int) -> None:
    if getattr(_this_thread, "threads", 0) != n:
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(0, n)
        _this_thread.threads = n


_RUNNER_PREFIX = "tvm_shufflenet-run"
_runners: list[ThreadPoolExecutor] = []


def _on_runner(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on one of the process's long-lived runner threads and wait for it.

    TVM gives every thread that runs a kernel a thread pool of its own and never stops it when the thread
    ends: an app that calls a model from short-lived threads (a thread per request) left 1-2 idle OS threads
    behind per thread, without bound. Kernels therefore only ever run on these threads, started on demand
    up to the peak number of calls at once (at most max(16, 4 x CPUs); further calls wait their turn) and
    reused after.
    """
    if threading.current_thread().name.startswith(_RUNNER_PREFIX):
        return fn(*args)
    with _threads_lock:
        if not _runners:
            _runners.append(ThreadPoolExecutor(max_workers=max(16, 4 * (os.cpu_count() or 1)), thread_name_prefix=_RUNNER_PREFIX))
    return _runners[0].submit(fn, *args).result()


os.register_at_fork(after_in_child=_runners.clear)  # a forked child has none of the parent's threads


class _Library:
    """One loaded library file, shared by every model loaded from it while its bytes are unchanged."""

    def __init__(self, module: Any, sha256: str):
        self.module = module
        self.sha256 = sha256


# Weak maps: a library lives as long as a model uses it. ``_by_name`` holds the one the dynamic loader
# knows by the file's path; ``_copies`` those opened through a private copy (the file changed meanwhile).
_by_name: "weakref.WeakValueDictionary[str, _Library]" = weakref.WeakValueDictionary()
_copies: "weakref.WeakValueDictionary[tuple[str, str], _Library]" = weakref.WeakValueDictionary()
_libraries_lock = threading.Lock()


def _open_library(path: Path, sha256: str) -> _Library:
    """dlopen ``path`` so that releasing the last model unloads it.

    ``tvm.runtime.load_module`` pins every module for the life of the process (TVM-FFI's
    ``keep_module_alive=True`` default): each load of a 9 MiB library leaked 9 MiB. Our libraries' kernels
    are destination-passing and return nothing allocated by the library's own code, so unloading is safe.
    The dynamic loader hands back the already-mapped object for a path it has open, even when the file was
    replaced since: a changed file at a path still in use is opened through a private copy.
    """
    import tvm_ffi

    key = str(path.resolve())
    with _libraries_lock:
        named = _by_name.get(key)
        if named is not None and named.sha256 == sha256:
            return named
        copied = _copies.get((key, sha256))
        if copied is not None:
            return copied
        try:
            if named is None:
                module = tvm_ffi.load_module(key, keep_module_alive=False)
            else:
                with tempfile.TemporaryDirectory(prefix="tvm_shufflenet-") as tmp:
                    copy = Path(tmp) / f"{sha256[:16]}-{path.name}"
                    shutil.copyfile(path, copy)
                    module = tvm_ffi.load_module(str(copy), keep_module_alive=False)
        except Exception as exc:
            raise LibraryError(f"{path}: the TVM runtime could not load it ({str(exc).strip().splitlines()[-1]}): rebuild it") from None
        lib = _Library(module, sha256)
        if named is None:
            _by_name[key] = lib
        else:
            _copies[(key, sha256)] = lib
        return lib


def load(path: str | Path, device: str | None = None) -> CompiledModel:
    """Load a library built by ``tvm-shufflenet compile``.

    The file is checked before it is opened: its ELF machine must be this machine's and its checksum must
    match, so a cross-compiled or damaged library gets a clear :class:`LibraryError`, not a crash.
    ``device`` is ``cpu``, ``cuda`` or ``cuda:N``; by default the one the library was built for. Loading the
    same unchanged file again shares its weights; the memory goes when the last model from it is released.
    """
    path = Path(path)
    info, metadata = read_metadata(path)
    here = host_machine()
    if info.machine != here:
        raise LibraryError(
            f"{path} was built for {info.machine} (target {metadata.get('target_key')}), this machine is {here}: "
            "copy it to a board of that architecture, or rebuild it with --target host"
        )
    dev = _device(device, metadata)
    if "TVM_NUM_THREADS" not in os.environ:
        set_threads()  # every CPU, like ONNX Runtime; an explicit TVM_NUM_THREADS wins
    return CompiledModel(path, metadata, _open_library(path, metadata["library_sha256"]), dev)


def benchmark(model: CompiledModel, x: np.ndarray | None = None, number: int = 1, repeat: int = 20, warmup: int = 2, min_repeat_ms: int = 0) -> list[float]:
    """Latency of one forward pass in ms, ``repeat`` samples, each the mean of ``number`` runs.

    Uses TVM's time evaluator on the VM (``invoke_stateful``), the same measurement used over RPC.
    """
    import tvm

    x = model.check_input(np.zeros(model.input_shape, np.float32) if x is None else x)

    def timed() -> list[float]:
        with model._vm() as vm:
            vm.set_input("main", tvm.runtime.tensor(x, model.device))
            for _ in range(warmup):
                vm.invoke_stateful("main")
            timer = vm.time_evaluator("invoke_stateful", model.device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
            return [t * 1e3 for t in timer("main").results]

    return _on_runner(timed)
