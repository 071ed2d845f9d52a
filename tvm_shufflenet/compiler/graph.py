"""A small view of a Relax ``main`` function as a list of bindings, and a rebuilder for rewriting passes.

The networks here are one dataflow block of calls, tuples and tuple projections; every pass reads them
through :class:`Graph` (producers, users, static shapes, constant values) and writes a new block with
:func:`rebuild`, which keeps the bindings a pass does not touch and renames variables consistently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Graph", "rebuild", "shape_of", "const_of", "op_name", "KEEP", "DROP"]

KEEP = object()  # rebuild(): keep the binding as it is
DROP = object()  # rebuild(): remove the binding (its users must have been rewritten)


def op_name(expr: Any) -> str | None:
    """``"relax.nn.conv2d"`` for a call of that op, None for anything else."""
    from tvm import ir

    if type(expr).__name__ == "Call" and isinstance(expr.op, ir.Op):
        return expr.op.name
    return None


def shape_of(expr: Any) -> tuple[int, ...] | None:
    """The static shape of a tensor-typed expression, None when unknown or not a tensor."""
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(v) for v in shape.values)
    except (TypeError, AttributeError):
        return None


def const_of(expr: Any) -> np.ndarray | None:
    """The value of a constant tensor, None for anything else."""
    if type(expr).__name__ == "GenericConst":
        try:
            return expr.value.numpy()
        except AttributeError:
            return None
    return None


@dataclass
class Binding:
    var: Any
    value: Any


class Graph:
    """Bindings of ``func``'s single dataflow block, with producer and user maps."""

    def __init__(self, func: Any):
        from tvm import relax

        body = func.body
        blocks = list(body.blocks)
        self.func = func
        self.supported = len(blocks) == 1 and isinstance(blocks[0], relax.DataflowBlock)
        self.bindings = [Binding(b.var, b.value) for blk in blocks for b in blk.bindings]
        self.producer: dict[Any, int] = {b.var: i for i, b in enumerate(self.bindings)}
        self.users: dict[Any, list[int]] = {}
        for i, b in enumerate(self.bindings):
            for v in _vars_in(b.value):
                self.users.setdefault(v, []).append(i)
        for v in _vars_in(body.body):
            self.users.setdefault(v, []).append(len(self.bindings))  # the function output

    def value(self, var: Any) -> Any:
        i = self.producer.get(var)
        return None if i is None else self.bindings[i].value

    def single_use(self, var: Any) -> bool:
        return len(self.users.get(var, [])) == 1


def _vars_in(expr: Any) -> list[Any]:
    kind = type(expr).__name__
    if kind in ("Var", "DataflowVar"):
        return [expr]
    if kind == "Call":
        return [v for a in expr.args for v in _vars_in(a)]
    if kind == "Tuple":
        return [v for f in expr.fields for v in _vars_in(f)]
    if kind == "TupleGetItem":
        return _vars_in(expr.tuple_value)
    return []


def substitute(expr: Any, mapping: dict[Any, Any]) -> Any:
    """``expr`` with variables replaced per ``mapping``."""
    from tvm import relax

    kind = type(expr).__name__
    if kind in ("Var", "DataflowVar"):
        return mapping.get(expr, expr)
    if kind == "Call":
        args = [substitute(a, mapping) for a in expr.args]
        if all(a.same_as(b) for a, b in zip(args, expr.args)):
            return expr
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    if kind == "Tuple":
        return relax.Tuple([substitute(f, mapping) for f in expr.fields])
    if kind == "TupleGetItem":
        return relax.TupleGetItem(substitute(expr.tuple_value, mapping), expr.index)
    return expr


def rebuild(mod: Any, rewrite: Callable[[Graph, int, Any, Callable[[Any], Any]], Any], name: str = "main",
            inputs: Callable[[Any, list[Any]], dict[Any, Any]] | None = None) -> Any:
    """A new module whose ``name`` function has each binding passed through ``rewrite``.

    ``rewrite(graph, index, bb, new)`` returns KEEP, DROP or a new value (emitted under the binding's name);
    ``new(expr)`` maps an old expression to the rebuilt one. PrimFuncs added through ``bb.add_func`` land in
    the module. ``inputs(bb, params)``, emitted first, maps parameters to what the bindings read instead.
    """
    from tvm import relax

    func = mod[name]
    graph = Graph(func)
    if not graph.supported:
        return mod
    from tvm import IRModule

    # Start from the module without ``name`` so the rebuilt function keeps the name and the GlobalVars of
    # every other function (PrimFuncs that earlier passes added) stay the same objects.
    bb = relax.BlockBuilder(IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != name}))
    mapping: dict[Any, Any] = {}

    def new(expr: Any) -> Any:
        return substitute(expr, mapping)

    params = list(func.params)
    attrs = {k: func.attrs[k] for k in func.attrs.keys()} if func.attrs is not None else None
    with bb.function(name, params, attrs=attrs, pure=True):
        with bb.dataflow():
            if inputs is not None:
                mapping.update(inputs(bb, params))
            for i, b in enumerate(graph.bindings):
                out = rewrite(graph, i, bb, new)
                if out is DROP:
                    continue
                value = new(b.value) if out is KEEP else out
                is_output = type(b.var).__name__ == "Var"
                nv = bb.emit_output(value, name_hint=b.var.name) if is_output else bb.emit(value, name_hint=b.var.name)
                mapping[b.var] = nv
        bb.emit_func_output(new(func.body.body))
    return bb.get()


def const_through(graph: Graph, expr: Any) -> np.ndarray | None:
    """Like :func:`const_of`, also through a variable bound to a constant."""
    value = const_of(expr)
    if value is None and type(expr).__name__ in ("Var", "DataflowVar"):
        bound = graph.value(expr)
        value = None if bound is None else const_of(bound)
    return value


def prim_of(expr: Any) -> float | None:
    """The number in a ``R.prim_value`` argument, None otherwise."""
    v = getattr(expr, "value", None)
    inner = getattr(v, "value", None)
    if isinstance(inner, (int, float)):
        return float(inner)
    return float(v) if isinstance(v, (int, float)) else None
