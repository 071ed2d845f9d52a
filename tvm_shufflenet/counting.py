"""Multiply-adds and parameters counted from a Relax graph, the way the papers count them.

MACs ("FLOPs" in the ShuffleNet and MobileNet papers) are those of convolutions and fully connected layers;
parameters are every weight tensor the graph reads, except BatchNorm's running statistics (buffers, not
learned). Memory access cost ("MAC" in the ShuffleNet V2 paper, section 2) is the number of tensor elements
every operator reads and writes, weights included: ``hw(c1 + c2) + c1c2`` for a 1x1 convolution without bias,
as in the paper's G1. BatchNorm is left out (at inference it is folded into the convolution before it) and so
are reshapes (views); the channel shuffle's transpose, split and concat are counted, as a framework that runs
them as operators pays for them. Works on any ``IRModule`` with static shapes: zoo exports and ONNX imports
alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import tvm
from tvm import relax

__all__ = ["Complexity", "count"]

_NOT_MEMORY_OPS = {"relax.nn.batch_norm", "relax.reshape"}  # folded into the conv / a view


@dataclass(frozen=True)
class Complexity:
    """Per-image multiply-adds and parameter count of one graph."""

    macs: int
    params: int
    memory_access: int = 0  # elements read + written per image (the ShuffleNet V2 paper's MAC)

    @property
    def mflops(self) -> float:
        """Millions of multiply-adds per image (the papers' MFLOPs)."""
        return self.macs / 1e6

    @property
    def mac_m(self) -> float:
        """Memory access cost in millions of elements per image (the ShuffleNet V2 paper's MAC)."""
        return self.memory_access / 1e6

    @property
    def params_m(self) -> float:
        """Millions of parameters."""
        return self.params / 1e6


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise ValueError(f"counting needs static tensor shapes, got {ty}")
    return tuple(int(d) for d in ty.shape.values)


def count(mod: tvm.IRModule, func_name: str = "main") -> Complexity:
    """Count the multiply-adds (per image) and parameters of ``mod[func_name]``.

    Parameters are the function's non-input arguments (``num_input`` attribute) and any bound constants, each
    counted once, with BatchNorm running mean and variance left out.
    """
    func = mod[func_name]
    num_input = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else len(func.params)
    weights: dict[relax.Expr, int] = {p: prod(_shape(p)) for p in func.params[num_input:]}
    batch = _shape(func.params[0])[0] if func.params else 1
    buffers: set[relax.Expr] = set()
    macs = 0
    access = 0

    def elements(expr: relax.Expr) -> int:
        ty = expr.ty
        if isinstance(ty, relax.TensorType) and ty.shape is not None and ty.ndim > 0:
            return prod(int(d) for d in ty.shape.values)
        if isinstance(ty, relax.TupleType):
            return sum(prod(int(d) for d in f.shape.values) for f in ty.fields if isinstance(f, relax.TensorType) and f.shape is not None)
        return 0

    def visit(expr: relax.Expr) -> None:
        nonlocal macs, access
        if isinstance(expr, tvm.ir.expr.GenericConst) and isinstance(expr.ty, relax.TensorType):
            size = prod(_shape(expr))
            if expr.ty.ndim > 0:  # scalars are literals (the 3 and 6 of hard-swish), not weights
                weights.setdefault(expr, size)
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return
        name = expr.op.name
        if name not in _NOT_MEMORY_OPS:
            access += sum(elements(a) for a in expr.args) + elements(expr)
        if name == "relax.nn.conv2d":
            out = _shape(expr)
            weight = _shape(expr.args[1])  # OIHW: I is already per group
            macs += prod(out) * prod(weight[1:])
        elif name == "relax.matmul":
            out = _shape(expr)
            macs += prod(out) * _shape(expr.args[0])[-1]
        elif name == "relax.nn.batch_norm":
            buffers.update(expr.args[3:5])

    relax.analysis.post_order_visit(func.body, visit)
    params = sum(size for var, size in weights.items() if var not in buffers)
    # per image: at batch > 1 the weights' share is spread over the batch, as they are read once per call
    return Complexity(macs=macs // batch, params=params, memory_access=access // batch)
