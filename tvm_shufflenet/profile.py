"""Per-kernel time of a compiled network, grouped by what each kernel does.

TVM 0.27's Relax VM has no profiler any more (``VirtualMachine.profile`` and ``tvm.runtime.profiling`` are
gone). The kernel list is read from the lowered module (every ``R.call_tir`` in execution order, with its
argument shapes). On this machine each kernel is timed inside the running network through the VM's call
hook (``set_instrument``); on a board over RPC, where the hook cannot reach, each kernel is timed alone with
TVM's time evaluator in a plain kernels library. The network total is always the VM's own, without the hook;
``total - sum(kernels)`` is the time between kernels (VM dispatch, views, allocation).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CATEGORIES", "KernelCall", "kernel_calls", "categorize", "profile", "ProfileResult"]

CATEGORIES = ("pointwise_conv", "depthwise_conv", "dense_conv", "pooling", "classifier", "data_movement",
              "elementwise", "other")

_MOVE_OPS = ("concatenate", "concat", "split", "transpose", "reshape", "strided_slice", "take", "squeeze",
             "expand_dims", "copy", "permute_dims", "layout_transform", "gather", "broadcast_to", "flatten")
_ELEMWISE_OPS = ("batch_norm", "tir_clip", "add", "subtract", "multiply", "divide", "relu6", "relu", "clip", "sigmoid", "tanh",
                 "exp", "maximum", "minimum", "hardswish", "hard_swish", "hardsigmoid", "sqrt", "rsqrt", "power",
                 "cast", "negative", "where", "greater", "less", "erf", "log")


def _ops_in(name: str) -> list[str] | None:
    """The op names a fused kernel's name is made of (``fused_add_relu_concatenate3`` -> add, relu, concatenate)."""
    rest = re.sub(r"\d+", "", name.lower().replace("fused_", "")).strip("_")
    found: list[str] = []
    vocab = sorted(_MOVE_OPS + _ELEMWISE_OPS, key=len, reverse=True)
    while rest:
        rest = rest.lstrip("_")
        for op in vocab:
            if rest.startswith(op):
                found.append(op)
                rest = rest[len(op):]
                break
        else:
            return None
    return found


@dataclass
class KernelCall:
    """One kernel as the VM calls it: symbol, argument shapes/dtypes (outputs last), category."""

    name: str
    args: list[tuple[tuple[int, ...], str]]
    category: str


def _conv_kind(args: list[tuple[tuple[int, ...], str]]) -> str | None:
    """pointwise / depthwise / dense for a stock conv2d kernel, from its ``(O, I/g, kh, kw)`` weight argument."""
    out = args[-1][0] if args else ()
    for shape, _ in args[:-1]:
        if len(shape) == 4 and len(out) == 4 and shape[0] == out[1] and shape[2] == shape[3] and shape != out:
            if shape[2] == 1:
                return "pointwise_conv"
            return "depthwise_conv" if shape[1] == 1 else "dense_conv"
    return None


def categorize(name: str, func: Any = None, args: list | None = None) -> str:
    """The category of a kernel: our templates say it in an attribute; stock kernels by name and shape."""
    attrs = getattr(func, "attrs", None)
    tag = str(attrs["tvm_shufflenet.kernel"]) if attrs is not None and "tvm_shufflenet.kernel" in attrs.keys() else ""
    if tag.startswith("conv2d:"):
        spec = json.loads(tag.split(":", 1)[1])
        k = (spec["kh"], spec["kw"], spec["stride"], tuple(spec["pad"]))
        if k[:2] == (1, 1) and spec["stride"] == 1:
            return "pointwise_conv"
        return "depthwise_conv" if spec["groups"] == spec["cin"] == spec["cout"] and spec["groups"] > 1 else "dense_conv"
    if attrs is not None and "tvm_shufflenet.layout" in attrs.keys():  # NCHW <-> NCHW{B}c at a blocked region's edge
        return "data_movement"
    if tag.startswith("pool:"):
        return "pooling"
    if tag.startswith("dense:"):
        return "classifier"
    base = name.lower()
    if "conv2d" in base:
        return _conv_kind(args or []) or "dense_conv"
    if "pool" in base or re.search(r"(^|_)mean", base):
        return "pooling"
    if "matmul" in base or "dense" in base or "linear" in base:
        return "classifier"
    ops = _ops_in(base)
    if ops:  # a stock fused kernel's name lists its ops; a reshape next to real work is free, others move data
        if all(op in _MOVE_OPS for op in ops) or any(op in _MOVE_OPS and op != "reshape" for op in ops):
            return "data_movement"
        return "elementwise"
    blocks = _blocks(func)
    if blocks:
        moving = [b for b in blocks if any(op in b for op in _MOVE_OPS if op != "reshape")]
        if moving or all("reshape" in b for b in blocks):
            return "data_movement"
        return "elementwise"
    return "other"


