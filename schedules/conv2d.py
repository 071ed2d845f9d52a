"""Fused convolution kernels: compute definitions (TE) and their CPU and CUDA schedule templates.

One kernel is ``conv -> + bias -> activation -> + residual -> activation``, reading its input through a
channel map and, optionally, writing its rows into a wider output beside channels copied from other tensors
(a concat, a channel shuffle). That last part is how the ShuffleNet pipeline makes the shuffle free: the
producer writes straight to the shuffled positions, the consumer reads through the permutation.

Kinds and their templates:

=============  ==================================================  =====================================
kind           what                                                 CPU template (knobs)
=============  ==================================================  =====================================
pointwise      1x1, stride 1, any groups; spatial flattened (3-D)   register-tiled GEMM: ``pw.co_tile``,
                                                                    ``pw.p_tile``
depthwise      KxK, one filter per channel                          per-plane stencil: ``dw.vec``
dense          KxK, any groups (the first conv)                     register-tiled direct conv:
                                                                    ``dense.co_tile``, ``dense.ow_tile``
=============  ==================================================  =====================================

On CUDA every kind uses one template: output elements over ``gpu.threads`` threads per block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .knobs import GPU_THREADS, Decider, Family, Knob, nearest

__all__ = ["ChannelMap", "Passthrough", "Placement", "ConvSpec", "kernel", "KNOBS"]

ACTIVATIONS = (None, "relu", "relu6", "hswish", "hsigmoid")


@dataclass(frozen=True)
class ChannelMap:
    """Source channel of logical channel ``c``: ``(c % m) * a + (c // m) * b + o``.

    Covers identity, slices (an offset) and channel shuffles (``m`` = groups); :meth:`fit` finds the form
    of an explicit table or returns None.
    """

    m: int
    a: int = 1
    b: int = 0
    o: int = 0

    @staticmethod
    def identity(channels: int) -> "ChannelMap":
        return ChannelMap(max(channels, 1), 1, 0, 0)

    def __call__(self, c: Any) -> Any:
        if self.m >= 1 << 30 or (self.b == 0 and self.a == 1):
            return c + self.o if self.o else c
        return (c % self.m) * self.a + (c // self.m) * self.b + self.o

    def table(self, n: int) -> list[int]:
        return [(c % self.m) * self.a + (c // self.m) * self.b + self.o for c in range(n)]

    @property
    def is_identity(self) -> bool:
        return self.a == 1 and self.b == 0 and self.o == 0

    @staticmethod
    def fit(table: list[int]) -> "ChannelMap | None":
        n = len(table)
        if n == 0:
            return None
        o = table[0]
        if table == list(range(o, o + n)):
            return ChannelMap(n, 1, 0, o)
        for m in range(2, min(n, 64) + 1):
            if n % m:
                continue
            a = table[1] - o
            b = table[m] - o if m < n else 0
            cand = ChannelMap(m, a, b, o)
            if cand.table(n) == table:
                return cand
        return None


@dataclass(frozen=True)
class Passthrough:
    """Output channels ``offset + stride*i`` (``i < length``) are copied from input channel ``map(i)``."""

    stride: int
    offset: int
    length: int
    channels: int  # channels of the source tensor
    map: ChannelMap


@dataclass(frozen=True)
class Placement:
    """The kernel's output is ``total`` channels: its rows at ``offset + stride*r``, the rest copied."""

    total: int
    stride: int
    offset: int
    passthrough: tuple[Passthrough, ...] = ()
    act: str | None = None  # applied to every output channel (a ReLU after the concat)


@dataclass(frozen=True)
class ConvSpec:
    """Everything that defines one fused convolution kernel (NCHW, float32)."""

    n: int
    cin: int  # logical input channels
    cin_src: int  # channels of the tensor actually read (>= cin when reading a slice)
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    in_map: ChannelMap | None = None
    bias: bool = True
    act: str | None = None
    residual: bool = False
    post_act: str | None = None
    placement: Placement | None = None
    dtype: str = "float32"

    @property
    def oh(self) -> int:
        return (self.h + self.pad[0] + self.pad[2] - self.kh) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + self.pad[1] + self.pad[3] - self.kw) // self.stride + 1

    @property
    def kind(self) -> str:
        if self.kh == self.kw == 1 and self.stride == 1 and self.pad == (0, 0, 0, 0) and self.h * self.w >= 4:
            return "pointwise"
        if self.groups == self.cin == self.cout and self.groups > 1:
            return "depthwise"
        return "dense"

    @property
    def out_channels(self) -> int:
        return self.placement.total if self.placement else self.cout

    @property
    def macs(self) -> int:
        return self.n * self.cout * self.oh * self.ow * (self.cin // self.groups) * self.kh * self.kw

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "ConvSpec":
        d = json.loads(text)
        if d.get("in_map"):
            d["in_map"] = ChannelMap(**d["in_map"])
        if d.get("placement"):
            p = d["placement"]
            pts = tuple(Passthrough(**{**t, "map": ChannelMap(**t["map"])}) for t in p["passthrough"])
            d["placement"] = Placement(p["total"], p["stride"], p["offset"], pts, p.get("act"))
        d["pad"] = tuple(d["pad"])
        return ConvSpec(**d)

    def with_(self, **changes: Any) -> "ConvSpec":
        return replace(self, **changes)


KNOBS = {
    "pw.co_tile": Knob("pw.co_tile", (1, 2, 3, 4, 5, 6, 8, 12, 16), "output channels per register tile"),
    "pw.p_tile": Knob("pw.p_tile", (8, 14, 16, 28, 32, 48, 49, 56, 64, 96, 98, 112, 128, 196, 256),
                      "pixels per tile (a divisor of H*W is used; vectors within it)"),
    "dw.vec": Knob("dw.vec", (1, 4, 8, 16), "output columns per vector"),
    "dense.co_tile": Knob("dense.co_tile", (1, 2, 4, 6, 8, 12, 16), "output channels per register tile"),
    "dense.ow_tile": Knob("dense.ow_tile", (4, 8, 16, 32), "output columns per register tile"),
    "gpu.threads": GPU_THREADS,
}


def _act(name: str | None, v: Any, dtype: str = "float32") -> Any:
    from tvm import te, tirx

    if name is None:
        return v
    zero, six, three = (tirx.const(x, dtype) for x in (0.0, 6.0, 3.0))
    if name == "relu":
        return te.max(v, zero)
    if name == "relu6":
        return te.min(te.max(v, zero), six)
    if name == "hsigmoid":
        return te.min(te.max(v + three, zero), six) / six
    if name == "hswish":
        return v * (te.min(te.max(v + three, zero), six) / six)
    raise ValueError(f"unknown activation {name!r}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def vector_width(extent: int, lanes: int) -> int:
    """The widest vector that divides ``extent`` (at most ``lanes``): no ragged tail, no write past a tile."""
    return max(d for d in _divisors(extent) if d <= max(lanes, 1))


def pointwise_defaults(spec: ConvSpec, fam: Family) -> tuple[int, int]:
    """Family defaults for ``pw.co_tile`` and ``pw.p_tile``.

    A register tile of about 16 accumulators, two (nearly) full vectors of pixels by 8 output channels on
    32-register ISAs (4 on 16-register ones): each weight broadcast feeds two FMAs and each pixel vector 8,
    and nothing spills. Measured on AVX-512 against a sweep of both knobs, this rule was within 10% of the
    best tile for 14x14 to 112x112 maps and 2x faster than six channels by seven vectors. Maps whose pixel
    count has no divisor near a full vector (7x7: 49 = 7 x 7) keep one row of 7-lane vectors by 6 channels,
    which measured best there.
    """
    hw = spec.h * spec.w
    lanes = fam.vector_lanes
    co_rows = 8 if fam.vector_registers >= 32 else 4
    best, best_cost = None, None
    for p in _divisors(hw):
        vec = vector_width(p, lanes)
        if vec * 8 < lanes * 7 or p > 8 * lanes:  # under 7/8 of a vector wastes more than a bigger tile saves
            continue
        cost = (abs(p // vec - 2), -p)
        if best_cost is None or cost < best_cost:
            best, best_cost = p, cost
    if best is None:  # e.g. 7x7: the whole map as one row of short vectors
        best = max(d for d in _divisors(hw) if d <= 8 * lanes)
        return (6 if fam.vector_registers >= 32 else 4), best
    return co_rows, best


def kernel_knobs(spec: ConvSpec, fam: Family, decide: Decider) -> dict[str, int]:
    """Ask the decider every knob this spec's template uses; returns the decisions."""
    if fam.gpu:
        return {"threads": decide(KNOBS["gpu.threads"], 256)}
    kind = spec.kind
    if kind == "pointwise":
        co, p = pointwise_defaults(spec, fam)
        co = decide(KNOBS["pw.co_tile"], nearest(KNOBS["pw.co_tile"].choices, co))
        p_want = decide(KNOBS["pw.p_tile"], nearest(KNOBS["pw.p_tile"].choices, p))
        hw = spec.h * spec.w
        p = min(_divisors(hw), key=lambda d: (abs(d - p_want), d))  # always a divisor: no ragged tiles
        return {"co_tile": co, "p_tile": p}
    if kind == "depthwise":
        lanes = fam.vector_lanes
        want = lanes if spec.ow >= lanes else nearest((1, 4, 8, 16), spec.ow)
        return {"vec": decide(KNOBS["dw.vec"], want)}
    ow_t = decide(KNOBS["dense.ow_tile"], fam.vector_lanes if spec.ow >= fam.vector_lanes else 4)
    co_t = decide(KNOBS["dense.co_tile"], 6 if fam.vector_registers >= 32 else 4)
    return {"co_tile": co_t, "ow_tile": ow_t}


def padded_cout(spec: ConvSpec, knobs: dict[str, int]) -> int:
    """Output rows the kernel computes: ``cout`` rounded up to the channel tile (weights padded with zeros)."""
    t = knobs.get("co_tile", 1)
    return -(-spec.cout // t) * t


def padded_window(x: Any, n: int, c: int, h: int, w: int, pad: tuple[int, int, int, int], stride: int, fill: Any,
                  channel: Any = None, split_phases: bool = False):
    """A ``pad`` stage over ``x`` and ``read(n, c, i, j, rh, rw)``: the input under output ``(i, j)``'s window.

    With ``split_phases`` and a stride, the padded columns are stored split by phase (``[..., j % s, j // s]``),
    so a vector of outputs reads consecutive floats for every window column instead of a strided gather. That
    pays where each input is read many times (the first conv: once per output channel); for depthwise convs
    and pools, which read each input about (k/s)^2 times, the extra shuffle in the copy costs more (measured).
    """
    from tvm import te, tirx

    t, left, b, r = pad
    hp, wp = h + t + b, w + left + r
    s = stride
    chan = channel or (lambda ch: ch)

    def value(nn: Any, ch: Any, i: Any, col: Any) -> Any:
        inside = tirx.all(i >= t, i < t + h, col >= left, col < left + w)
        return tirx.if_then_else(inside, x[nn, chan(ch), i - t, col - left], fill)

    if s == 1 or not split_phases:
        xp = te.compute((n, c, hp, wp), lambda nn, ch, i, j: value(nn, ch, i, j), name="pad")
        return lambda nn, ch, i, j, rh, rw: xp[nn, ch, i * s + rh, j * s + rw]
    wq = -(-wp // s)
    xp = te.compute((n, c, hp, s, wq), lambda nn, ch, i, ph, j: value(nn, ch, i, j * s + ph), name="pad")
    return lambda nn, ch, i, j, rh, rw: xp[nn, ch, i * s + rh, rw % s, j + rw // s]


def compute(spec: ConvSpec, cout_pad: int | None = None, flat: bool = True):
    """TE tensors ``(inputs, output)`` of ``spec``; inputs are data, weight, [bias], [residual], passthroughs.

    With ``flat``, pointwise kernels see data, residual, passthroughs and output as ``(N, C, H*W)`` (the
    caller reshapes, which is free) and their weight as ``(Cout, Cin/groups)``; every other kind, and every
    kind without ``flat``, sees ``(N, C, H, W)`` tensors and OIHW weights.
    """
    from tvm import te, tirx

    kind = spec.kind if flat or spec.kind != "pointwise" else "dense"
    cpad = cout_pad or spec.cout
    dt = spec.dtype
    sp_shape = (spec.h * spec.w,) if kind == "pointwise" else (spec.h, spec.w)
    osp_shape = (spec.h * spec.w,) if kind == "pointwise" else (spec.oh, spec.ow)
    in_map = spec.in_map or ChannelMap.identity(spec.cin)
    cin_g, cout_g = spec.cin // spec.groups, spec.cout // spec.groups
    x = te.placeholder((spec.n, spec.cin_src, *sp_shape), dt, name="data")
    inputs = [x]
    if kind == "depthwise":
        wt = te.placeholder((spec.cout, 1, spec.kh, spec.kw), dt, name="weight")
    elif kind == "pointwise":
        wt = te.placeholder((cpad, cin_g), dt, name="weight")
    else:
        wt = te.placeholder((cpad, cin_g, spec.kh, spec.kw), dt, name="weight")
    inputs.append(wt)
    bias = te.placeholder((cpad,), dt, name="bias") if spec.bias else None
    if bias is not None:
        inputs.append(bias)
    res = te.placeholder((spec.n, spec.cout, *osp_shape), dt, name="residual") if spec.residual else None
    if res is not None:
        inputs.append(res)

    def src_channel(co: Any, k: Any) -> Any:
        if spec.groups == 1:
            return in_map(k)
        return in_map(te.min(co, spec.cout - 1) // cout_g * cin_g + k)

    if kind == "pointwise":
        k = te.reduce_axis((0, cin_g), name="k")
        conv = te.compute(
            (spec.n, cpad, spec.h * spec.w),
            lambda n, c, p: te.sum(x[n, src_channel(c, k), p] * wt[c, k], axis=k),
            name="conv",
        )
    else:
        zero = tirx.const(0.0, dt)
        read = padded_window(x, spec.n, spec.cin, spec.h, spec.w, spec.pad, spec.stride, zero, in_map,
                             split_phases=kind == "dense")
        rh, rw = te.reduce_axis((0, spec.kh), name="rh"), te.reduce_axis((0, spec.kw), name="rw")
        if kind == "depthwise":
            conv = te.compute(
                (spec.n, spec.cout, spec.oh, spec.ow),
                lambda n, c, i, j: te.sum(read(n, c, i, j, rh, rw) * wt[c, 0, rh, rw], axis=[rh, rw]),
                name="conv",
            )
        else:
            rc = te.reduce_axis((0, cin_g), name="rc")

            def grp_in(c: Any, k: Any) -> Any:
                return k if spec.groups == 1 else te.min(c, spec.cout - 1) // cout_g * cin_g + k

            conv = te.compute(
                (spec.n, cpad, spec.oh, spec.ow),
                lambda n, c, i, j: te.sum(read(n, grp_in(c, rc), i, j, rh, rw) * wt[c, rc, rh, rw], axis=[rc, rh, rw]),
                name="conv",
            )

    def epi_value(n: Any, c: Any, *sp: Any) -> Any:
        v = conv[(n, c, *sp)]
        if bias is not None:
            v = v + bias[c]
        v = _act(spec.act, v, dt)
        if res is not None:
            v = v + res[(n, c, *sp)]
        return _act(spec.post_act, v, dt)

    pl = spec.placement
    if pl is None:
        out = te.compute((spec.n, spec.cout, *osp_shape), epi_value, name="out")
        return inputs, out
    epi = te.compute((spec.n, spec.cout, *osp_shape), epi_value, name="epilogue")
    sources = []
    for i, ptd in enumerate(pl.passthrough):
        src = te.placeholder((spec.n, ptd.channels, *osp_shape), dt, name=f"pass{i}")
        inputs.append(src)
        sources.append((ptd, src))

    def out_value(n: Any, c: Any, *sp: Any) -> Any:
        rel = c - pl.offset
        row = te.max(te.min(rel // pl.stride, spec.cout - 1), 0)
        val = epi[(n, row, *sp)]
        for ptd, src in reversed(sources):
            prel = c - ptd.offset
            inside = tirx.all(prel >= 0, prel % ptd.stride == 0, prel // ptd.stride < ptd.length)
            j = te.max(te.min(prel // ptd.stride, ptd.length - 1), 0)
            val = tirx.if_then_else(inside, src[(n, ptd.map(j), *sp)], val)
        return _act(pl.act, val, dt)

    out = te.compute((spec.n, pl.total, *osp_shape), out_value, name="out")
    return inputs, out


# ----------------------------------------------------------------------------------------------- schedules


def _schedule_placement(sch: Any, lanes: int) -> None:
    """The copy nest of a placed output: parallel over channels, vectors over pixels."""
    blk = sch.get_sblock("out")
    loops = sch.get_loops(blk)
    outer = sch.fuse(*loops[:2])
    inner = sch.fuse(*loops[2:]) if len(loops) > 3 else loops[2]
    sch.parallel(outer)
    _vectorize_tail(sch, inner, lanes)


def _vectorize_tail(sch: Any, loop: Any, lanes: int) -> None:
    extent = int(sch.get(loop).extent)
    vec = vector_width(extent, lanes)
    if vec <= 1:
        return
    if vec == extent:
        sch.vectorize(loop)
        return
    _, vi = sch.split(loop, [None, vec])
    sch.vectorize(vi)


def _schedule_pointwise(sch: Any, spec: ConvSpec, knobs: dict[str, int], lanes: int) -> None:
    conv = sch.get_sblock("conv")
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, p, k = sch.get_loops(conv)
    co, ci = sch.split(c, [None, knobs["co_tile"]])
    po, pi = sch.split(p, [None, knobs["p_tile"]])
    pvo, pv = sch.split(pi, [None, vector_width(knobs["p_tile"], lanes)])
    sch.reorder(n, co, po, k, ci, pvo, pv)
    outer = sch.fuse(n, co, po)
    sch.parallel(outer)
    _finish_register_tile(sch, spec, conv, epi, outer, [ci, pvo], pv, k, lanes)


def _finish_register_tile(sch: Any, spec: ConvSpec, conv: Any, epi: Any, at: Any, unrolled: list, vec: Any,
                          reduce_loop: Any, lanes: int) -> None:
    """The accumulator tile in registers: epilogue at ``at``, ``unrolled`` loops unrolled, ``vec`` vectorized."""
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(epi, at)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vec)
    init = sch.decompose_reduction(conv, reduce_loop)
    sch.vectorize(sch.get_loops(init)[-1])
    _vectorize_tail(sch, sch.get_loops(epi)[-1], lanes)
    if spec.placement:
        _schedule_placement(sch, lanes)


def schedule_window(sch: Any, acc: Any, out: Any, pad: Any, ow: int, vec_knob: int, lanes: int) -> int:
    """Depthwise convs and pools: threads over planes, the padded plane per thread, vectors over columns.

    ``acc`` is the reduction over the window (kept in registers), ``out`` its epilogue; returns the vector width.
    """
    n, c, i, j, rh, rw = sch.get_loops(acc)
    vec = vector_width(ow, vec_knob)
    jo, ji = sch.split(j, [None, vec])
    sch.reorder(n, c, i, jo, rh, rw, ji)
    outer = sch.fuse(n, c)
    sch.parallel(outer)
    sch.compute_at(pad, outer)
    _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(out, jo)
    sch.unroll(rh)
    sch.unroll(rw)
    if vec > 1:
        sch.vectorize(ji)
    init = sch.decompose_reduction(acc, rh)
    if vec > 1:
        sch.vectorize(sch.get_loops(init)[-1])
        sch.vectorize(sch.get_loops(out)[-1])
    return vec


def schedule_gpu_outputs(sch: Any, out: Any, acc: Any, threads: int) -> None:
    """CUDA: one thread per output element, ``threads`` per block, the reduction in a register."""
    fused = sch.fuse(*sch.get_loops(out))
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.set_scope(acc, 0, "local")
    sch.compute_at(acc, tx)


def _schedule_depthwise(sch: Any, spec: ConvSpec, knobs: dict[str, int], lanes: int) -> None:
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    schedule_window(sch, sch.get_sblock("conv"), epi, sch.get_sblock("pad"), spec.ow, knobs["vec"], lanes)
    if spec.placement:
        _schedule_placement(sch, lanes)


def _schedule_dense(sch: Any, spec: ConvSpec, knobs: dict[str, int], lanes: int) -> None:
    conv = sch.get_sblock("conv")
    pad = sch.get_sblock("pad")
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, i, j, rc, rh, rw = sch.get_loops(conv)
    co, ci = sch.split(c, [None, knobs["co_tile"]])
    ow_t = vector_width(spec.ow, knobs["ow_tile"])
    jo, ji = sch.split(j, [None, ow_t])
    vl = vector_width(ow_t, lanes)
    jvo, jv = sch.split(ji, [None, vl])
    sch.reorder(n, co, i, jo, rc, rh, rw, ci, jvo, jv)
    outer = sch.fuse(n, co, i)
    sch.parallel(outer)
    pl = sch.get_loops(pad)
    sch.parallel(sch.fuse(*pl[:2]))
    if spec.stride == 1:  # the phase-split copy reads with a stride: leave it scalar
        _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    _finish_register_tile(sch, spec, conv, epi, jo, [rh, rw, ci, jvo], jv, rc, lanes)


def _schedule_gpu(sch: Any, spec: ConvSpec, knobs: dict[str, int]) -> None:
    """One thread per output element; padding and epilogue inlined, the reduction kept in a register."""
    threads = knobs["threads"]
    for name in ("pad", "epilogue"):
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - the block does not exist for this kind
            pass
    schedule_gpu_outputs(sch, sch.get_sblock("out"), sch.get_sblock("conv"), threads)


def kernel(spec: ConvSpec, target: Any, decide: Decider):
    """The scheduled ``PrimFunc`` for ``spec`` on ``target``, and the padded output-row count of its weights."""
    from tvm import te
    from tvm.s_tir import Schedule

    from .knobs import family_of

    fam = family_of(target)
    knobs = kernel_knobs(spec, fam, decide)
    cpad = spec.cout if fam.gpu or spec.kind == "depthwise" else padded_cout(spec, knobs)
    inputs, out = compute(spec, cpad)
    func = te.create_prim_func([*inputs, out])
    sch = Schedule(func)
    if fam.gpu:
        _schedule_gpu(sch, spec, knobs)
    elif spec.kind == "pointwise":
        _schedule_pointwise(sch, spec, knobs, fam.vector_lanes)
    elif spec.kind == "depthwise":
        _schedule_depthwise(sch, spec, knobs, fam.vector_lanes)
    else:
        _schedule_dense(sch, spec, knobs, fam.vector_lanes)
    return sch.mod["main"], cpad, knobs
