"""Pass: instantiate the schedule templates of ``schedules/`` for a target.

Every fused conv kernel (from :mod:`fuse_conv`/:mod:`shuffle`), every max/avg/global-average pool and the
classifier's ``matmul [+ bias]`` become calls of scheduled PrimFuncs, their knobs decided by a
:class:`~tvm_shufflenet.schedules.knobs.Decider` (family defaults unless a tuning record says otherwise).
Pointwise kernels work on ``(N, C, H*W)`` views made by ``R.reshape``, which the VM lowers to a zero-copy
view, not to a kernel.
"""

from __future__ import annotations

from dataclasses import replace

import contextlib
import contextvars
from typing import Any, Callable

import numpy as np

from ..schedules import conv2d, dense, pool
from ..schedules.knobs import Decider, DefaultDecider, family_of, pad_rows
from .fuse_conv import conv_call
from .graph import DROP, KEEP, Graph, const_of, const_through, op_name, rebuild, shape_of

__all__ = ["apply_templates", "ApplyTemplates", "KERNEL_ATTR", "channel_blocking"]

_BLOCKING = contextvars.ContextVar("tvm_shufflenet_channel_blocking", default=True)


@contextlib.contextmanager
def channel_blocking(enabled: bool):
    """Within the block, lowering runs channel-blocked (NCHW{B}c) regions or not (``False``: every conv NCHW;
    the guideline experiments compare structures under one kernel family, whatever their channel counts)."""
    token = _BLOCKING.set(enabled)
    try:
        yield
    finally:
        _BLOCKING.reset(token)


KERNEL_ATTR = "tvm_shufflenet.kernel"  # "<template>:<spec json>" on every scheduled PrimFunc
DeciderFactory = Callable[[str, str], Decider]  # (template, spec json) -> decider


def _add_scheduled(bb: Any, func: Any, name: str, attrs: dict[str, Any]) -> Any:
    """``func`` (already scheduled) added to the module under ``name`` with ``attrs``: no fallback schedule,
    no fusion with its neighbours."""
    func = func.without_attr("global_symbol")
    for key, value in {**attrs, "tirx.is_scheduled": True, "op_pattern": 8}.items():
        func = func.with_attr(key, value)
    return bb.add_func(func, name)


def _register(bb: Any, func: Any, name: str, template: str, spec_json: str, knobs: dict[str, Any]) -> Any:
    import json

    return _add_scheduled(bb, func, name, {KERNEL_ATTR: f"{template}:{spec_json}",
                                           "tvm_shufflenet.knobs": json.dumps(knobs)})


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


def _is_gemv(spec: Any) -> bool:
    """A 1x1 conv on a 1x1 map (squeeze-and-excitation): a matrix-vector product, not a convolution."""
    return (spec.h == spec.w == spec.kh == spec.kw == 1 and spec.groups == 1 and spec.placement is None
            and not spec.residual and spec.post_act is None and (spec.in_map is None or spec.in_map.is_identity)
            and spec.cin_src == spec.cin)


def _lower_gemv(bb: Any, target: Any, decide: DeciderFactory, spec: Any, args: list[Any]) -> Any:
    """SE convs through the classifier's template: its packed weights, one contiguous stream per output vector.

    The direct-conv template reads a 1x1 conv's weights with a stride of Cin per output channel, which is
    fine while they sit in cache and slow when they stream from memory, as they do inside the network.
    """
    from tvm import relax

    dspec = dense.DenseSpec(spec.n, spec.cin, spec.cout, spec.bias, spec.act, spec.dtype, spec.acc)
    func, mp, knobs = _kernel("dense", dspec, target, decide)
    w = const_of(args[1]).reshape(spec.cout, spec.cin)
    new_args = [bb.emit(relax.op.reshape(args[0], (spec.n, spec.cin))), relax.const(dense.pack_weight(w.T, dspec, target))]
    if spec.bias:
        new_args.append(relax.const(pad_rows(const_of(args[2]), mp)))
    gv = _register(bb, func, f"se_dense_{spec.cin}x{spec.cout}", "dense", dspec.to_json(), knobs)
    out = bb.emit(relax.call_tir(gv, new_args, relax.TensorType((spec.n, spec.cout), spec.dtype)))
    return relax.op.reshape(out, (spec.n, spec.cout, 1, 1))