def _blocks(func: Any) -> list[str]:
    """Names of the compute blocks of a stock PrimFunc (``T_concat``, ``T_add``, ...)."""
    if func is None or not hasattr(func, "script"):
        return []
    return [b for b in set(re.findall(r'T\.sblock\("(\w+)"', func.script())) if b != "root"]


def kernel_calls(lowered: Any) -> list[KernelCall]:
    """Every ``R.call_tir`` of ``main`` in order, with argument shapes (the output last)."""
    from tvm import relax

    from .compiler.graph import op_name, shape_of

    calls: list[KernelCall] = []
    # Reshapes the VM will turn into zero-copy views are not kernels: apply that rewrite first.
    lowered = relax.transform.RewriteDataflowReshape()(lowered)

    def visit(expr: Any) -> None:
        if op_name(expr) != "relax.call_tir":
            return
        gv = expr.args[0]
        args = []
        for a in expr.args[1].fields:
            shape = shape_of(a)
            if shape is None:
                return
            args.append((shape, str(a.ty.dtype)))
        out_ty = expr.ty
        for ty in (out_ty.fields if hasattr(out_ty, "fields") else [out_ty]):  # a split returns a tuple
            args.append((tuple(int(v) for v in ty.shape.values), str(ty.dtype)))
        func = lowered[gv]
        calls.append(KernelCall(gv.name_hint, args, categorize(gv.name_hint, func, args)))

    relax.analysis.post_order_visit(lowered["main"], visit)
    return calls


@dataclass
class ProfileResult:
    model: str
    target: str
    pipeline: str
    total_ms: float
    kernels: list[dict[str, Any]] = field(default_factory=list)
    threads: int | None = None
    device: str = "local"
    method: str = "in-network"  # or "isolated" (each kernel alone: boards over RPC, GPUs)
    timed_total_ms: float | None = None  # the network's time while its kernels were timed (hook on)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "pipeline": self.pipeline,
            "device": self.device,
            "threads": self.threads,
            "method": self.method,
            "total_ms": round(self.total_ms, 4),
            "timed_total_ms": round(self.timed_total_ms or self.total_ms, 4),
            "kernels": self.kernels,
        }

    def by_category(self) -> list[dict[str, Any]]:
        rows = []
        for cat in CATEGORIES:
            ks = [k for k in self.kernels if k["category"] == cat]
            if not ks:
                continue
            ms = sum(k["time_ms"] for k in ks)
            rows.append({"category": cat, "kernels": len(ks), "calls": sum(k["calls"] for k in ks), "time_ms": ms,
                         "share": ms / max(self.timed_total_ms or self.total_ms, 1e-12)})
        return rows


