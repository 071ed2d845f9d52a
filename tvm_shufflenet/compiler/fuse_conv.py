"""Pass: fuse ``conv2d [+ bias] [-> ReLU | ReLU6 | hard-swish] [+ residual [-> ReLU]] [-> max pool]`` into one
kernel (a max pool only after a dense, ungrouped conv: the stem of a ShuffleNet).

Each matched chain becomes one ``R.call_tir`` of a kernel generated from a :class:`ConvSpec` (the spec is kept
on the PrimFunc as ``tvm_shufflenet.conv`` so later passes can rewrite it: the channel-shuffle fold changes
its input map and output placement, the scheduler instantiates the template for a target). The kernel is
created unscheduled here, so the module after this pass still compiles and runs anywhere (slowly).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import DROP, KEEP, Graph, const_of, const_through, op_name, prim_of, rebuild, shape_of

__all__ = ["fuse_conv", "FuseConv", "SPEC_ATTR", "conv_call", "add_conv_call"]

SPEC_ATTR = "tvm_shufflenet.conv"


def _is_scalar(graph: Graph, expr: Any, value: float) -> bool:
    c = const_through(graph, expr)
    return c is not None and c.size == 1 and abs(float(c.reshape(-1)[0]) - value) < 1e-6


def _relu6(graph: Graph, call: Any) -> bool:
    name = op_name(call)
    if name == "relax.nn.relu6":
        return True
    return name == "relax.clip" and prim_of(call.args[1]) == 0.0 and prim_of(call.args[2]) == 6.0


def _only_user(graph: Graph, var: Any) -> int | None:
    users = graph.users.get(var, [])
    if len(users) == 1 and users[0] < len(graph.bindings):
        return users[0]
    return None


def _hswish(graph: Graph, var: Any) -> tuple[list[int], int] | None:
    """``var * relu6(var + 3) / 6`` (and ``var * (relu6(var + 3) / 6)``): the bindings used and the last."""
    users = graph.users.get(var, [])
    if len(users) != 2 or max(users) >= len(graph.bindings):
        return None
    a, m = sorted(users)
    add = graph.bindings[a].value
    if op_name(add) != "relax.add" or not _is_scalar(graph, add.args[1], 3.0):
        return None
    r = _only_user(graph, graph.bindings[a].var)
    if r is None or not _relu6(graph, graph.bindings[r].value):
        return None
    d = _only_user(graph, graph.bindings[r].var)
    if d is None or op_name(graph.bindings[d].value) != "relax.divide" or not _is_scalar(graph, graph.bindings[d].value.args[1], 6.0):
        return None
    mul = graph.bindings[m].value
    if m != _only_user(graph, graph.bindings[d].var) or op_name(mul) != "relax.multiply":
        return None
    return [a, r, d, m], m


def _activation(graph: Graph, var: Any) -> tuple[str, list[int], int] | None:
    hs = _hswish(graph, var)
    if hs is not None:
        return "hswish", hs[0], hs[1]
    u = _only_user(graph, var)
    if u is None:
        return None
    call = graph.bindings[u].value
    if op_name(call) == "relax.nn.relu":
        return "relu", [u], u
    if _relu6(graph, call):
        return "relu6", [u], u
    return None


def match_chain(graph: Graph, i: int) -> dict[str, Any] | None:
    """The fusable chain starting at conv binding ``i``, or None."""
    from ..schedules.conv2d import ConvSpec

    b = graph.bindings[i]
    call = b.value
    if op_name(call) != "relax.nn.conv2d":
        return None
    at = call.attrs
    if at.data_layout != "NCHW" or at.kernel_layout != "OIHW" or (at.out_layout not in ("", "NCHW")):
        return None
    w = const_of(call.args[1])
    xs, ys = shape_of(call.args[0]), shape_of(b.var)
    strides, dil = [int(v) for v in at.strides], [int(v) for v in at.dilation]
    if w is None or xs is None or ys is None or len(xs) != 4 or dil != [1, 1] or strides[0] != strides[1]:
        return None
    if str(w.dtype) != "float32":
        return None
    pad = tuple(int(v) for v in at.padding)
    cout, cin_g, kh, kw = w.shape
    groups = int(at.groups)
    spec = ConvSpec(xs[0], xs[1], xs[1], xs[2], xs[3], cout, kh, kw, strides[0], pad, groups, bias=False)
    if (spec.oh, spec.ow) != ys[2:]:
        return None
    used, last, cur = [i], i, b.var
    bias = np.zeros(cout, "float32")
    u = _only_user(graph, cur)
    if u is not None and op_name(graph.bindings[u].value) == "relax.add":
        other = graph.bindings[u].value.args[1]
        c = const_through(graph, other)
        if c is not None and c.size == cout and (c.ndim == 1 or c.shape[-2:] == (1, 1) or c.ndim <= 4):
            bias, used, last, cur = c.reshape(-1).astype("float32"), used + [u], u, graph.bindings[u].var
    act = _activation(graph, cur)
    name = None
    if act is not None:
        name, idx, last = act
        used, cur = used + idx, graph.bindings[last].var
    residual, post = None, None
    u = _only_user(graph, cur)
    if u is not None and op_name(graph.bindings[u].value) == "relax.add":
        add = graph.bindings[u].value
        other = add.args[1] if add.args[0].same_as(cur) else add.args[0]
        if const_of(other) is None and shape_of(other) == ys:
            residual, used, last, cur = other, used + [u], u, graph.bindings[u].var
            u2 = _only_user(graph, cur)
            if u2 is not None and op_name(graph.bindings[u2].value) == "relax.nn.relu":
                post, used, last, cur = "relu", used + [u2], u2, graph.bindings[u2].var
    spec = spec.with_(bias=True, act=name, residual=residual is not None, post_act=post)
    pooled = _max_pool_after(graph, cur, spec)
    if pooled is not None:
        u, pool_spec = pooled
        spec, used, last = pool_spec, used + [u], u
    return {"spec": spec, "used": used, "last": last, "data": call.args[0], "weight": w, "bias": bias,
            "residual": residual}


def _max_pool_after(graph: Graph, var: Any, spec: Any) -> tuple[int, Any] | None:
    """``(binding, spec with the pool)`` when ``var``'s only user is a max pool the first conv can run in its own
    kernel (ShuffleNet's 3x3 s2 after the stem), else None: a dense, ungrouped conv without a residual; a pool the
    pool template covers (:func:`~.lower.pool_spec`) whose padding is smaller than its window."""
    from .lower import pool_spec  # the later pass reads this one's kernels: imported here, not at the top

    u = _only_user(graph, var)
    if u is None or spec.kind != "dense" or spec.groups != 1 or spec.residual:
        return None
    call, out_shape = graph.bindings[u].value, shape_of(graph.bindings[u].var)
    pspec = pool_spec(call, out_shape) if out_shape is not None and op_name(call) == "relax.nn.max_pool2d" else None
    if pspec is None or pspec.kind != "max" or max(pspec.pad) >= pspec.kh:
        return None
    return u, spec.with_(pool=pspec.kh, pool_stride=pspec.stride, pool_pad=pspec.pad)


def add_conv_call(bb: Any, spec: Any, args: list[Any]) -> Any:
    """``R.call_tir`` of the unscheduled kernel of ``spec`` (4-D interface) on ``args``."""
    from tvm import relax, te

    from ..schedules.conv2d import compute

    inputs, out = compute(spec, None, flat=False)
    func = te.create_prim_func([*inputs, out]).without_attr("global_symbol")
    func = func.with_attr(SPEC_ATTR, spec.to_json()).with_attr("op_pattern", 8)
    gv = bb.add_func(func, f"conv_{spec.kind}_{spec.cin}_{spec.cout}_{spec.kh}x{spec.kw}s{spec.stride}")
    out_ty = relax.TensorType((spec.n, spec.out_channels, spec.out_h, spec.out_w), spec.dtype)
    return relax.call_tir(gv, args, out_ty)


def conv_call(mod: Any, call: Any):
    """The :class:`ConvSpec` of a call to one of our kernels, or None."""
    if op_name(call) != "relax.call_tir":
        return None
    gv = call.args[0]
    func = mod[gv] if gv in mod.functions else None
    if func is None or func.attrs is None or SPEC_ATTR not in func.attrs.keys():
        return None
    from ..schedules.conv2d import ConvSpec

    return ConvSpec.from_json(str(func.attrs[SPEC_ATTR]))



def fuse_conv(mod: Any) -> Any:
    """Return ``mod`` with every matching conv chain replaced by one fused kernel call."""
    from tvm import relax

    graph = Graph(mod["main"])
    if not graph.supported:
        return mod
    chains: dict[int, dict[str, Any]] = {}
    taken: set[int] = set()
    for i in range(len(graph.bindings)):
        m = match_chain(graph, i)
        if m is None or taken.intersection(m["used"]):
            continue
        taken.update(m["used"])
        chains[m["last"]] = m

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        if i in chains:
            m = chains[i]
            args = [new(m["data"]), relax.const(m["weight"]), relax.const(m["bias"])]
            if m["residual"] is not None:
                args.append(new(m["residual"]))
            return add_conv_call(bb, m["spec"], args)
        return DROP if i in taken else KEEP

    return rebuild(mod, rewrite)


def FuseConv():  # noqa: N802
    """``fuse_conv`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: fuse_conv(mod), opt_level=0, name="FuseConv")
