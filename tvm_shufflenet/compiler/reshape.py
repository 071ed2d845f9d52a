"""Pass: ``reshape(reshape(x))`` -> one reshape of ``x``, and a reshape to ``x``'s own shape -> ``x``.

The template lowering wraps every pointwise kernel in views (``(N, C, H, W) -> (N, C, H*W)`` and back). Two
pointwise convolutions in a row (nothing between them, as in the ShuffleNet V2 paper's G1-G3 blocks) left the
pair ``(N, C, H*W) -> (N, C, H, W) -> (N, C, H*W)``, which operator fusion turned into a copy kernel instead of
the view each reshape alone becomes: one full pass over the activations per convolution.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CollapseReshapes"]


def _shape(expr: Any) -> tuple[int, ...] | None:
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    try:
        return tuple(int(d) for d in shape.values)
    except TypeError:  # symbolic
        return None


def _collapse(func: Any) -> Any:
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x = wildcard()
    pattern = is_op("relax.reshape")(is_op("relax.reshape")(x, wildcard()), wildcard())

    def rewrite(expr: Any, matches: dict) -> Any:
        src, want = matches[x], _shape(expr)
        if want is None or _shape(src) is None:
            return expr
        return src if _shape(src) == want else relax.op.reshape(src, want)

    func = rewrite_call(pattern, rewrite, func)
    ident = is_op("relax.reshape")(x, wildcard())

    def drop_identity(expr: Any, matches: dict) -> Any:
        src = matches[x]
        return src if _shape(src) is not None and _shape(src) == _shape(expr) else expr

    return rewrite_call(ident, drop_identity, func)


def CollapseReshapes() -> Any:  # noqa: N802 - named like TVM's pass constructors
    """The module pass (Relax functions only; kernels are left alone)."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="TVMShuffleNetCollapseReshapes")
    def _pass(mod: Any, _ctx: Any) -> Any:
        updates = {gv: _collapse(f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
        for gv, f in updates.items():
            mod[gv] = f
        return relax.transform.DeadCodeElimination()(mod)

    return _pass