LAYOUT_ATTR = "tvm_shufflenet.layout"  # "block:B" (NCHW -> NCHW{B}c), "unblock:B", "reblock:B1:B2" on layout kernels
_UNBLOCK_PREFIX = "from_nchw"  # names of unblocking kernels (a global pool reads their source instead)


def _layout_kernel(bb: Any, x: Any, block: int, to_blocked: bool) -> Any:
    """``x`` NCHW -> NCHW{B}c (or back) as one scheduled kernel: threads over (channel block, row), the
    block's channels innermost (a vector). Only the edges of a blocked region keep one: a blocked kernel reads
    its producer's blocked output (:func:`_blocked_source`), and the unused unblocking goes as dead code."""
    from tvm import relax, te
    from tvm.s_tir import Schedule

    shape, dt = shape_of(x), str(x.ty.dtype)
    src = te.placeholder(shape, dt, name="x")
    if to_blocked:
        n, c, h, w = shape
        out = te.compute((n, c // block, h, w, block), lambda a, cb, i, j, b: src[a, cb * block + b, i, j], name="out")
        out_shape = (n, c // block, h, w, block)
    else:
        n, cb_, h, w, _ = shape
        out = te.compute((n, cb_ * block, h, w), lambda a, c, i, j: src[a, c // block, i, j, c % block], name="out")
        out_shape = (n, cb_ * block, h, w)
    sch = Schedule(te.create_prim_func([src, out]))
    blk = sch.get_sblock("out")
    loops = sch.get_loops(blk)
    if to_blocked:
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])
    else:
        a, c, i, j = loops
        co, ci = sch.split(c, [None, block])
        sch.reorder(a, co, i, j, ci)
        sch.parallel(sch.fuse(a, co, i))
    tag = f"{'block' if to_blocked else 'unblock'}:{block}"
    name = f"to_nchw{block}c_{shape[1]}_{h}" if to_blocked else f"{_UNBLOCK_PREFIX}{block}c_{out_shape[1]}_{h}"
    gv = _add_scheduled(bb, sch.mod["main"], name, {LAYOUT_ATTR: tag})
    return bb.emit(relax.call_tir(gv, [x], relax.TensorType(out_shape, dt)))


def _reblock_kernel(bb: Any, x: Any, block: int, made: dict[tuple[Any, int], Any]) -> Any:
    """NCHW{B1}c ``x`` as NCHW{B}c (``block`` = B): one scheduled kernel per tensor and block (``made`` keeps
    them), threads over (channel block, row), a vector of ``B`` channels assembled from whole source vectors.
    Only where a region changes its block size (:func:`_region_blocks`)."""
    from tvm import relax, te
    from tvm.s_tir import Schedule

    n, cb, h, w, b1 = shape_of(x)
    if b1 == block:
        return x
    if (x, block) in made:
        return made[(x, block)]
    c, dt = cb * b1, str(x.ty.dtype)
    src = te.placeholder((n, cb, h, w, b1), dt, name="x")
    out = te.compute((n, c // block, h, w, block),
                     lambda a, o, i, j, b: src[a, (o * block + b) // b1, i, j, (o * block + b) % b1], name="out")
    sch = Schedule(te.create_prim_func([src, out]))
    a, o, i, j, b = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(sch.fuse(a, o, i))
    if block > b1:  # whole source vectors: (block / b1) loads of b1 lanes
        _, lanes = sch.split(b, [None, b1])
        sch.vectorize(lanes)
    else:
        sch.vectorize(b)
    gv = _add_scheduled(bb, sch.mod["main"], f"nchw{b1}c_to_nchw{block}c_{c}_{h}", {LAYOUT_ATTR: f"reblock:{b1}:{block}"})
    made[(x, block)] = bb.emit(relax.call_tir(gv, [x], relax.TensorType((n, c // block, h, w, block), dt)))
    return made[(x, block)]


def _lower_blocked(bb: Any, target: Any, decide: DeciderFactory, spec: Any, args: list[Any], block: int,
                   reblocked: dict[tuple[Any, int], Any]) -> Any:
    """A conv as an NCHW{B}c kernel: it reads its blocked producer's output (re-blocked if the producer's block
    differs), else a layout kernel's, and its output is unblocked by a layout kernel that stays only where a
    consumer is not blocked (dead code elimination removes the rest)."""
    from tvm import relax

    pw = spec.kind == "pointwise"
    gate = _gated(_bound(bb, args[0])) if pw else None
    if gate is not None:  # the SE multiply becomes a scale on the conv's input reads (and dead code)
        args = [gate[0], *args[1:]]
    spec = spec.with_(block=block, in_scale=gate is not None)
    func, _, knobs = _kernel("conv2d", spec, target, decide)
    w = conv2d.pack_weight(spec, const_of(args[1]), spec.cout, family_of(target, spec.acc))
    stem = spec.kind == "dense"  # reads the NCHW image, writes NCHW{B}c
    # inside a blocked region the input was just unblocked by its producer: read the blocked tensor (the
    # unblocking kernel, left without users, goes at dead-code elimination)
    data = [a if stem and k == 0 else _reblock_kernel(bb, src, block, reblocked)
            if (src := _blocked_source(bb, a)) is not None else _layout_kernel(bb, a, block, True)
            for k, a in enumerate([args[0], *args[3:]])]
    if pw:  # the kernel sees (N, C/B, H*W, B) views
        data = [bb.emit(relax.op.reshape(a, (spec.n, shape_of(a)[1], spec.h * spec.w, block))) for a in data]
    new_args = [data[0], relax.const(w)] + ([relax.const(const_of(args[2]))] if spec.bias else []) + data[1:]
    if gate is not None:
        new_args.append(bb.emit(relax.op.reshape(gate[1], (spec.n, spec.cin))))
    gv = _register(bb, func, f"{spec.kind}_conv_{spec.cin}x{spec.cout}_{spec.oh}_nchw{block}c", "conv2d",
                   spec.to_json(), knobs)
    osp = (spec.h * spec.w,) if pw else (spec.oh, spec.ow)
    out = bb.emit(relax.call_tir(gv, new_args, relax.TensorType((spec.n, spec.cout // block, *osp, block), spec.dtype)))
    if pw:
        out = bb.emit(relax.op.reshape(out, (spec.n, spec.cout // block, spec.oh, spec.ow, block)))
    return _layout_kernel(bb, out, block, False)


def _bound(bb: Any, expr: Any) -> Any:
    """The value ``expr`` is bound to in ``bb`` (through aliases), or ``expr``."""
    while type(expr).__name__ in ("Var", "DataflowVar"):
        value = bb.lookup_binding(expr)
        if value is None:
            return expr
        expr = value
    return expr


def _gated(call: Any) -> tuple[Any, Any] | None:
    """``(x, gate)`` when ``call`` is ``x * gate`` with ``gate`` of shape ``(N, C, 1, 1)`` (squeeze-and-
    excitation's channel scale), else None."""
    if op_name(call) != "relax.multiply":
        return None
    a, b = call.args
    sa, sb = shape_of(a), shape_of(b)
    if sa is None or sb is None or len(sa) != 4 or len(sb) != 4:
        return None
    if sb == (*sa[:2], 1, 1):
        return a, b
    if sa == (*sb[:2], 1, 1):
        return b, a
    return None


def _blocked_source(bb: Any, x: Any) -> Any:
    """The NCHW{B}c tensor ``x`` was unblocked from, or None."""
    call = _bound(bb, x)
    if op_name(call) == "relax.call_tir" and call.args[0].name_hint.startswith(_UNBLOCK_PREFIX):
        return call.args[1].fields[0]
    return None


def _blocked_global_pool(bb: Any, xb: Any, out_shape: tuple[int, ...], out_dtype: str = "") -> Any:
    """Global average pool of an NCHW{B}c tensor to NCHW ``out_shape``: threads over channel blocks, the
    block's channels one vector (no layout kernel in front of an SE pool)."""
    from tvm import relax, te
    from tvm.s_tir import Schedule

    n, cb, h, w, bl = shape_of(xb)
    dt = str(xb.ty.dtype)
    src = te.placeholder((n, cb, h, w, bl), dt, name="x")
    rh, rw = te.reduce_axis((0, h), name="rh"), te.reduce_axis((0, w), name="rw")
    acc = te.compute((n, cb, bl), lambda a, c, b: te.sum(conv2d.cast(src[a, c, rh, rw, b], "float32"), axis=[rh, rw]),
                     name="acc")
    odt = out_dtype or dt
    out = te.compute((n, cb * bl), lambda a, c: conv2d.cast(acc[a, c // bl, c % bl] * (1.0 / (h * w)), odt), name="out")
    sch = Schedule(te.create_prim_func([src, out]))
    a, c, b, rh, rw = sch.get_loops(sch.get_sblock("acc"))
    sch.reorder(a, c, rh, rw, b)
    sch.parallel(sch.fuse(a, c))
    sch.vectorize(b)
    gv = _add_scheduled(bb, sch.mod["main"], f"global_avg_pool_{cb * bl}_nchw{bl}c", {})
    pooled = bb.emit(relax.call_tir(gv, [xb], relax.TensorType((n, cb * bl), odt)))
    return relax.op.reshape(pooled, out_shape)


def _blocked_convs(mod: Any, graph: Graph, fam: Any) -> dict[int, int]:
    """The conv bindings that run NCHW{B}c, each with its block size ``B``.

    Candidates are :func:`conv2d.blockable` convs; one reading another's output joins its region. A region
    pays a layout kernel for every tensor that enters it from outside and for every use outside it of a tensor
    it makes (a global pool reads blocked tensors, an SE scale folds into the conv after it), so a region is
    kept only with at least four convs per such edge: a MobileNet is one region with one edge (the stem's
    output); ShuffleNet's few whole-vector convs between shuffles would add kernels for nothing (and the
    shuffle pipeline's claim is no data-movement kernels). A region takes the widest block of
    :func:`conv2d.block_sizes` that divides all its channel counts (on AVX-512: 16, else 8)."""
    sizes = conv2d.block_sizes(fam)
    if not _BLOCKING.get() or not sizes:
        return {}
    specs = {i: spec for i, b in enumerate(graph.bindings)
             if (spec := conv_call(mod, b.value)) is not None and not _is_gemv(spec)
             and conv2d.blockable(spec, fam, sizes[-1])
             and (spec.kind != "dense" or graph.producer.get(b.value.args[1].fields[0]) is None)}  # stems only
    can = set(specs)

    def producer(expr: Any) -> int | None:
        i = graph.producer.get(expr)
        while i is not None and type(graph.bindings[i].value).__name__ in ("Var", "DataflowVar"):
            i = graph.producer.get(graph.bindings[i].value)
        return i

    def se_source(i: int | None) -> int | None:
        """Through ``x * gate`` to the producer of ``x`` (the gate folds into the conv that reads it)."""
        gated = None if i is None else _gated(graph.bindings[i].value)
        return i if gated is None else producer(gated[0])

    parent = {i: i for i in can}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    reads: dict[int, list[int | None]] = {}
    for i in can:
        fields = graph.bindings[i].value.args[1].fields
        # a stem reads the NCHW image: no layout kernel in front of it
        srcs = [] if specs[i].kind == "dense" else [se_source(producer(fields[0]))] + [producer(f) for f in fields[3:]]
        reads[i] = srcs
        if srcs and srcs[0] in can:
            parent[root(i)] = root(srcs[0])
    regions: dict[int, list[int]] = {}
    for i in can:
        regions.setdefault(root(i), []).append(i)
    keep: dict[int, int] = {}
    for members in regions.values():
        inside = set(members)
        entering = {s for i in members for s in reads[i] if s not in inside}
        leaving = 0
        for i in members:
            for u in graph.users.get(graph.bindings[i].var, []):
                if u >= len(graph.bindings):  # the function's output: unblocked
                    leaving += 1
                elif u not in inside:
                    pooled = op_name(graph.bindings[u].value) in ("relax.mean", "relax.nn.adaptive_avg_pool2d")
                    folded = se_source(u) == i and any(reads[j][:1] == [i] for j in members)
                    leaving += not (pooled or folded)
        if len(members) > 1 and len(members) >= 4 * (len(entering) + leaving):
            keep.update(_region_blocks(members, specs, reads, sizes, fam))
    return keep


# multiply-adds that re-blocking one element must buy: the wider block made MobileNet V2's later 1x1 and
# depthwise convs 10-40% faster on 2 Zen 4 cores (16 vs 8 lanes), and a re-blocking kernel moves an element
# in the time of a few dozen multiply-adds
_MACS_PER_REBLOCKED = 256


def _region_blocks(members: list[int], specs: dict[int, Any], reads: dict[int, list[int | None]], sizes: list[int],
                   fam: Any) -> dict[int, int]:
    """Each conv's block in one region: the widest of ``sizes`` that divides every channel count in it; or, when
    only the region's early convs need the narrower block (MobileNet V2's 24-channel stage), the narrower one
    up to a cut and the wider one after it, paying one re-blocking kernel per tensor that crosses the cut. The
    cut maximises the multiply-adds run wide less ``_MACS_PER_REBLOCKED`` per element re-blocked."""
    order = sorted(members)
    widest = {i: next(b for b in sizes if conv2d.blockable(specs[i], fam, b)) for i in order}
    blocks = dict.fromkeys(order, min(widest.values()))
    if len(sizes) < 2 or min(widest.values()) == sizes[0]:
        return blocks
    last_narrow = max(k for k, i in enumerate(order) if widest[i] != sizes[0])
    best: tuple[int, int] | None = None
    for t in range(last_narrow + 1, len(order)):
        after = set(order[t:])
        crossing = {s for i in after for s in reads[i] if s is not None and s in blocks and s not in after}
        moved = sum(specs[s].n * specs[s].cout * specs[s].oh * specs[s].ow for s in crossing)
        gain = sum(specs[i].macs for i in after) - _MACS_PER_REBLOCKED * moved
        if gain > 0 and (best is None or gain > best[0]):
            best = (gain, t)
    if best is not None:
        blocks.update(dict.fromkeys(order[best[1]:], sizes[0]))
    return blocks


def _lower_conv(bb: Any, target: Any, decide: DeciderFactory, spec: Any, args: list[Any], block: int = 0,
                reblocked: dict[tuple[Any, int], Any] | None = None) -> Any:
    from tvm import relax

    if _is_gemv(spec):
        return _lower_gemv(bb, target, decide, spec, args)
    if block:
        return _lower_blocked(bb, target, decide, spec, args, block, {} if reblocked is None else reblocked)
    func, cpad, knobs = _kernel("conv2d", spec, target, decide)
    w = conv2d.pack_weight(spec, const_of(args[1]), cpad, family_of(target, spec.acc))
    bias = const_of(args[2]) if spec.bias else None
    new_args = [args[0], relax.const(w)]
    if bias is not None:
        new_args.append(relax.const(pad_rows(bias, cpad)))
    new_args += args[3:]
    name = f"{spec.kind}_conv_{spec.cin}x{spec.cout}_{spec.oh}" + (f"_maxpool_{spec.out_h}" if spec.pool else "")
    gv = _register(bb, func, name, "conv2d", spec.to_json(), knobs)
    if spec.kind == "pointwise":
        hw = spec.h * spec.w
        flat = [bb.emit(relax.op.reshape(a, (spec.n, shape_of(a)[1], hw))) if (i == 0 or i >= 3) else a
                for i, a in enumerate(new_args)]
        out = bb.emit(relax.call_tir(gv, flat, relax.TensorType(conv2d.out_shape(spec), spec.dtype)))
        return relax.op.reshape(out, (spec.n, spec.out_channels, spec.h, spec.w))
    return relax.call_tir(gv, new_args, relax.TensorType((spec.n, spec.out_channels, spec.out_h, spec.out_w), spec.dtype))


def pool_spec(call: Any, out_shape: tuple[int, ...]) -> Any:
    """The :class:`~tvm_shufflenet.schedules.pool.PoolSpec` of a pooling call with output ``out_shape``, or None
    when no pool template covers it."""
    name = op_name(call)
    xs = shape_of(call.args[0])
    if xs is None or len(xs) != 4:
        return None
    dt = str(call.args[0].ty.dtype)
    if dt not in ("float32", "bfloat16", "float16"):
        return None
    at = call.attrs
    if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        if at.layout != "NCHW" or bool(at.ceil_mode) or [int(d) for d in at.dilation] != [1, 1]:
            return None
        ks, st = [int(v) for v in at.pool_size], [int(v) for v in at.strides]
        if ks[0] != ks[1] or st[0] != st[1]:
            return None
        spec = pool.PoolSpec("max" if "max" in name else "avg", *xs, ks[0], ks[1], st[0],
                             tuple(int(v) for v in at.padding), bool(at.count_include_pad), dtype=dt)
        return spec if spec.out_shape == out_shape else None
    if name == "relax.nn.adaptive_avg_pool2d" and [int(v) for v in at.output_size] == [1, 1] and at.layout == "NCHW":
        return pool.PoolSpec("global_avg", *xs, keepdims=True, dtype=dt)
    if name == "relax.mean" and sorted(int(a) for a in at.axis) == [2, 3]:
        spec = pool.PoolSpec("global_avg", *xs, keepdims=bool(at.keepdims), dtype=dt)
        return spec if spec.out_shape == out_shape else None
    return None


def _dense_match(graph: Graph, i: int) -> dict[str, Any] | None:
    b = graph.bindings[i]
    if op_name(b.value) != "relax.matmul":
        return None
    x, w = b.value.args
    xs, wv = shape_of(x), const_through(graph, w)
    dt = None if xs is None else str(x.ty.dtype)
    used, wdt = [i], ""
    if wv is None and type(w).__name__ in ("Var", "DataflowVar") and op_name(graph.value(w)) == "relax.astype":
        wv = const_of(graph.value(w).args[0])  # a weight stored in another type (ReducePrecision)
        if wv is not None:
            used, wdt = [graph.producer[w], i], str(wv.dtype)
    if xs is None or len(xs) != 2 or wv is None or wv.ndim != 2 or (str(wv.dtype) != dt and not wdt):
        return None
    last, bias = i, None
    users = graph.users.get(b.var, [])
    if len(users) == 1 and users[0] < len(graph.bindings):
        add = graph.bindings[users[0]].value
        if op_name(add) == "relax.add":
            c = const_through(graph, add.args[1])
            if c is not None and c.size == wv.shape[1]:
                bias, used, last = c.reshape(-1), used + [users[0]], users[0]
    out_dt = str(getattr(graph.bindings[last].var.ty, "dtype", dt))
    return {"x": x, "w": wv, "bias": bias, "used": used, "last": last,
            # the classifier sums over 1024-1280 inputs: float32 even under fp16 arithmetic (one GEMV; a float16
            # sum there made ShuffleNet V2 x1.0's logits 9e-3 of their range off, against 1.2e-3 in float32)
            "spec": dense.DenseSpec(xs[0], xs[1], wv.shape[1], bias is not None, dtype=dt,
                                    out_dtype=out_dt if out_dt != dt else "", weight_dtype=wdt)}


def apply_templates(mod: Any, target: Any, decide: DeciderFactory | None = None) -> Any:
    """Return ``mod`` with conv, pool and classifier ops as scheduled template kernels for ``target``."""
    from tvm import relax

    decide = decide or (lambda template, spec: DefaultDecider())
    graph = Graph(mod["main"])
    if not graph.supported:
        return mod
    # the type the network's convs compute in (float16 arithmetic, or float32)
    accs = {spec.acc for b in graph.bindings if (spec := conv_call(mod, b.value)) is not None}
    acc = accs.pop() if len(accs) == 1 else "float32"
    dense_plans: dict[int, dict[str, Any]] = {}
    dense_used: set[int] = set()
    for i in range(len(graph.bindings)):
        m = _dense_match(graph, i)
        if m is not None:
            dense_plans[m["last"]] = m
            dense_used.update(m["used"])

    blocked = _blocked_convs(mod, graph, family_of(target, acc))
    reblocked: dict[tuple[Any, int], Any] = {}  # (NCHW{B1}c tensor, B2) -> its NCHW{B2}c copy

    # a global pool whose one reader casts it to float32 (ReducePrecision's last features): one kernel writing
    # float32, the cast an alias
    cast_of_pool = {u[0]: i for i, b in enumerate(graph.bindings)
                    if op_name(b.value) in ("relax.mean", "relax.nn.adaptive_avg_pool2d")
                    and len(u := graph.users.get(b.var, [])) == 1 and u[0] < len(graph.bindings)
                    and op_name(graph.bindings[u[0]].value) == "relax.astype"
                    and str(graph.bindings[u[0]].value.attrs.dtype) == "float32"
                    and (shape := shape_of(b.var)) is not None and pool_spec(b.value, shape) is not None}
    f32_pools = set(cast_of_pool.values())

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        b = g.bindings[i]
        spec = conv_call(mod, b.value)
        if spec is not None:
            return _lower_conv(bb, target, decide, spec, [new(a) for a in b.value.args[1].fields],
                               blocked.get(i, 0), reblocked)
        if i in dense_plans:
            m = dense_plans[i]
            func, mp, knobs = _kernel("dense", m["spec"], target, decide)
            args = [new(m["x"]), relax.const(dense.pack_weight(m["w"], m["spec"], target))]
            if m["bias"] is not None:
                args.append(relax.const(pad_rows(m["bias"].astype(m["spec"].acc), mp)))
            gv = _register(bb, func, f"dense_{m['spec'].k}x{m['spec'].m}", "dense", m["spec"].to_json(), knobs)
            return relax.call_tir(gv, args, relax.TensorType((m["spec"].n, m["spec"].m), m["spec"].out_dtype or m["spec"].dtype))
        if i in dense_used:
            return DROP
        if i in cast_of_pool:  # the pool before it already wrote float32
            return new(b.value.args[0])
        out_shape = shape_of(b.var)
        pspec = pool_spec(b.value, out_shape) if out_shape is not None and op_name(b.value) else None
        if pspec is not None and i in f32_pools:
            pspec = replace(pspec, out_dtype="float32")
        if pspec is not None and pspec.kind == "global_avg":
            xb = _blocked_source(bb, new(b.value.args[0]))
            if xb is not None:
                return _blocked_global_pool(bb, xb, out_shape, pspec.out_dtype)
        if pspec is not None:
            func, _, knobs = _kernel("pool", pspec, target, decide)
            gv = _register(bb, func, f"{pspec.kind}_pool_{pspec.c}_{pspec.oh}", "pool", pspec.to_json(), knobs)
            return relax.call_tir(gv, [new(b.value.args[0])], relax.TensorType(pspec.out_shape,
                                                                                 pspec.out_dtype or pspec.dtype))
        return KEEP

    return relax.transform.DeadCodeElimination()(rebuild(mod, rewrite))


def ApplyTemplates(target: Any, decide: DeciderFactory | None = None):  # noqa: N802
    """``apply_templates`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: apply_templates(mod, target, decide), opt_level=0,
                                     name="ApplyTemplates")