def profile(
    source: str,
    target: str = "host",
    *,
    pipeline: str = "shufflenet",
    input_size: int | None = None,
    weights: str | None = None,
    address: Any = None,
    repeat: int = 5,
    min_repeat_ms: int = 20,
    threads: int | None = None,
    progress: bool = False,
    tuning: str = "auto",
    precision: str = "fp32",
) -> ProfileResult:
    """Compile ``source`` for ``target`` with ``pipeline`` and time each kernel (on a board when ``address``).

    ``tuning``: ``auto`` (the target's tuning log, else its family's), ``none`` or a log's path."""
    import tvm
    from tvm import relax

    from .build import applied_log, load_source
    from .compiler.pipeline import build_lowered, lower
    from .compiler.tuning import decider_factory
    from .targets import resolve

    from .errors import UserError
    from .precision import for_target

    prec, spec = for_target(precision, resolve(target))
    in_network = address is None and spec.device != "cuda"  # the VM hook reaches only this machine's CPU
    if address is None:
        from .runtime import set_threads

        set_threads(threads)  # before compiling: constant folding may start TVM's pool, which cannot grow later
    src = load_source(source, weights=weights, input_size=input_size)
    tgt = spec.tvm_target()
    applied = applied_log(spec, tuning if pipeline == "shufflenet" else "none")
    if prec.reduced and pipeline != "shufflenet":
        raise UserError(f"--precision {precision} needs the shufflenet pipeline (the stock one is float32 only)")
    lowered = lower(src.mod, tgt, pipeline, decider_factory(applied.log), precision=prec)
    calls = kernel_calls(lowered)
    ex = build_lowered(lowered, tgt)
    kernels_ex = None
    if not in_network:
        # The kernels again as a plain library: a VM library does not let the time evaluator reach them.
        prims = {gv: f.with_attr("global_symbol", gv.name_hint) for gv, f in lowered.functions.items()
                 if isinstance(f, tvm.tirx.PrimFunc)}
        kernels_ex = tvm.compile(tvm.IRModule(prims), target=tgt)
    session = None
    with tempfile.TemporaryDirectory(prefix="tvm_shufflenet_profile_") as tmp:
        if address is not None:
            from tvm.support import cc

            from .rpc.board import connect, release

            session = connect(address)
            stamp = int(time.time() * 1e3) % 10**9
            loaded = []
            for what, exe in (("model", ex), ("kernels", kernels_ex)):  # remote: always timed isolated
                path = Path(tmp) / f"{what}.so"
                exe.export_library(str(path), fcompile=cc.cross_compiler(spec.cross_compiler or "gcc"))
                remote_name = f"tvm_shufflenet_profile_{stamp}_{what}.so"
                session.upload(str(path), target=remote_name)
                loaded.append(session.load_module(remote_name))
            module, kmodule = loaded
            dev = session.cuda() if spec.device == "cuda" else session.cpu()
            get_threads = session.get_function("runtime.NumThreads")
            if threads:
                session.get_function("runtime.config_threadpool")(0, threads)
        else:
            if spec.device == "cuda":
                from .runtime import _device

                dev = _device("cuda", {"target": spec.to_json()})
            else:
                dev = tvm.cpu()
            module = ex.mod if hasattr(ex, "mod") else ex
            kmodule = None if kernels_ex is None else getattr(kernels_ex, "mod", kernels_ex)
            get_threads = tvm.get_global_func("runtime.NumThreads")
        rng = np.random.default_rng(0)
        x = rng.standard_normal(src.input_shape).astype("float32")
        vm = relax.VirtualMachine(module, dev)
        vm.set_input("main", tvm.runtime.tensor(x, dev))
        vm.invoke_stateful("main")
        total = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)("main")
        total_ms = float(np.median(total.results)) * 1e3
        distinct: dict[str, dict[str, Any]] = {}
        for c in calls:
            d = distinct.setdefault(c.name, {"name": c.name, "category": c.category, "calls": 0, "args": c.args})
            d["calls"] += 1
        if in_network:
            method = "in-network"
            timed_total_ms = _time_in_network(vm, distinct, runs=max(repeat, 10))
        else:
            method = "isolated"
            timed_total_ms = total_ms
            _time_isolated(kmodule, dev, distinct, repeat, rng, progress, src.name)
        nthreads = int(get_threads())
        del vm, module, kmodule
        if session is not None:
            release(session)
    kernels = [{"name": d["name"], "category": d["category"], "calls": d["calls"], "time_ms": round(d["time_ms"], 5)}
               for d in distinct.values()]
    return ProfileResult(src.name, spec.key, pipeline, total_ms, kernels, nthreads,
                         "local" if address is None else str(address), method, timed_total_ms)


def _time_in_network(vm: Any, kernels: dict[str, dict[str, Any]], runs: int) -> float:
    """Each kernel's time inside the running network, from the VM's call hook (this machine only).

    The hook is a Python callback around every VM call, a few microseconds each, part of which lands inside
    each kernel's interval. Returns the network's time per run with the hook on: shares are taken of that.
    """
    import time

    spent = {name: 0.0 for name in kernels}
    started: dict[str, float] = {}

    def hook(_func: Any, name: str, before: bool, _ret: Any, *_args: Any) -> int:
        if name in spent:
            if before:
                started[name] = time.perf_counter()
            else:
                spent[name] += time.perf_counter() - started.pop(name)
        return 0  # VMInstrumentReturnKind.kNoOp: run the call as usual

    vm.set_instrument(hook)
    t0 = time.perf_counter()
    for _ in range(runs):
        vm.invoke_stateful("main")
    wall = (time.perf_counter() - t0) / runs * 1e3
    for name, d in kernels.items():
        d["time_ms"] = spent[name] / runs * 1e3
    return wall


def _time_isolated(kmodule: Any, dev: Any, kernels: dict[str, dict[str, Any]], repeat: int, rng: Any,
                   progress: bool, label: str) -> None:
    """Each kernel alone, with TVM's time evaluator on tensors of its shapes (works on a board over RPC).

    Alone, a kernel finds its weights in cache, which in the network stream from memory: expect these times
    to be lower than in the network (the difference shows as time outside the kernels).
    """
    import tvm

    items = list(kernels.values())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"profile {label}", unit="kernel", leave=False, disable=None)
    for d in items:
        args = [tvm.runtime.tensor(rng.standard_normal(s).astype(t) if t.startswith("float") else np.zeros(s, t), dev)
                for s, t in d["args"]]
        timer = kmodule.time_evaluator(d["name"], dev, number=1, repeat=max(repeat, 10))
        d["time_ms"] = float(np.median(timer(*args).results)) * 1e3 * d["calls"]
