"""Pass: fold inference BatchNorm into the convolution before it.

``batch_norm(conv2d(x, W) [+ b])`` with constant statistics becomes ``conv2d(x, W * s) + (b - mean) * s + beta``
where ``s = gamma / sqrt(var + eps)``: one conv and one bias add, which the conv fusion then absorbs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import DROP, KEEP, Graph, const_of, op_name, rebuild

__all__ = ["fold_batchnorm", "FoldBatchNorm"]


def _conv_weight(graph: Graph, var: Any) -> tuple[int, np.ndarray] | None:
    i = graph.producer.get(var)
    if i is None:
        return None
    call = graph.bindings[i].value
    if op_name(call) != "relax.nn.conv2d" or call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW":
        return None
    w = const_of(call.args[1])
    return None if w is None else (i, w)


def _match(graph: Graph, i: int) -> dict[str, Any] | None:
    """BatchNorm at binding ``i`` (the tuple projection ``bn[0]``) over a conv used only by it."""
    b = graph.bindings[i]
    if type(b.value).__name__ != "TupleGetItem" or b.value.index != 0:
        return None
    tup = b.value.tuple_value
    ti = graph.producer.get(tup)
    if ti is None:
        return None
    bn = graph.bindings[ti].value
    if op_name(bn) != "relax.nn.batch_norm" or int(bn.attrs.axis) != 1 or len(graph.users.get(tup, [])) != 1:
        return None
    stats = [const_of(a) for a in bn.args[1:5]]
    if any(s is None for s in stats):
        return None
    src = bn.args[0]
    if not graph.single_use(src):
        return None
    bias, conv_var, add_index = None, src, None
    prod = graph.value(src)
    if op_name(prod) == "relax.add" and const_of(prod.args[1]) is not None and graph.single_use(prod.args[0]):
        bias, conv_var, add_index = const_of(prod.args[1]), prod.args[0], graph.producer[src]
    found = _conv_weight(graph, conv_var)
    if found is None:
        return None
    conv_index, w = found
    gamma, beta, mean, var = stats
    scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
    b0 = np.zeros_like(mean) if bias is None else bias.reshape(-1)
    return {
        "conv": conv_index,
        "add": add_index,
        "tuple": ti,
        "weight": (w * scale.reshape(-1, 1, 1, 1)).astype(w.dtype),
        "bias": ((b0 - mean) * scale + beta).astype(w.dtype).reshape(1, -1, 1, 1),
    }


def fold_batchnorm(mod: Any) -> Any:
    """Return ``mod`` with every foldable conv -> BatchNorm pair folded."""
    from tvm import relax

    graph = Graph(mod["main"])
    if not graph.supported:
        return mod
    plans: dict[int, tuple[str, dict[str, Any]]] = {}
    for i in range(len(graph.bindings)):
        m = _match(graph, i)
        if m is None:
            continue
        plans[m["conv"]] = ("conv", m)
        plans[m["tuple"]] = ("drop", m)
        if m["add"] is not None:
            plans[m["add"]] = ("drop", m)
        plans[i] = ("bias", m)

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        if i not in plans:
            return KEEP
        role, m = plans[i]
        if role == "drop":
            return DROP
        if role == "conv":
            call = g.bindings[i].value
            return relax.Call(call.op, [new(call.args[0]), relax.const(m["weight"])], call.attrs, call.ty_args)
        return relax.op.add(new(g.bindings[m["conv"]].var), relax.const(m["bias"]))

    return rebuild(mod, rewrite)


def FoldBatchNorm():  # noqa: N802 - a pass, named like TVM's
    """``fold_batchnorm`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: fold_batchnorm(mod), opt_level=0, name="FoldBatchNorm")
