"""Pass: store a network in a reduced precision (bfloat16 or float16) with float32 at its boundary.

Runs after the graph rewrites (folded BatchNorm and fused conv chains are computed in float32 first, then
rounded once). Every fused conv kernel gets the stored and computed dtypes in its spec and its weights cast;
every other op sees its float constants cast, so type inference carries the stored dtype through it. A
first dense conv (the stem) reads the float32 image with float32 weights and stores its output reduced, and
depthwise convs that compute in float32 keep float32 weights (``ConvSpec.weight_dtype``). A matmul by a
constant keeps a float16 weight under bf16 storage, and the one that makes the logits writes them in float32
(:func:`_matmul`), reading the global pool's features in float32 (:func:`_logit_pools`). Any other reader of the
input gets a cast, and the output is cast back, so the library's interface stays float32.
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


def _logit_matmuls(graph: Graph) -> set[int]:
    """Bindings of the matmuls whose result is a function output, directly or through one add of a constant."""
    from .graph import op_name

    found = set()
    for i, b in enumerate(graph.bindings):
        if op_name(b.value) != "relax.matmul" or const_of(b.value.args[1]) is None:
            continue
        users = graph.users.get(b.var, [])
        last = b
        if len(users) == 1 and users[0] < len(graph.bindings):
            u = graph.bindings[users[0]]
            if op_name(u.value) == "relax.add" and const_of(u.value.args[1]) is not None:
                last = u
        if type(last.var).__name__ == "Var":
            found.add(i)
    return found


_POOLS = ("relax.mean", "relax.nn.adaptive_avg_pool2d")
_RESHAPES = ("relax.reshape", "relax.flatten", "relax.squeeze")


def _logit_pools(graph: Graph, logits: set[int]) -> set[int]:
    """Bindings of the global pools whose features a logit matmul reads (through reshapes only): their output is
    written in float32 (the pool sums in float32 anyway), so the features are not rounded once more before the
    classifier (ShuffleNet V2 x2.0's bf16 error went 2.8e-3 -> 2.4e-3 of the output range without that rounding)."""
    from .graph import op_name

    found = set()
    for i in logits:
        x = graph.bindings[i].value.args[0]
        while (j := graph.producer.get(x)) is not None and op_name(graph.bindings[j].value) in _RESHAPES:
            x = graph.bindings[j].value.args[0]
        if j is not None and op_name(graph.bindings[j].value) in _POOLS:
            found.add(j)
    return found


def _matmul(bb: Any, call: Any, storage: str, acc: str, logits: bool) -> Any:
    """A matmul by a constant (a classifier, MobileNet V3's last hidden layer): the logits written in float32, as
    the classifier sums them (OpenVINO writes its last FullyConnected's output in float32 too; rounding the
    logits was about a quarter of a bf16 network's error), and under bf16 storage the weight kept in float16.
    A GEMV's time is its weight's bytes, which float16 keeps, and its mantissa is 3 bits longer (the weights of
    the last layers were half of MobileNet V3 small's error); the dense kernel widens it with ``vcvtph2ps``."""
    from tvm import relax

    w = const_of(call.args[1])
    xdt = str(getattr(call.args[0].ty, "dtype", storage))  # float32 features from a pool (:func:`_logit_pools`)
    if storage == "bfloat16" and acc == "float32" and float(np.abs(w).max()) < 6e4:  # within float16's range
        weight = bb.emit(relax.op.astype(relax.const(w.astype(np.float16), "float16"), xdt))
    else:
        weight = _cast_const(call.args[1], xdt)
    return relax.op.matmul(call.args[0], weight, out_dtype="float32" if logits else storage)


def reduce_precision(mod: Any, storage: str, acc: str) -> Any:
    """Return ``mod`` storing tensors as ``storage`` and computing convolutions in ``acc``."""
    from tvm import relax

    if storage == "float32":
        return mod
    graph = Graph(mod["main"])
    if not graph.supported:
        raise ValueError("reduced precision needs a network of one dataflow block")

    uncast: dict[Any, Any] = {}  # the cast input -> the float32 parameter
    logits = _logit_matmuls(graph)
    pools = _logit_pools(graph, logits) if acc == "float32" else set()

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
            reduced = spec.with_(dtype=storage, acc=acc, in_dtype="float32" if first is not None else "")
            wdt = reduced.weight_dtype
            args = [fields[0] if first is None else first, relax.const(const_of(fields[1]).astype(np_dtype(wdt)), wdt)]
            if spec.bias:
                args.append(relax.const(const_of(fields[2]).astype(np_dtype(acc)), acc))
            value = add_conv_call(bb, reduced, args + fields[3 if spec.bias else 2:])
        else:
            value = new(b.value)
            if type(value).__name__ == "Call":
                if getattr(value.op, "name", "") == "relax.matmul" and const_of(value.args[1]) is not None:
                    value = _matmul(bb, value, storage, acc, i in logits)
                elif i in pools:  # lowered as one pool kernel writing float32 (lower.py fuses the cast)
                    value = relax.op.astype(bb.emit(value), "float32")
                else:  # a constant takes the other operands' dtype: the classifier's bias is added in float32
                    dts = {str(getattr(a.ty, "dtype", "")) for a in value.args if const_of(a) is None and hasattr(a, "ty")}
                    value = relax.Call(value.op, [_cast_const(a, "float32" if "float32" in dts else storage)
                                                  for a in value.args], value.attrs, value.ty_args)
        if type(b.var).__name__ == "Var" and str(getattr(b.var.ty, "dtype", "")) == "float32":  # a function output
            out = bb.emit(value)
            return out if str(out.ty.dtype) == "float32" else relax.op.astype(out, "float32")
        return value

    return rebuild(mod, rewrite, inputs=inputs)


def ReducePrecision(storage: str, acc: str):  # noqa: N802
    """``reduce_precision`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: reduce_precision(mod, storage, acc), opt_level=0,
                                     name="ReducePrecision")
