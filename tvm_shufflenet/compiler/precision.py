"""Pass: store a network in a reduced precision (bfloat16 or float16) with float32 at its boundary.

Runs after the graph rewrites (folded BatchNorm and fused conv chains are computed in float32 first, then
rounded once). Every fused conv kernel gets the stored and computed dtypes in its spec and its weights cast;
every other op sees its float constants cast, so type inference carries the stored dtype through it. A
first dense conv (the stem) reads the float32 image with float32 weights and stores its output reduced; any
other reader of the input gets a cast, and the output is cast back, so the library's interface stays float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fuse_conv import add_conv_call, conv_call
from .graph import Graph, const_of, rebuild

__all__ = ["reduce_precision", "ReducePrecision", "np_dtype"]


def np_dtype(dtype: str) -> Any:
    """The numpy dtype of a TVM dtype name (bfloat16 through ml_dtypes, which TVM's runtime uses too)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _cast_const(expr: Any, dtype: str) -> Any:
    from tvm import relax

    value = const_of(expr)
    if value is None or value.dtype != np.float32:
        return expr
    return relax.const(value.astype(np_dtype(dtype)), dtype)


def reduce_precision(mod: Any, storage: str, acc: str) -> Any:
    """Return ``mod`` storing tensors as ``storage`` and computing convolutions in ``acc``."""
    from tvm import relax

    if storage == "float32":
        return mod
    graph = Graph(mod["main"])
    if not graph.supported:
        raise ValueError("reduced precision needs a network of one dataflow block")

    uncast: dict[Any, Any] = {}  # the cast input -> the float32 parameter

    def inputs(bb: Any, params: list[Any]) -> dict[Any, Any]:
        made = {p: bb.emit(relax.op.astype(p, storage)) for p in params
                if getattr(p.ty, "dtype", None) is not None and str(p.ty.dtype) == "float32"}
        uncast.update({v: p for p, v in made.items()})
        return made  # a cast no binding reads is dead code

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        b = g.bindings[i]
        spec = conv_call(mod, b.value)
        if spec is not None:
            fields = [new(a) for a in b.value.args[1].fields]
            # a conv of the input reads the float32 image and its float32 weights (no rounding of the image, no
            # cast kernel in front, and the stem stays a channel-blocked kernel)
            first = uncast.get(fields[0]) if acc == "float32" and spec.kind == "dense" else None
            wdt = "float32" if first is not None else storage
            args = [fields[0] if first is None else first, relax.const(const_of(fields[1]).astype(np_dtype(wdt)), wdt)]
            if spec.bias:
                args.append(relax.const(const_of(fields[2]).astype(np_dtype(acc)), acc))
            value = add_conv_call(bb, spec.with_(dtype=storage, acc=acc, in_dtype="float32" if first is not None else ""),
                                  args + fields[3 if spec.bias else 2:])
        else:
            value = new(b.value)
            if type(value).__name__ == "Call":
                value = relax.Call(value.op, [_cast_const(a, storage) for a in value.args], value.attrs, value.ty_args)
        if type(b.var).__name__ == "Var" and str(getattr(b.var.ty, "dtype", "")) == "float32":  # a function output
            return relax.op.astype(bb.emit(value), "float32")
        return value

    return rebuild(mod, rewrite, inputs=inputs)


def ReducePrecision(storage: str, acc: str):  # noqa: N802
    """``reduce_precision`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: reduce_precision(mod, storage, acc), opt_level=0,
                                     name="ReducePrecision")
