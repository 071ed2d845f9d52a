"""Pass: instantiate the schedule templates of ``schedules/`` for a target.

Every fused conv kernel (from :mod:`fuse_conv`/:mod:`shuffle`), every max/avg/global-average pool and the
classifier's ``matmul [+ bias]`` become calls of scheduled PrimFuncs, their knobs decided by a
:class:`~tvm_shufflenet.schedules.knobs.Decider` (family defaults unless a tuning record says otherwise).
Pointwise kernels work on ``(N, C, H*W)`` views made by ``R.reshape``, which the VM lowers to a zero-copy
view, not to a kernel.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..schedules import conv2d, dense, pool
from ..schedules.knobs import Decider, DefaultDecider, family_of
from .fuse_conv import conv_call
from .graph import DROP, KEEP, Graph, const_of, const_through, op_name, rebuild, shape_of

__all__ = ["apply_templates", "ApplyTemplates", "KERNEL_ATTR"]

KERNEL_ATTR = "tvm_shufflenet.kernel"  # "<template>:<spec json>" on every scheduled PrimFunc
DeciderFactory = Callable[[str, str], Decider]  # (template, spec json) -> decider


def _register(bb: Any, func: Any, name: str, template: str, spec_json: str, knobs: dict[str, Any]) -> Any:
    import json

    func = func.without_attr("global_symbol")
    func = func.with_attr(KERNEL_ATTR, f"{template}:{spec_json}").with_attr("tvm_shufflenet.knobs", json.dumps(knobs))
    func = func.with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)
    return bb.add_func(func, name)


def _kernel(name: str, spec: Any, target: Any, decide: DeciderFactory) -> tuple[Any, int | None, dict[str, Any]]:
    """``(scheduled PrimFunc, padded rows, decisions)`` of a template kernel: a stored trace (tuned in
    MetaSchedule's generic space) when the records have one, else the template with the records' knobs."""
    spec_json = spec.to_json()
    trace = decide.trace_for(name, spec_json) if hasattr(decide, "trace_for") else None
    module = {"conv2d": conv2d, "dense": dense, "pool": pool}[name]
    if trace is not None:
        from .tuning import apply_trace_json

        made = module.workload(spec, target)
        func, rows = made if isinstance(made, tuple) else (made, None)
        try:
            return apply_trace_json(func, trace), rows, {"trace": True}
        except Exception:  # noqa: BLE001 - a trace from another TVM version: the template instead
            pass
    decider = decide(name, spec_json)
    made = module.kernel(spec, target, decider)
    if getattr(decider, "stale", False):  # a record of an older template: the defaults, not half of it
        made = module.kernel(spec, target, DefaultDecider())
    return (made[0], None, made[1]) if len(made) == 2 else made


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    out = np.zeros((rows, *a.shape[1:]), a.dtype)
    out[: a.shape[0]] = a
    return out


def _is_gemv(spec: Any) -> bool:
    """A 1x1 conv on a 1x1 map (squeeze-and-excitation): a matrix-vector product, not a convolution."""
    return (spec.h == spec.w == spec.kh == spec.kw == 1 and spec.groups == 1 and spec.placement is None
            and not spec.residual and spec.post_act is None and (spec.in_map is None or spec.in_map.is_identity)
            and spec.cin_src == spec.cin)


def _lower_gemv(bb: Any, target: Any, decide: DeciderFactory, spec: Any, args: list[Any]) -> Any:
    """SE convs through the classifier's template: weights laid out ``(Cin, Cout)``, unit-stride vector loads.

    The direct-conv template reads a 1x1 conv's weights with a stride of Cin per output channel, which is
    fine while they sit in cache and slow when they stream from memory, as they do inside the network.
    """
    from tvm import relax

    dspec = dense.DenseSpec(spec.n, spec.cin, spec.cout, spec.bias, spec.act)
    func, mp, knobs = _kernel("dense", dspec, target, decide)
    w = const_of(args[1]).reshape(spec.cout, spec.cin)
    new_args = [bb.emit(relax.op.reshape(args[0], (spec.n, spec.cin))),
                relax.const(np.ascontiguousarray(_pad_rows(w, mp).T))]
    if spec.bias:
        new_args.append(relax.const(_pad_rows(const_of(args[2]), mp)))
    gv = _register(bb, func, f"se_dense_{spec.cin}x{spec.cout}", "dense", dspec.to_json(), knobs)
    out = bb.emit(relax.call_tir(gv, new_args, relax.TensorType((spec.n, spec.cout), spec.dtype)))
    return relax.op.reshape(out, (spec.n, spec.cout, 1, 1))


def _lower_conv(bb: Any, target: Any, decide: DeciderFactory, spec: Any, args: list[Any]) -> Any:
    from tvm import relax

    if _is_gemv(spec):
        return _lower_gemv(bb, target, decide, spec, args)
    func, cpad, knobs = _kernel("conv2d", spec, target, decide)
    w = const_of(args[1])
    bias = const_of(args[2]) if spec.bias else None
    if spec.kind == "pointwise":  # the template reads (Cout/B, Cin/groups, B) blocks
        w = conv2d.pack_pointwise_weight(w, cpad, conv2d.weight_block(family_of(target)))
    else:
        w = _pad_rows(w, cpad)
    new_args = [args[0], relax.const(w)]
    if bias is not None:
        new_args.append(relax.const(_pad_rows(bias, cpad)))
    new_args += args[3:]
    gv = _register(bb, func, f"{spec.kind}_conv_{spec.cin}x{spec.cout}_{spec.oh}", "conv2d", spec.to_json(), knobs)
    if spec.kind == "pointwise":
        hw = spec.h * spec.w
        flat = [bb.emit(relax.op.reshape(a, (spec.n, shape_of(a)[1], hw))) if (i == 0 or i >= 3) else a
                for i, a in enumerate(new_args)]
        out = bb.emit(relax.call_tir(gv, flat, relax.TensorType((spec.n, spec.out_channels, hw), spec.dtype)))
        return relax.op.reshape(out, (spec.n, spec.out_channels, spec.h, spec.w))
    return relax.call_tir(gv, new_args, relax.TensorType((spec.n, spec.out_channels, spec.oh, spec.ow), spec.dtype))


def _pool_spec(call: Any, out_shape: tuple[int, ...]) -> Any:
    name = op_name(call)
    xs = shape_of(call.args[0])
    if xs is None or len(xs) != 4 or str(call.args[0].ty.dtype) != "float32":
        return None
    at = call.attrs
    if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        if at.layout != "NCHW" or bool(at.ceil_mode) or [int(d) for d in at.dilation] != [1, 1]:
            return None
        ks, st = [int(v) for v in at.pool_size], [int(v) for v in at.strides]
        if ks[0] != ks[1] or st[0] != st[1]:
            return None
        spec = pool.PoolSpec("max" if "max" in name else "avg", *xs, ks[0], ks[1], st[0],
                             tuple(int(v) for v in at.padding), bool(at.count_include_pad))
        return spec if spec.out_shape == out_shape else None
    if name == "relax.nn.adaptive_avg_pool2d" and [int(v) for v in at.output_size] == [1, 1] and at.layout == "NCHW":
        return pool.PoolSpec("global_avg", *xs, keepdims=True)
    if name == "relax.mean" and sorted(int(a) for a in at.axis) == [2, 3]:
        spec = pool.PoolSpec("global_avg", *xs, keepdims=bool(at.keepdims))
        return spec if spec.out_shape == out_shape else None
    return None


def _dense_match(graph: Graph, i: int) -> dict[str, Any] | None:
    b = graph.bindings[i]
    if op_name(b.value) != "relax.matmul":
        return None
    x, w = b.value.args
    xs, wv = shape_of(x), const_through(graph, w)
    if xs is None or len(xs) != 2 or wv is None or wv.ndim != 2 or wv.dtype != np.float32:
        return None
    used, last, bias = [i], i, None
    users = graph.users.get(b.var, [])
    if len(users) == 1 and users[0] < len(graph.bindings):
        add = graph.bindings[users[0]].value
        if op_name(add) == "relax.add":
            c = const_through(graph, add.args[1])
            if c is not None and c.size == wv.shape[1]:
                bias, used, last = c.reshape(-1), used + [users[0]], users[0]
    return {"x": x, "w": wv, "bias": bias, "used": used, "last": last,
            "spec": dense.DenseSpec(xs[0], xs[1], wv.shape[1], bias is not None)}


def apply_templates(mod: Any, target: Any, decide: DeciderFactory | None = None) -> Any:
    """Return ``mod`` with conv, pool and classifier ops as scheduled template kernels for ``target``."""
    from tvm import relax

    decide = decide or (lambda template, spec: DefaultDecider())
    graph = Graph(mod["main"])
    if not graph.supported:
        return mod
    dense_plans: dict[int, dict[str, Any]] = {}
    dense_used: set[int] = set()
    for i in range(len(graph.bindings)):
        m = _dense_match(graph, i)
        if m is not None:
            dense_plans[m["last"]] = m
            dense_used.update(m["used"])

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        b = g.bindings[i]
        spec = conv_call(mod, b.value)
        if spec is not None:
            return _lower_conv(bb, target, decide, spec, [new(a) for a in b.value.args[1].fields])
        if i in dense_plans:
            m = dense_plans[i]
            func, mp, knobs = _kernel("dense", m["spec"], target, decide)
            args = [new(m["x"]), relax.const(np.ascontiguousarray(_pad_rows(m["w"].T, mp).T))]
            if m["bias"] is not None:
                args.append(relax.const(_pad_rows(m["bias"].astype("float32"), mp)))
            gv = _register(bb, func, f"dense_{m['spec'].k}x{m['spec'].m}", "dense", m["spec"].to_json(), knobs)
            return relax.call_tir(gv, args, relax.TensorType((m["spec"].n, m["spec"].m), "float32"))
        if i in dense_used:
            return DROP
        out_shape = shape_of(b.var)
        pspec = _pool_spec(b.value, out_shape) if out_shape is not None and op_name(b.value) else None
        if pspec is not None:
            func, _, knobs = _kernel("pool", pspec, target, decide)
            gv = _register(bb, func, f"{pspec.kind}_pool_{pspec.c}_{pspec.oh}", "pool", pspec.to_json(), knobs)
            return relax.call_tir(gv, [new(b.value.args[0])], relax.TensorType(pspec.out_shape, "float32"))
        return KEEP

    out = rebuild(mod, rewrite)
    return relax.transform.DeadCodeElimination()(out)


def ApplyTemplates(target: Any, decide: DeciderFactory | None = None):  # noqa: N802
    """``apply_templates`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: apply_templates(mod, target, decide), opt_level=0,
                                     name="ApplyTemplates")
