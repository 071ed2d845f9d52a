"""Fused convolution kernels: compute definitions (TE) and their CPU and CUDA schedule templates.

One kernel is ``conv -> + bias -> activation -> + residual -> activation``, reading its input through a
channel map and, optionally, writing its rows into a wider output beside channels copied from other tensors
(a concat, a channel shuffle). That last part is how the ShuffleNet pipeline makes the shuffle free: the
producer writes straight to the shuffled positions, the consumer reads through the permutation.

Kinds and their templates:

=============  ==================================================  =====================================
kind           what                                                 CPU template (knobs)
=============  ==================================================  =====================================
pointwise      1x1, stride 1, any groups; spatial flattened (3-D)   register-tiled GEMM, two variants
                                                                    (``pw.axis``): vectors over pixels
                                                                    (``pw.co_tile``, ``pw.p_split``) or
                                                                    over output channels, input channels
                                                                    blocked (``pw.c_vectors``,
                                                                    ``pw.pixels``, ``pw.k_block``)
depthwise      KxK, one filter per channel                          per-plane stencil: ``dw.vec``
dense          KxK, any groups (the first conv)                     register-tiled direct conv:
                                                                    ``dense.co_tile``, ``dense.ow_split``
=============  ==================================================  =====================================

``block`` = B (the vector width; :func:`blockable` convs, chosen by the lowering pass) makes data, residual and
output NCHW{B}c: a channel block of one vector innermost. The pointwise kernel is then the ``channels`` variant
with whole-vector stores (and, with ``in_scale``, an SE gate folded into its input reads); the depthwise kernel
is a register tile of ``dw.cols`` output columns x one channel vector, its padding inlined.

On CUDA every kind uses one template: output elements over ``gpu.threads`` threads per block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from .knobs import (GPU_THREAD_CHOICES, GPU_THREADS, ONLY_VARIANT, Decider, Family, Knob, default_tile, divisors, family_of,
                    pad_rows, padded_rows, window_positions)

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
    """Everything that defines one fused convolution kernel (NCHW).

    ``dtype`` is what the kernel stores (data, weights, residual, output: ``float32``, ``bfloat16`` or
    ``float16``), ``acc`` what it computes in (products, sums, bias and epilogue): ``float32`` except for fp16
    arithmetic (ARMv8.2-A ``+fullfp16``), where both are ``float16``."""

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
    acc: str = "float32"
    in_dtype: str = ""  # data and weights when not ``dtype``: a reduced network's first conv reads the float32 image
    block: int = 0  # 0: NCHW; B: data, residual and output NCHW{B}c (channel blocks of one vector)
    in_scale: bool = False  # NCHW{B}c pointwise only: input channels scaled by an (N, Cin) input (an SE gate)
    pool: int = 0  # dense NCHW only: the window of a max pool applied to the epilogue's output (0: none)
    pool_stride: int = 1
    pool_pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def oh(self) -> int:
        return window_positions(self.h, self.kh, self.stride, self.pad[0], self.pad[2])

    @property
    def ow(self) -> int:
        return window_positions(self.w, self.kw, self.stride, self.pad[1], self.pad[3])

    @property
    def out_h(self) -> int:
        """Rows of the kernel's output: the conv's, or the fused max pool's."""
        if not self.pool:
            return self.oh
        return window_positions(self.oh, self.pool, self.pool_stride, self.pool_pad[0], self.pool_pad[2])

    @property
    def out_w(self) -> int:
        if not self.pool:
            return self.ow
        return window_positions(self.ow, self.pool, self.pool_stride, self.pool_pad[1], self.pool_pad[3])

    @property
    def kind(self) -> str:
        if self.kh == self.kw == 1 and self.stride == 1 and self.pad == (0, 0, 0, 0) and self.h * self.w >= 4:
            return "pointwise"
        if self.groups == self.cin == self.cout and self.groups > 1:
            return "depthwise"
        return "dense"

    @property
    def weight_dtype(self) -> str:
        """What the weights are stored in: ``dtype``, but float32 where the kernel computes in float32 from few
        of them: a first conv (``in_dtype``) and depthwise convs (9 weights a channel; rounding them was about a
        quarter of a bf16 ShuffleNet V2's or MobileNet V1's weight-rounding error, measured in PyTorch)."""
        if self.in_dtype:
            return self.in_dtype
        return "float32" if self.kind == "depthwise" and self.acc == "float32" else self.dtype

    @property
    def out_channels(self) -> int:
        return self.placement.total if self.placement else self.cout

    @property
    def macs(self) -> int:
        return self.n * self.cout * self.oh * self.ow * (self.cin // self.groups) * self.kh * self.kw

    def to_json(self) -> str:
        d = asdict(self)
        for key in ("block", "in_scale", "pool"):  # kernels keep the keys their tuning records were made with
            if not d[key]:
                d.pop(key)
        if not self.pool:
            d.pop("pool_stride")
            d.pop("pool_pad")
        if d["acc"] == "float32":
            d.pop("acc")
        if not d["in_dtype"]:
            d.pop("in_dtype")
        return json.dumps(d, sort_keys=True)

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
        if "pool_pad" in d:
            d["pool_pad"] = tuple(d["pool_pad"])
        return ConvSpec(**d)

    def with_(self, **changes: Any) -> "ConvSpec":
        return replace(self, **changes)


KNOBS = {
    "pw.axis": Knob("pw.axis", "variant", "pointwise: vectors over output channels, input channels blocked "
                    "(`channels`: the default) or over pixels (`pixels`: group convs whose groups are not whole "
                    "vectors)"),
    "pw.co_tile": Knob("pw.co_tile", "choice", "pixels: output channels per register tile (divisors of the "
                       "padded rows, or of a group's rows, up to 16)"),
    "pw.p_split": Knob("pw.p_split", "tile", "pixels: H*W split as (tiles, pixels per tile); a tile's pixels are "
                       "one vector of up to 4 machine vectors. bf16 dot products: H*W/16 vectors split as (tasks, "
                       "register tiles per task, vectors per tile: up to 4)"),
    "pw.c_vectors": Knob("pw.c_vectors", "choice", "channels: channel vectors per register tile (1-4; 1-8 with 32 registers)"),
    "pw.pixels": Knob("pw.pixels", "tile", "channels: H*W split as (tasks, register tiles per task, pixels "
                      "per register tile: up to 16)"),
    "pw.k_block": Knob("pw.k_block", "choice", "channels: input channels per pass over a chunk (divisors of "
                       "Cin/groups from 4 to 256; NCHW{B}c: multiples of B)"),
    "dw.vec": Knob("dw.vec", "choice", "depthwise: output columns per vector (divisors of the width, up to two "
                   "machine vectors)"),
    "dw.cols": Knob("dw.cols", "choice", "depthwise NCHW{B}c: output columns per register tile (divisors of "
                    "the width, up to 8)"),
    "dense.axis": Knob("dense.axis", "variant", "dense: vectors over output channels (`channels`: each input "
                       "value one broadcast per tap, padding inlined) or over output columns (`columns`)"),
    "dense.c_vectors": Knob("dense.c_vectors", "choice", "dense channels: output-channel vectors per register tile "
                            "(1-4; 1-8 with 32 registers)"),
    "dense.cols": Knob("dense.cols", "choice", "dense channels: output columns per register tile (divisors of the "
                       "width, up to 16)"),
    "dense.co_tile": Knob("dense.co_tile", "choice", "dense columns: output channels per register tile (up to 16)"),
    "dense.ow_split": Knob("dense.ow_split", "tile", "dense columns: output width split as (tiles, columns per tile: up to "
                           "4 machine vectors)"),
    "dense.pool_rows": Knob("dense.pool_rows", "choice", "dense with a fused max pool: pooled rows per task (divisors "
                            "of the pooled height; a task computes the conv rows under them, s*T + k - s)"),
    "amx.p_tasks": Knob("amx.p_tasks", "choice", "AMX NCHW{B}c: parallel tasks over the pixels (each repacks its "
                        "pixels' input once)"),
    "amx.c_tasks": Knob("amx.c_tasks", "choice", "AMX NCHW{B}c: parallel tasks over the output channels"),
    "gpu.threads": GPU_THREADS,
}


def _bf16_bits(v: Any) -> Any:
    """The bits (uint16) of float32 ``v`` rounded to bfloat16, to nearest even, in integer arithmetic: TVM keeps a
    bfloat16 value computed in a kernel as float32, so its bits are made by hand."""
    from tvm import tirx

    u = tirx.reinterpret("uint32", v)
    rounded = u + tirx.const(0x7FFF, "uint32") + ((u >> tirx.const(16, "uint32")) & tirx.const(1, "uint32"))
    return (rounded >> tirx.const(16, "uint32")).astype("uint16")


def cast(v: Any, dtype: str) -> Any:
    """``v`` as ``dtype`` (no cast node when it already is)."""
    from tvm import tirx

    return v if _dtype(v) == dtype else tirx.Cast(dtype, v)


def _dtype(v: Any) -> str:
    return str(v.ty.dtype if hasattr(v, "ty") else v.dtype)


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


def _epilogue(spec: ConvSpec, v: Any, bias: Any, residual: Any, store_lanes: int = 0) -> Any:
    """A fused kernel's epilogue on one output value: ``+ bias -> act -> + residual -> post_act`` (absent
    parts are None). ``store_lanes``: see :func:`_store`."""
    if bias is not None:
        v = v + bias
    v = _act(spec.act, v, spec.acc)
    if residual is not None:
        v = v + cast(residual, spec.acc)
    return _store(_act(spec.post_act, v, spec.acc), spec.dtype, store_lanes)


_CVTNEPS2BF16 = {16: "llvm.x86.avx512bf16.cvtneps2bf16.512", 8: "llvm.x86.avx512bf16.cvtneps2bf16.256"}


def _store(v: Any, dtype: str, lanes: int = 0) -> Any:
    """``v`` as ``dtype`` for a store. With ``lanes`` (16 or 8: a kernel whose store of this value is always
    vectorized exactly that wide, on a CPU with AVX-512 BF16), a float32 -> bfloat16 cast is one
    ``vcvtneps2bf16`` (round to nearest even, as the cast): TVM legalizes the cast to six integer vector ops
    (shift, and, two adds, shift, narrow), as many as the dot products of a 16-channel 1x1 conv's output vector.
    The LLVM intrinsic takes exactly that many lanes, so a store vectorized any other way fails LLVM's verifier
    at compile time rather than computing wrong values."""
    from tvm import tirx

    if lanes and dtype == "bfloat16" and _dtype(v) == "float32":
        return tirx.reinterpret("bfloat16", tirx.call_llvm_pure_intrin("uint16", _CVTNEPS2BF16[lanes], v))
    return cast(v, dtype)


def vector_width(extent: int, lanes: int) -> int:
    """The widest vector that divides ``extent`` (at most ``lanes``): no ragged tail, no write past a tile."""
    return max(divisors(extent, max(lanes, 1)))


def weight_block(fam: Family) -> int:
    """Output channels per block of a pointwise kernel's packed weight: one vector (CPU), 1 (GPU)."""
    return 1 if fam.gpu else fam.vector_lanes


def bf16_dot(spec: ConvSpec, fam: Family) -> bool:
    """Whether ``spec`` computes with :func:`intrinsics.bf16_dot_intrin` (``vdpbf16ps``): a bfloat16 1x1 conv
    (grouped when its groups are whole vectors) on AVX-512 (bf16 is only offered on CPUs with AVX-512 BF16),
    NCHW{16,8}c or NCHW. Its weight is ``(Cout/L, Cin_g/2, L, 2)``: each channel vector's pair of input channels
    one load. NCHW data has a pair's two channels a plane apart, so each task first interleaves its chunk of input
    rows in pairs (a ``pairs`` stage: 1/16th of the tile's multiply-adds in copies). An SE-gated NCHW{B}c conv gates its chunk the same way (the
    gated input rounded to bf16 once) before the dot products."""
    from .intrinsics import LANES

    return (spec.dtype == "bfloat16" and spec.acc == "float32" and fam.name == "x86-avx512"
            and fam.vector_lanes in LANES and spec.block in (0, fam.vector_lanes) and spec.kind == "pointwise"
            and (spec.groups == 1 or (not spec.block and _group_vectors(spec, fam)))
            and (spec.cin // spec.groups) % 2 == 0)


def pack_pairs_weight(w: Any, cpad: int | None = None, lanes: int = 16) -> Any:
    """``(O, I)`` (or OIHW 1x1) -> ``(cpad/L, I/2, L, 2)``, rows past ``O`` zero: :func:`bf16_dot`'s layout."""
    import numpy as np

    w = pad_rows(np.asarray(w).reshape(w.shape[0], w.shape[1]), cpad or w.shape[0])
    o, i = w.shape
    return np.ascontiguousarray(w.reshape(o // lanes, lanes, i // 2, 2).transpose(0, 2, 1, 3))


def pack_pointwise_weight(w: Any, cpad: int, block: int) -> Any:
    """OIHW (or ``(O, I)``) weights -> ``(cpad/block, I, block)``, rows past ``O`` zero: each block of output
    channels is one contiguous stream in input-channel order, which a register tile of channel vectors reads
    front to back (the ``(I, O)`` layout made every k step of a tile touch a new cache line ``O`` floats
    away: 30% slower, measured on 512x512 at 14x14)."""
    import numpy as np

    w = np.asarray(w)
    full = pad_rows(w.reshape(w.shape[0], -1), cpad)
    return np.ascontiguousarray(full.reshape(cpad // block, block, full.shape[1]).transpose(0, 2, 1))


def padded_cout(spec: ConvSpec, fam: Family) -> int:
    """Output rows the kernel computes (weights padded with zero rows; only real channels are stored).

    Group convs whose groups are whole vectors are not padded: a channel vector then never straddles two
    groups, so its input row is one broadcast (:func:`_group_vectors`)."""
    if _amx_nchw_eligible(spec, fam):  # AMX: whole 16-row tiles; a group conv's tiles divide its groups instead
        return padded_rows(spec.cout, 16) if spec.groups == 1 else spec.cout
    if fam.gpu or spec.kind == "depthwise" or spec.block or _group_vectors(spec, fam):
        return spec.cout
    return padded_rows(spec.cout, fam.vector_lanes)


def _amx_tile_rows(spec: ConvSpec) -> int:
    """Output channels per accumulator tile of an NCHW AMX kernel: 16, or in a group conv the most up to 16 that
    divide a group (ShuffleNet V1 g3's 20 and 40: 10), so a tile never straddles two groups."""
    return 16 if spec.groups == 1 else max(divisors(spec.cout // spec.groups, 16))


def _amx_nchw_eligible(spec: ConvSpec, fam: Family) -> bool:
    return (fam.amx and not fam.gpu and spec.kind == "pointwise" and not spec.block and spec.dtype == "bfloat16"
            and spec.acc == "float32" and (spec.cin // spec.groups) % 2 == 0)


def _group_vectors(spec: ConvSpec, fam: Family) -> bool:
    return spec.groups > 1 and not fam.gpu and (spec.cout // spec.groups) % fam.vector_lanes == 0


def block_sizes(fam: Family) -> list[int]:
    """Channel block sizes an NCHW{B}c region may use on ``fam``, widest first: one vector, and on 16-lane
    ISAs also half of one (a 256-bit vector, still with 32 registers), for networks whose channel counts are
    multiples of 8 but not of 16 (MobileNet V2's 24, V3's 40, 72, 120)."""
    if fam.gpu or fam.vector_lanes <= 1:
        return []
    return [fam.vector_lanes] + ([fam.vector_lanes // 2] if fam.vector_lanes >= 16 else [])


def kernel_family(spec: ConvSpec, fam: Family) -> Family:
    """The family ``spec``'s kernel is scheduled for: ``fam`` with the vector width the kernel uses.

    An NCHW{B}c kernel's vectors are its channel blocks (``B`` lanes). A group conv whose groups are not whole
    vectors but whole narrower ones (ShuffleNet V1 g3's 40-channel groups on AVX-512, its 20-channel ones on
    AVX2) uses the narrower vectors, so its channel tiles stay inside one group: the pixel-vector variant it
    would otherwise get computes every row's group at run time and ran 3-8x slower (ShuffleNet V1 g3's
    480x120 conv at 14x14 on 2 Zen 4 cores: 0.90 ms per call)."""
    if fam.gpu:
        return fam
    if spec.block:
        return replace(fam, vector_lanes=spec.block)
    if spec.kind == "dense" and spec.cout % fam.vector_lanes and spec.cout % (fam.vector_lanes // 2) == 0:
        # a stem of 24 channels: 3 vectors of 8 lanes instead of 32 rows in 2 vectors of 16 (130 vs 150 us, the
        # 224x224 ShuffleNet stem on 2 Zen 4 cores)
        return replace(fam, vector_lanes=fam.vector_lanes // 2)
    if spec.kind == "pointwise" and spec.groups > 1 and not _group_vectors(spec, fam):
        cout_g = spec.cout // spec.groups
        narrower = [w for w in (fam.vector_lanes // 2, fam.vector_lanes // 4) if w >= 4 and cout_g % w == 0]
        if narrower:
            return replace(fam, vector_lanes=narrower[0])
    return fam


def _amx_rows(spec: ConvSpec) -> int:
    """Pixels per accumulator tile of an NCHW AMX kernel (its columns): the most up to 16 that divide H*W (14 at
    14x14, 7 at 7x7)."""
    return max(divisors(spec.h * spec.w, 16))


def amx_geometries(spec: ConvSpec, fam: Family) -> dict[str, Any]:
    """``{variant: amx.Geometry}`` for a bf16 1x1 conv on a CPU with AMX tiles (:mod:`amx`), else ``{}``: each
    variant is ``amx{G}x{J}``, G accumulator tiles down the rows by J across the columns. NCHW{16,8}c: rows are
    pixels, columns 16 output channels; NCHW: rows are 16 output channels, columns pixels."""
    from .amx import Geometry

    if not (_amx_nchw_eligible(spec, fam) or (fam.amx and bf16_dot(spec, fam) and spec.block in (8, 16)
                                              and spec.groups == 1)):
        return {}
    hw, out = spec.h * spec.w, {}
    for g, j in ((2, 2), (1, 2), (2, 1), (1, 3), (3, 1), (1, 1)):
        if spec.block:  # pixels padded to whole pairs of tiles, channels to whole tiles
            geo = Geometry("blocked8" if spec.block == 8 else "blocked", 16, 16, 32, g, j, amx_kpad(spec) // 32)
            ok = amx_pixels(spec) % (16 * g) == 0 and amx_cpad(spec) % (16 * j) == 0
            if ok:  # a call: one block of pixels x as many channel blocks as keep its partial sums in L1
                blocks = amx_cpad(spec) // (16 * j)
                geo = replace(geo, c=max(d for d in divisors(blocks) if d * 16 * g * 16 * j * 4 <= AMX_PARTIALS))
            if geo.fits and ok:
                out[f"amx{g}x{j}"] = geo
            continue
        # a call: a task's share of the output channels (all of them, or 1/ct: whole groups of a group conv)
        # x the task's pixels
        n, m = _amx_rows(spec), _amx_tile_rows(spec)
        cpad = padded_cout(spec, fam)
        blocks = cpad // (m * g)  # row blocks
        if (cpad // spec.groups) % (m * g) or hw % (n * j):
            continue
        for ct in _amx_channel_tasks(spec, blocks):
            rows = cpad // ct
            geo = Geometry("nchw", m, n, 32, g, j, amx_kpad(spec) // 32, r=blocks // ct,
                           rpg=(cpad // spec.groups) // (m * g) if spec.groups > 1 else 0,
                           c=_amx_calls(hw // (n * j), rows * n * j * 4, -(-8 // ct)))
            if geo.fits:
                out[f"amx{g}x{j}" + (f"c{ct}" if ct > 1 else "")] = geo
    return out


# bytes of weight past which an NCHW AMX kernel also gets variants that split the channels across tasks
AMX_WEIGHT_SHARE = 2 * 1024 * 1024


def _amx_channel_tasks(spec: ConvSpec, blocks: int) -> list[int]:
    """Channel-task counts of an NCHW AMX kernel's variants: 1 (every task sweeps every output channel over its
    pixels), and where the weight outgrows L1/L2 reuse, 2, 4 or 8 tasks across the channels. Each pixel task
    otherwise streams the whole weight again: ShuffleNet V2 x2.0's 976x2048 at 7x7 (4 MB of bf16 weight, 7
    pixel tasks) took 0.45 ms on 2 Xeon cores. A group conv splits only between its groups."""
    weight = spec.cout * amx_kpad(spec) * 2
    if spec.groups > 1:
        cands = [d for d in divisors(spec.groups) if d > 1]
    else:
        cands = [d for d in (2, 4, 8) if blocks % d == 0]
    return [1] + ([d for d in cands if weight // d >= 8 * 1024] if weight > AMX_WEIGHT_SHARE else [])


def amx_cpad(spec: ConvSpec) -> int:
    """Output channels an NCHW{B}c AMX kernel computes: whole 16-channel tiles (72 -> 80; zero weights past
    ``Cout``, never stored)."""
    return -(-spec.cout // 16) * 16


AMX_PARTIALS = 16384  # bytes of float32 partial sums between a tile call and its epilogue: stays in L1


def _amx_calls(tiles: int, tile_bytes: int, tasks: int = 8) -> int:
    """Pixel tiles per call (and task) of an NCHW AMX kernel: the most whose partial sums stay in L1 while
    leaving ``tasks`` pixel tasks (8: 4 per thread of 2)."""
    fit = [t for t in divisors(tiles) if tiles // t >= tasks and t * tile_bytes <= AMX_PARTIALS]
    return max(fit) if fit else 1


def _amx_tasks(calls: int, channel_tiles: int) -> tuple[int, int]:
    """Default ``(pixel tasks, channel tasks)`` over ``calls`` pixel tiles and ``channel_tiles`` tiles of output
    channels: pixels first, up to 16 tasks (a pixel task repacks its input once for all its channels; a second
    channel task repacks it again: 576x96 at 14x14 ran 1.6x slower in 21 tasks than in 7), then channels until
    there are 4."""
    pt = max(divisors(calls, 16))
    ct = 1 if pt >= 4 else next((d for d in divisors(channel_tiles) if pt * d >= 4), channel_tiles)
    return pt, ct


def amx_pixels(spec: ConvSpec) -> int:
    """Pixels an NCHW{B}c AMX kernel computes: H*W rounded up to whole pairs of 16-row tiles (49 -> 64), so every
    tile multiply has all 16 rows and a weight tile serves two of them; the padding never reaches the output."""
    return -(-spec.h * spec.w // 32) * 32


def amx_kpad(spec: ConvSpec) -> int:
    """Input channels an AMX kernel reduces over: ``Cin/groups`` rounded up to whole 32-channel steps."""
    return -(-(spec.cin // spec.groups) // 32) * 32


def _amx_nchw(spec: ConvSpec, fam: Family) -> bool:
    return not spec.block and bool(amx_geometries(spec, fam))


def _amx_blocked(spec: ConvSpec, fam: Family) -> bool:
    return bool(spec.block) and bool(amx_geometries(spec, fam))


def variants(spec: ConvSpec, fam: Family) -> list[str]:
    """The structural variants of ``spec``'s template (each its own design space when tuning)."""
    if fam.gpu or spec.kind == "depthwise":
        return ["default"]
    amx = amx_geometries(spec, fam)
    if amx:  # tile multiplies: 8-40x the multiply-adds per instruction of vdpbf16ps
        return list(amx)
    if spec.block or bf16_dot(spec, fam):  # bf16 dot products: the channels variant's register tiles
        return ["channels", "pixels"] if _pixel_pairs(spec, fam) else ["channels"]
    if spec.kind == "dense":  # group convs: a channel vector would span groups (a gather per tap)
        return ["channels"] if spec.groups == 1 else ["columns"]
    return ["pixels", "channels"] if spec.groups == 1 or _group_vectors(spec, fam) else ["pixels"]


def _pixel_pairs(spec: ConvSpec, fam: Family) -> bool:
    """Whether a bf16 NCHW 1x1 conv also has the pixel-vector dot-product variant: its map is whole 16-pixel
    vectors and it writes its own output (no placement)."""
    return (bf16_dot(spec, fam) and not spec.block and not spec.placement and (spec.h * spec.w) % PIXEL_LANES == 0)


def default_variant(spec: ConvSpec, fam: Family) -> str:
    """Channel vectors wherever the variant exists: 1.2-3x the pixel-vector GEMM on every 1x1 conv of the
    zoo measured (7x7 to 112x112 maps, 2 Zen 3 cores), since its input-channel blocks stay in L1. Except bf16
    NCHW convs with the pixel-vector dot products (:func:`_schedule_pixel_pairs`): with their defaults 1.7-2x
    faster than the channels variant's tuned knobs (ShuffleNet V1 g3's 1x1 convs at 28x28 and 56x56, 2 Zen 4
    cores: 60->240 59.5 -> 29.9 us, 240->120 75.2 -> 41.7 us, 24->60 59.1 -> 34.5 us)."""
    vs = variants(spec, fam)
    if "pixels" in vs and _pixel_pairs(spec, fam):  # bf16 NCHW: no transposing epilogue, pairs made once a chunk
        return "pixels"
    return "channels" if "channels" in vs else vs[0]  # AMX: the most accumulator tiles first


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


def compute(spec: ConvSpec, cout_pad: int | None = None, flat: bool = True, wblock: int = 1, pairs: bool = False,
            kpad: int = 0, native_bf16: bool = False):
    """TE tensors ``(inputs, output)`` of ``spec``; inputs are data, weight, [bias], [residual], passthroughs.

    With ``flat``, pointwise kernels see data, residual, passthroughs and output as ``(N, C, H*W)`` (the
    caller reshapes, which is free) and their weight blocked as ``(Cout/B, Cin/groups, B)`` with ``B`` =
    ``wblock`` (:func:`pack_pointwise_weight`); dense kernels see ``(Cout/B, Cin/groups, KH, KW, B)`` weights
    (:func:`pack_dense_weight`) when ``wblock`` > 1; every other kind, and every kind without ``flat``, sees
    ``(N, C, H, W)`` tensors and OIHW weights. A blocked dense kernel (a stem) reads NCHW data and writes
    NCHW{B}c. With ``kpad`` (an NCHW AMX kernel, :func:`amx_kpad`), the pairs run to ``kpad`` input channels
    (zero past ``Cin/groups``) and the weight is ``(Cout, kpad)``.
    """
    from tvm import te, tirx

    # NCHW{B}c kernels store whole B-channel vectors: their bf16 rounding can be one instruction (not AMX's
    # epilogue, whose stores are vectorized over pixels)
    store_lanes = spec.block if native_bf16 and not kpad else 0
    if spec.block and spec.kind != "dense":
        return _compute_blocked(spec, pairs, kpad, store_lanes)
    kind = spec.kind if flat or spec.kind != "pointwise" else "dense"
    cpad = cout_pad or spec.cout
    dt, at = spec.dtype, spec.acc
    sp_shape = (spec.h * spec.w,) if kind == "pointwise" else (spec.h, spec.w)
    osp_shape = (spec.h * spec.w,) if kind == "pointwise" else (spec.oh, spec.ow)
    in_map = spec.in_map or ChannelMap.identity(spec.cin)
    cin_g, cout_g = spec.cin // spec.groups, spec.cout // spec.groups
    xdt = spec.in_dtype or dt  # a first conv reads the float32 image (and keeps float32 weights)
    x = te.placeholder((spec.n, spec.cin_src, *sp_shape), xdt, name="data")
    inputs = [x]
    if kind == "depthwise":
        wt = te.placeholder((spec.cout, 1, spec.kh, spec.kw), spec.weight_dtype, name="weight")
    elif kind == "pointwise":  # (Cout/B, Cin/groups, B): a tile's channel vectors stream in k order
        wt = te.placeholder((cpad // wblock, cin_g, wblock), xdt, name="weight")
    elif wblock > 1 and spec.groups == 1:  # (Cout/B, Cin, KH, KW, B): a tap's output-channel vector is one load
        wt = te.placeholder((cpad // wblock, cin_g, spec.kh, spec.kw, wblock), xdt, name="weight")
    else:
        wt = te.placeholder((cpad, cin_g, spec.kh, spec.kw), xdt, name="weight")
    inputs.append(wt)
    bias = te.placeholder((cpad,), at, name="bias") if spec.bias else None
    if bias is not None:
        inputs.append(bias)
    res = te.placeholder((spec.n, spec.cout, *osp_shape), dt, name="residual") if spec.residual else None
    if res is not None:
        inputs.append(res)

    def src_channel(co: Any, k: Any) -> Any:
        if spec.groups == 1:
            return in_map(k)
        # no clamp without padded rows: the bare division simplifies to one group per channel vector
        return in_map((co if cpad == spec.cout else te.min(co, spec.cout - 1)) // cout_g * cin_g + k)

    if kind == "pointwise" and pairs:  # input rows interleaved in pairs (per group), weights (Cout/B, Cin_g/2, B, 2)
        wt = te.placeholder((cpad // wblock, cin_g // 2, wblock, 2), dt, name="weight")
        inputs[1] = wt
        # the copy holds the bits (uint16): TVM's bf16 legalization would widen a bfloat16 buffer made inside a
        # kernel to float32, and the dot product needs the pairs as stored
        if kpad:
            wt = te.placeholder((cpad, kpad), dt, name="weight")
            inputs[1] = wt
            xp = te.compute((spec.n, spec.groups, kpad // 2, spec.h * spec.w, 2), lambda n, g, kp, p, j: tirx.if_then_else(
                kp * 2 + j < cin_g, tirx.reinterpret("uint16", x[n, in_map(g * cin_g + te.min(kp * 2 + j, cin_g - 1)), p]),
                tirx.const(0, "uint16")), name="pairs")
        else:
            xp = te.compute((spec.n, spec.groups, cin_g // 2, spec.h * spec.w, 2),
                            lambda n, g, kp, p, j: tirx.reinterpret("uint16", x[n, in_map(g * cin_g + kp * 2 + j), p]),
                            name="pairs")
        k = te.reduce_axis((0, kpad or cin_g), name="k")

        def pair_weight(c: Any, k: Any) -> Any:
            return wt[c, k] if kpad else wt[c // wblock, k // 2, c % wblock, k % 2]

        conv = te.compute(
            (spec.n, cpad, spec.h * spec.w),
            lambda n, c, p: te.sum(cast(tirx.reinterpret(dt, xp[n, c // cout_g if spec.groups > 1 else 0, k // 2, p, k % 2]),
                                        at) * cast(pair_weight(c, k), at), axis=k),
            name="conv",
        )
    elif kind == "pointwise":
        k = te.reduce_axis((0, cin_g), name="k")
        conv = te.compute(
            (spec.n, cpad, spec.h * spec.w),
            lambda n, c, p: te.sum(cast(x[n, src_channel(c, k), p], at) * cast(wt[c // wblock, k, c % wblock], at), axis=k),
            name="conv",
        )
    else:
        zero = tirx.const(0.0, xdt)
        read = padded_window(x, spec.n, spec.cin, spec.h, spec.w, spec.pad, spec.stride, zero, in_map,
                             split_phases=kind == "dense")
        rh, rw = te.reduce_axis((0, spec.kh), name="rh"), te.reduce_axis((0, spec.kw), name="rw")
        if kind == "depthwise":
            conv = te.compute(
                (spec.n, spec.cout, spec.oh, spec.ow),
                lambda n, c, i, j: te.sum(cast(read(n, c, i, j, rh, rw), at) * cast(wt[c, 0, rh, rw], at), axis=[rh, rw]),
                name="conv",
            )
        else:
            rc = te.reduce_axis((0, cin_g), name="rc")

            def grp_in(c: Any, k: Any) -> Any:
                return k if spec.groups == 1 else te.min(c, spec.cout - 1) // cout_g * cin_g + k

            def weight(c: Any, k: Any, r: Any, s: Any) -> Any:
                return wt[c // wblock, k, r, s, c % wblock] if len(wt.shape) == 5 else wt[c, k, r, s]

            conv = te.compute(
                (spec.n, cpad, spec.oh, spec.ow),
                lambda n, c, i, j: te.sum(cast(read(n, grp_in(c, rc), i, j, rh, rw), at) * cast(weight(c, rc, rh, rw), at),
                                          axis=[rc, rh, rw]),
                name="conv",
            )

    def epi_at(n: Any, c: Any, sp: tuple, lanes: int = 0) -> Any:
        return _epilogue(spec, conv[(n, c, *sp)], None if bias is None else bias[c],
                         None if res is None else res[(n, c, *sp)], lanes)

    def epi_value(n: Any, c: Any, *sp: Any) -> Any:  # te.compute takes no keyword arguments in its fcompute
        return epi_at(n, c, sp)

    pl = spec.placement
    if spec.block:  # a stem writing NCHW{B}c
        bl = spec.block
        out = te.compute((spec.n, spec.cout // bl, spec.oh, spec.ow, bl),
                         lambda n, cb, i, j, b: epi_at(n, cb * bl + b, (i, j), store_lanes), name="out")
        return inputs, out
    if spec.pool:
        if pl is not None or kind != "dense" or spec.groups != 1:
            raise ValueError("a fused max pool needs an ungrouped dense conv without a placed output")
        return inputs, _max_pool(spec, te.compute((spec.n, spec.cout, *osp_shape), epi_value, name="epilogue"))
    if pl is None:
        out = te.compute((spec.n, spec.cout, *osp_shape), epi_value, name="out")
        return inputs, out
    epi = te.compute((spec.n, spec.cout, *osp_shape), epi_value, name="epilogue")
    sources = []
    for i, ptd in enumerate(pl.passthrough):
        src = te.placeholder((spec.n, ptd.channels, *osp_shape), dt, name=f"pass{i}")
        inputs.append(src)
        sources.append((ptd, src))
    tiled = tiled_placement(spec) if kind == "pointwise" else None
    if tiled is not None:  # the output as (N, rows, parts, HW) or (N, parts, rows, HW): each part an affine read
        how, k = tiled
        parts = [pl.offset] + [ptd.offset for ptd in pl.passthrough]
        part_of = {(o if how == "interleaved" else o // spec.cout): i for i, o in enumerate(parts)}

        def part_value(n: Any, r: Any, part: Any, p: Any) -> Any:
            val = epi[n, r, p]
            for q in range(k):
                i = part_of[q]
                if i:
                    ptd, src = sources[i - 1]
                    val = tirx.if_then_else(part == q, src[n, ptd.map(r), p], val)
            return _act(pl.act, val, dt)

        if how == "interleaved":
            out = te.compute((spec.n, spec.cout, k, spec.h * spec.w), part_value, name="out")
        else:
            out = te.compute((spec.n, k, spec.cout, spec.h * spec.w), lambda n, q, r, p: part_value(n, r, q, p),
                             name="out")
        return inputs, out

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


def _max_pool(spec: ConvSpec, epi: Any) -> Any:
    """The fused max pool over the epilogue ``epi`` (``pool`` reduction, ``out`` its copy); padding is -inf."""
    from tvm import te, tirx

    k, s = spec.pool, spec.pool_stride
    top, left = spec.pool_pad[0], spec.pool_pad[1]
    rh, rw = te.reduce_axis((0, k), name="ph"), te.reduce_axis((0, k), name="pw")
    neg = tirx.min_value(spec.dtype)

    def tap(n: Any, c: Any, i: Any, j: Any) -> Any:
        r, q = i * s + rh - top, j * s + rw - left
        inside = tirx.all(r >= 0, r < spec.oh, q >= 0, q < spec.ow)
        return tirx.if_then_else(inside, epi[n, c, r, q], neg)

    shape = (spec.n, spec.cout, spec.out_h, spec.out_w)
    pooled = te.compute(shape, lambda n, c, i, j: te.max(tap(n, c, i, j), axis=[rh, rw]), name="pool")
    return te.compute(shape, lambda n, c, i, j: pooled[n, c, i, j], name="out")


def tiled_placement(spec: ConvSpec) -> tuple[str, int] | None:
    """``("interleaved", k)`` when a placed output is ``k`` parts of ``cout`` channels interleaved (channel
    ``r * k + q`` is row ``r`` of part ``q``: a channel shuffle of two branches), ``("stacked", k)`` when the parts
    are concatenated (channel ``q * cout + r``), else None. One part is the conv's rows, the others passthroughs.

    A pointwise kernel writes such an output as ``(N, cout, k, HW)`` or ``(N, k, cout, HW)`` (the same memory as
    ``(N, k * cout, HW)``), so each part reads its source at row ``r``, and the copy runs inside each parallel
    task right after the task's epilogue, on rows still in cache. As one nest of its own over the clamped
    ``(c - offset) // stride`` row it ran ShuffleNet V2's shuffling 1x1 convs at 1.3-1.5x the time of the same
    conv without a placement (116x116 at 14x14, 2 Zen 4 cores: 52 against 35 us)."""
    pl = spec.placement
    if pl is None or not pl.passthrough or any(p.length != spec.cout for p in pl.passthrough):
        return None
    k = 1 + len(pl.passthrough)
    parts = [(pl.stride, pl.offset)] + [(p.stride, p.offset) for p in pl.passthrough]
    if pl.total != k * spec.cout:
        return None
    if all(st == k for st, _ in parts) and sorted(o for _, o in parts) == list(range(k)):
        return ("interleaved", k)
    if all(st == 1 for st, _ in parts) and sorted(o for _, o in parts) == [q * spec.cout for q in range(k)]:
        return ("stacked", k)
    return None


def out_shape(spec: ConvSpec) -> tuple[int, ...]:
    """The shape of a pointwise kernel's output buffer (the flat ``(N, C, H*W)``, or its tiled placement's view)."""
    hw = spec.h * spec.w
    tiled = tiled_placement(spec)
    if tiled is None:
        return (spec.n, spec.out_channels, hw)
    return (spec.n, spec.cout, tiled[1], hw) if tiled[0] == "interleaved" else (spec.n, tiled[1], spec.cout, hw)


def blockable(spec: ConvSpec, fam: Family, block: int | None = None) -> bool:
    """Whether ``spec`` has an NCHW{B}c kernel with blocks of ``block`` channels (default: one vector): a plain
    1x1 conv or depthwise conv (no channel map, no placed output) whose channels are whole blocks, on a CPU."""
    b = block or fam.vector_lanes
    plain = (spec.placement is None and (spec.in_map is None or spec.in_map.is_identity) and spec.cin_src == spec.cin
             and not spec.pool)
    stem = spec.kind == "dense" and spec.groups == 1 and not spec.residual  # reads NCHW, writes NCHW{B}c
    return (not fam.gpu and b > 1 and plain and spec.cout % b == 0 and (stem or spec.cin % b == 0)
            and ((spec.kind == "pointwise" and spec.groups == 1) or spec.kind == "depthwise" or stem))


def _compute_blocked(spec: ConvSpec, pairs: bool = False, kpad: int = 0, store_lanes: int = 0):
    """NCHW{B}c kernels (:func:`blockable`): every tensor's channels split into blocks of ``B`` innermost, so a
    channel vector is one contiguous load or store (the layout ONNX Runtime's NCHWc kernels use). Pointwise:
    data/residual/output ``(N, C/B, H*W, B)``, weight ``(Cout/B, Cin, B)``; depthwise: ``(N, C/B, H, W, B)``,
    weight ``(C/B, KH, KW, B)``. With ``kpad`` (an AMX kernel), each call first copies its pixels' input into
    rows of 32 channels (``repack``, ``(N, kpad/32, amx_pixels, 32/B, B)`` bf16 bits, zero past ``Cin`` and H*W,
    gated by an SE scale), so a tile multiply takes 32 channels a row instead of a block's 16 or 8; the conv runs
    over ``amx_cpad`` x ``amx_pixels`` and the weight is ``(amx_cpad/16, kpad/2, 16, 2)``."""
    from tvm import te, tirx

    bl, dt, at, n = spec.block, spec.dtype, spec.acc, spec.n
    pw = spec.kind == "pointwise"
    sp = (spec.h * spec.w,) if pw else (spec.h, spec.w)
    osp = (spec.h * spec.w,) if pw else (spec.oh, spec.ow)
    x = te.placeholder((n, spec.cin // bl, *sp, bl), dt, name="data")
    if pw and pairs and kpad:  # 16-channel weight tiles whatever the data's block
        wt = te.placeholder((amx_cpad(spec) // 16, kpad // 2, 16, 2), dt, name="weight")
    elif pw and pairs:
        wt = te.placeholder((spec.cout // bl, spec.cin // 2, bl, 2), dt, name="weight")
    elif pw:
        wt = te.placeholder((spec.cout // bl, spec.cin, bl), dt, name="weight")
    else:
        wt = te.placeholder((spec.cout // bl, spec.kh, spec.kw, bl), spec.weight_dtype, name="weight")
    inputs = [x, wt]
    bias = te.placeholder((spec.cout,), at, name="bias") if spec.bias else None
    res = te.placeholder((n, spec.cout // bl, *osp, bl), dt, name="residual") if spec.residual else None
    scale = te.placeholder((n, spec.cin), dt, name="scale") if spec.in_scale else None
    inputs += [t for t in (bias, res, scale) if t is not None]
    gated = None
    if kpad:
        def bits(nn: Any, kb: Any, p: Any, lane: Any) -> Any:  # whole blocks: a block's lanes are one load
            kb = te.min(kb, spec.cin // bl - 1)
            v = x[nn, kb, p, lane]
            if scale is None:
                return tirx.reinterpret("uint16", v)
            return _bf16_bits(cast(v, at) * cast(scale[nn, kb * bl + lane], at))

        # (N, kpad/32, H*W, 32/B, B): the same memory as rows of 32 channels
        hw, nb = spec.h * spec.w, 32 // bl
        packed = te.compute((n, kpad // 32, amx_pixels(spec), nb, bl), lambda nn, kb, p, h, lane: tirx.if_then_else(
            tirx.all(kb * nb + h < spec.cin // bl, p < hw), bits(nn, kb * nb + h, te.min(p, hw - 1), lane),
            tirx.const(0, "uint16")), name="repack")
        k = te.reduce_axis((0, kpad), name="k")
        conv = te.compute((n, amx_cpad(spec), amx_pixels(spec)), lambda nn, c, p: te.sum(
            cast(tirx.reinterpret(dt, packed[nn, k // 32, p, k % 32 // bl, k % bl]), at)
            * cast(wt[c // 16, k // 2, c % 16, k % 2], at), axis=k), name="conv")

        def out_amx(nn: Any, cb: Any, p: Any, b: Any) -> Any:
            return _epilogue(spec, conv[nn, cb * bl + b, p], None if bias is None else bias[cb * bl + b],
                             None if res is None else res[nn, cb, p, b])

        return inputs, te.compute((n, spec.cout // bl, spec.h * spec.w, bl), out_amx, name="out")
    if pw and pairs and scale is not None:  # the gate applied to the task's input chunk first, kept as bf16 bits
        gated = te.compute((n, spec.cin // bl, spec.h * spec.w, bl), lambda nn, kb, p, b: _bf16_bits(
            cast(x[nn, kb, p, b], at) * cast(scale[nn, kb * bl + b], at)), name="pairs")
    if pw:
        def read(nn: Any, k: Any, p: Any) -> Any:
            if gated is not None:
                return cast(tirx.reinterpret(dt, gated[nn, k // bl, p, k % bl]), at)
            v = cast(x[nn, k // bl, p, k % bl], at)
            return v * cast(scale[nn, k], at) if scale is not None else v

        def weight(c: Any, k: Any) -> Any:
            return wt[c // bl, k // 2, c % bl, k % 2] if pairs else wt[c // bl, k, c % bl]

        k = te.reduce_axis((0, spec.cin), name="k")
        conv = te.compute((n, spec.cout, spec.h * spec.w),
                          lambda nn, c, p: te.sum(read(nn, k, p) * cast(weight(c, k), at), axis=k), name="conv")

        def acc(nn: Any, cb: Any, p: Any, b: Any) -> Any:
            return conv[nn, cb * bl + b, p]
    else:
        t, left, bot, r = spec.pad
        zero = tirx.const(0.0, dt)
        xp = te.compute((n, spec.cin // bl, spec.h + t + bot, spec.w + left + r, bl),
                        lambda nn, cb, i, j, b: tirx.if_then_else(
                            tirx.all(i >= t, i < t + spec.h, j >= left, j < left + spec.w),
                            x[nn, cb, i - t, j - left, b], zero), name="pad")
        rh, rw = te.reduce_axis((0, spec.kh), name="rh"), te.reduce_axis((0, spec.kw), name="rw")
        s = spec.stride
        conv = te.compute((n, spec.cout // bl, spec.oh, spec.ow, bl),
                          lambda nn, cb, i, j, b: te.sum(cast(xp[nn, cb, i * s + rh, j * s + rw, b], at) * cast(wt[cb, rh, rw, b], at),
                                                         axis=[rh, rw]), name="conv")

        def acc(nn: Any, cb: Any, i: Any, j: Any, b: Any) -> Any:
            return conv[nn, cb, i, j, b]

    def out_value(*idx: Any) -> Any:
        cb, b = idx[1], idx[-1]
        return _epilogue(spec, acc(*idx), None if bias is None else bias[cb * bl + b],
                         None if res is None else res[idx], store_lanes)

    out = te.compute((n, spec.cout // bl, *osp, bl), out_value, name="out")
    return inputs, out


def pack_weight(spec: ConvSpec, w: Any, cpad: int, fam: Family) -> Any:
    """The OIHW weight ``w`` of ``spec`` laid out as its kernel on ``fam`` reads it (``cpad`` rows, see
    :func:`padded_cout`; a blocked kernel's block is ``spec.block``)."""
    block = spec.block or weight_block(kernel_family(spec, fam))
    if _amx_nchw(spec, kernel_family(spec, fam)):  # (Cout, kpad): a tile's rows are output channels
        import numpy as np

        full = pad_rows(np.asarray(w).reshape(w.shape[0], -1), cpad)
        return np.pad(full, ((0, 0), (0, amx_kpad(spec) - full.shape[1])))
    if _amx_blocked(spec, kernel_family(spec, fam)):  # pairs over input channels padded to whole steps
        import numpy as np

        w = np.asarray(w).reshape(w.shape[0], -1)
        return pack_pairs_weight(np.pad(w, ((0, 0), (0, amx_kpad(spec) - w.shape[1]))), amx_cpad(spec), 16)
    if bf16_dot(spec, kernel_family(spec, fam)):
        return pack_pairs_weight(w, cpad, block)
    if spec.kind == "pointwise":
        return pack_pointwise_weight(w, cpad, block)
    if spec.kind == "depthwise" and spec.block:
        return pack_depthwise_weight(w, block)
    if spec.kind == "dense" and spec.groups == 1 and block > 1:
        return pack_dense_weight(w, cpad, block)
    return pad_rows(w, cpad)


def pack_dense_weight(w: Any, cpad: int, block: int) -> Any:
    """OIHW -> ``(cpad/B, I, KH, KW, B)``, rows past ``O`` zero: a tap's weights for a vector of output channels
    are one load (the dense template's ``channels`` variant; the ``columns`` variant broadcasts them)."""
    import numpy as np

    full = pad_rows(w, cpad)
    return np.ascontiguousarray(full.reshape(cpad // block, block, *full.shape[1:]).transpose(0, 2, 3, 4, 1))


def pack_depthwise_weight(w: Any, block: int) -> Any:
    """``(C, 1, KH, KW)`` -> ``(C/B, KH, KW, B)``: a tap's weights for a channel block are one vector."""
    import numpy as np

    w = np.asarray(w)
    c, _, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(c // block, block, kh, kw).transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------------------------- schedules
# Every knob's answer is used only inside the schedule (split factors): under a tuner it is a random variable.


def _schedule_placement(sch: Any, lanes: int) -> None:
    """The copy nest of a placed output: parallel over channels, vectors over pixels."""
    blk = sch.get_sblock("out")
    loops = sch.get_loops(blk)
    outer = sch.fuse(*loops[:2])
    inner = sch.fuse(*loops[2:]) if len(loops) > 3 else loops[2]
    sch.parallel(outer)
    _vectorize_tail(sch, inner, lanes)


def _vectorize_tail(sch: Any, loop: Any, lanes: int) -> None:
    """Vectorize a loop whose extent the spec fixes (never one a knob sizes)."""
    extent = int(sch.get(loop).extent)
    vec = vector_width(extent, lanes)
    if vec <= 1:
        return
    if vec == extent:
        sch.vectorize(loop)
        return
    _, vi = sch.split(loop, [None, vec])
    sch.vectorize(vi)


def _vectorize_innermost(sch: Any, block: Any, below: Any) -> None:
    """Vectorize ``block``'s innermost loop under the loop ``below``, if it has one: a sampled factor of 1
    leaves no loop there, and the loop above it must keep its other blocks."""
    loops = sch.get_loops(block)
    at = sch.get(below)
    idx = next((i for i, lp in enumerate(loops) if sch.get(lp).same_as(at)), None)
    if idx is not None and idx + 1 < len(loops):
        sch.vectorize(loops[-1])


def _pixels_defaults(spec: ConvSpec, fam: Family, cpad: int) -> tuple[int, list[int]]:
    """About 16 accumulators on 32-register ISAs (8 channels x 2 vectors), 12 on 16-register ones (6 x 2):
    each weight broadcast feeds two FMAs and nothing spills (a sweep of both knobs on 8 shapes)."""
    hw, lanes = spec.h * spec.w, fam.vector_lanes
    co = 8 if fam.vector_registers >= 32 else 6
    vec = vector_width(hw, lanes)
    nv = 2 if (hw // vec) % 2 == 0 else 1
    return co, [hw // (vec * nv), vec * nv]


def _channels_candidates(spec: ConvSpec, fam: Family, cpad: int) -> dict[str, list[int]]:
    """The channels variant's choice knobs for ``spec`` (``pw.pixels`` is a perfect 3-way tile)."""
    cin_g = spec.cin // spec.groups
    vectors = cpad // fam.vector_lanes if spec.groups == 1 else spec.cout // spec.groups // fam.vector_lanes
    # NCHW{B}c: whole input channel blocks, so a block's B steps unroll with constant offsets (a partial block
    # recomputes k // B and k % B every step: ~7 integer ops per B FMAs, 0-35% slower on MobileNet's shapes)
    step = spec.block or (2 if bf16_dot(spec, fam) else 1)  # bf16 dot products take input channels in pairs
    return {  # a tile of channel vectors stays inside one group
        # 32 registers hold up to 8 channel vectors x 2-3 pixels (16 registers: at most 4 x 2)
        "pw.c_vectors": divisors(vectors, 8 if fam.vector_registers >= 32 else 4),
        "pw.k_block": [d for d in divisors(cin_g) if 4 <= d <= 256 and d % step == 0] or [cin_g],
    }


def _channels_defaults(spec: ConvSpec, fam: Family, cpad: int, cands: dict[str, list[int]]) -> dict[str, Any]:
    """The register tile with the most accumulators that fits beside its weight vectors and a broadcast
    (16 registers: 2 channel vectors x 4 pixels, 3 x 4, or 1 x 7 on 7x7 maps), input channels in blocks of at
    most 64 (a block's input rows and weights stay in L1 while the tile sweeps the chunk), chunks of at most
    16 KiB of partial sums and at least 16 tasks where the map allows. Measured on 2 Zen 3 cores: 110-160
    GFLOP/s on 512x512 at 14x14, 1024x1024 at 7x7, 128x128 at 56x56, against 60-80 for one unblocked pass over
    all input channels; pixel tiles that do not divide the map (a predicated last tile) ran 2-4x slower, so
    every split is perfect."""
    hw, lanes, regs = spec.h * spec.w, fam.vector_lanes, fam.vector_registers
    tiles = [(cv, pp) for cv in cands["pw.c_vectors"] for pp in divisors(hw, 8) if cv * pp + cv + 1 <= regs]
    cv, pp = max(tiles, key=lambda t: (t[0] * t[1], t[0] == 2, -t[0]))
    kbs = [d for d in cands["pw.k_block"] if d <= 64]
    cin_g = spec.cin // spec.groups
    kb = max(kbs) if kbs and max(kbs) >= 16 else (cin_g if cin_g <= 256 else max(kbs or [4]))
    co_tiles = cpad // (cv * lanes)
    chunks = [m for m in divisors(hw // pp) if m * pp * cv * lanes * 4 <= 16384] or [1]
    m = next((c for c in sorted(chunks, reverse=True) if co_tiles * (hw // (c * pp)) >= 16), min(chunks))
    return {"pw.c_vectors": cv, "pw.k_block": kb, "pw.pixels": [hw // (m * pp), m, pp]}


def _schedule_amx(sch: Any, spec: ConvSpec, fam: Family, decide: Decider, variant: str) -> None:
    """NCHW{B}c bf16 1x1 conv on AMX tiles: tasks over pixels (and channels); each call repacks its pixels' input,
    then per group of channel blocks accumulates over all input channels in tile registers (:mod:`amx`) and runs
    the epilogue on those partial sums."""
    from .amx import llvm_ir, register, split_names

    geo = amx_geometries(spec, fam)[variant]
    if geo.layout == "nchw":
        return _schedule_amx_nchw(sch, spec, geo, decide)
    conv = sch.get_sblock("conv")
    epi = sch.get_sblock("out")
    n, c, p, k = sch.get_loops(conv)
    calls, channel_tiles = amx_pixels(spec) // geo.rows, amx_cpad(spec) // geo.cols
    p_dflt, c_dflt = _amx_tasks(calls, channel_tiles)
    p_tasks = decide.choose(KNOBS["amx.p_tasks"], divisors(calls), p_dflt)
    c_tasks = decide.choose(KNOBS["amx.c_tasks"], divisors(channel_tiles), c_dflt)
    ct, co, cl = sch.split(c, [c_tasks, None, geo.cols])
    pt, pc, pi = sch.split(p, [p_tasks, None, geo.rows])
    sch.reorder(n, ct, pt, pc, co, pi, cl, k)
    outer = sch.fuse(n, ct, pt)
    sch.parallel(outer)
    # a call's pixels repacked once for every channel tile, and its epilogue on partial sums still in L1
    packed = sch.get_sblock("repack")
    sch.compute_at(packed, pc, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(packed)[-1])
    sch.reverse_compute_at(epi, co, preserve_unit_loops=True)
    sch.transform_layout(conv, ("write", 0), lambda nn, cc, pq: (nn, pq, cc))
    register(geo)
    zero, acc = split_names(geo)
    init = sch.decompose_reduction(conv, pi)  # the init as a no-op: the micro-kernel zeroes its tiles
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(pi, acc)
    sch.annotate(outer, "pragma_import_llvm", llvm_ir(geo))
    _vectorize_innermost(sch, epi, co)


def _schedule_amx_nchw(sch: Any, spec: ConvSpec, geo: Any, decide: Decider) -> None:
    """NCHW bf16 1x1 conv on AMX tiles: tasks are chunks of pixels (times 1/ct of the output channels, variant
    ``...c{ct}``); each pairs its input rows once, then sweeps its output-channel tiles over them; the epilogue
    (and a placed output's copy) per task."""
    from .amx import llvm_ir, register, split_names

    conv = sch.get_sblock("conv")
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, p, k = sch.get_loops(conv)
    co, ci = sch.split(c, [None, geo.rows])  # co: the channel tasks (one, unless the variant splits them)
    pc, pi = sch.split(p, [None, geo.cols])
    sch.reorder(n, co, pc, ci, pi, k)
    outer = sch.fuse(n, co, pc)
    sch.parallel(outer)
    sch.reverse_compute_at(epi, outer, preserve_unit_loops=True)
    packed = sch.get_sblock("pairs")
    sch.compute_at(packed, outer, preserve_unit_loops=True)
    sch.unroll(sch.get_loops(packed)[-1])
    register(geo)
    zero, acc = split_names(geo)
    init = sch.decompose_reduction(conv, ci)  # the init as a no-op: the micro-kernel zeroes its tiles
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(ci, acc)
    sch.annotate(outer, "pragma_import_llvm", llvm_ir(geo))
    # a channel's pixels of the task as one vector of up to 32: LLVM splits a 14-lane one as 8 + 4 + 2 loads and
    # stores, a 28-lane one as 16 + 8 + 4 (ShuffleNet V1 g3's 120x480 at 14x14: 37 -> 33 us on 2 Xeon cores)
    vec = max(divisors(geo.cols, 32))
    tiled = tiled_placement(spec)
    if tiled:  # the parts copied in each task right after its epilogue
        out = sch.get_sblock("out")
        sch.reverse_compute_at(out, outer, preserve_unit_loops=True)
        loops = sch.get_loops(out)
        sch.unroll(loops[-2] if tiled[0] == "interleaved" else loops[-3])
        _, pv = sch.split(loops[-1], [None, vec])
        sch.vectorize(pv)
    elif spec.placement:
        _schedule_placement(sch, 16)
    eloops = sch.get_loops(epi)
    _, ev = sch.split(eloops[-1], [None, vec])
    sch.vectorize(ev)


PIXEL_LANES = 16  # pixels per vdpbf16ps of the pixel-vector variant (a zmm register of pairs)


def _schedule_pixel_pairs(sch: Any, spec: ConvSpec, cpad: int, decide: Decider) -> None:
    """NCHW bf16 1x1 conv with pixel vectors (:func:`_pixel_pairs`): each ``vdpbf16ps`` takes 16 pixels' input
    pairs (the paired rows are ``(pairs, pixels, 2)``: one load) and one weight pair as an embedded broadcast,
    so accumulators are output rows of 16 pixels and the epilogue stores them as they are. A task is one group's
    rows by a chunk of pixels: it pairs its chunk's input once, then sweeps register tiles of ``pw.co_tile`` rows
    x ``pw.p_split``'s vectors over all the group's input pairs. The channels variant, whose accumulators are
    channel vectors, transposes them back to NCHW with gathers in its epilogue and pairs a group's rows in every
    channel task."""
    from .intrinsics import BF16_DOT_LLVM, bf16_dot_intrin, register

    conv, epi = sch.get_sblock("conv"), sch.get_sblock("out")
    n, c, p, k = sch.get_loops(conv)
    rows = cpad if spec.groups == 1 else spec.cout // spec.groups  # a task's rows stay inside one group
    vecs = spec.h * spec.w // PIXEL_LANES
    # at most 16 rows by 4 vectors, as every template's register tile (bigger unrolled ones take LLVM minutes)
    tiles = [(r, v) for r in divisors(rows, 16) for v in divisors(vecs, 4) if r * v + v + 1 <= 32]
    r_d, v_d = max(tiles, key=lambda t: (min(t[0] * t[1], 24), t[1]))
    co_t = decide.choose(KNOBS["pw.co_tile"], sorted({r for r, _ in tiles}), r_d)
    # the fewest tiles per task that still leave at most 24 tasks: enough to balance two threads, and each task
    # pairs its chunk's input once
    chunk = next((d for d in divisors(vecs // v_d) if spec.groups * (vecs // v_d // d) <= 24), vecs // v_d)
    cg, cq = sch.split(c, [None, rows])
    ct, cr = sch.split(cq, [None, co_t])  # a sampled factor: traces keep no expressions of one
    pq, pl = sch.split(p, [None, PIXEL_LANES])
    pt, pm, pv = sch.split(pq, decide.tile(sch, pq, KNOBS["pw.p_split"], 3, 4, [vecs // v_d // chunk, chunk, v_d]))
    kp, kj = sch.split(k, [None, 2])
    sch.reorder(n, cg, pt, ct, pm, kp, cr, pv, pl, kj)
    outer = sch.fuse(n, cg, pt)
    sch.parallel(outer)
    packed = sch.get_sblock("pairs")
    sch.compute_at(packed, outer, preserve_unit_loops=True)
    sch.unroll(sch.get_loops(packed)[-1])
    sch.reverse_compute_at(epi, pm, preserve_unit_loops=True)
    init = sch.decompose_reduction(conv, kp)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(cr)
    sch.unroll(pv)
    register()
    sch.tensorize(pl, bf16_dot_intrin(PIXEL_LANES, vector_bits=True))
    sch.annotate(outer, "pragma_import_llvm", BF16_DOT_LLVM)
    _vectorize_tail(sch, sch.get_loops(epi)[-1], PIXEL_LANES)


def _schedule_pointwise(sch: Any, spec: ConvSpec, fam: Family, cpad: int, decide: Decider, variant: str) -> None:
    if variant.startswith("amx"):
        return _schedule_amx(sch, spec, fam, decide, variant)
    if variant == "pixels" and bf16_dot(spec, fam):
        return _schedule_pixel_pairs(sch, spec, cpad, decide)
    lanes = fam.vector_lanes
    conv = sch.get_sblock("conv")
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, p, k = sch.get_loops(conv)
    hw = spec.h * spec.w
    if variant == "channels":
        # GEMM-style: a register tile of channel vectors x broadcast pixels accumulates one block of input
        # channels, sweeping a chunk of pixels whose partial sums stay in L1; tasks are (channel tile, chunk).
        cands = _channels_candidates(spec, fam, cpad)
        dflt = _channels_defaults(spec, fam, cpad, cands)
        cv = decide.choose(KNOBS["pw.c_vectors"], cands["pw.c_vectors"], dflt["pw.c_vectors"])
        kb = decide.choose(KNOBS["pw.k_block"], cands["pw.k_block"], dflt["pw.k_block"])
        co, cvo, cl = sch.split(c, [None, cv, lanes])
        pix = decide.tile(sch, p, KNOBS["pw.pixels"], 3, 16, dflt["pw.pixels"])
        pc, po, pi = sch.split(p, pix)
        ko, ki = sch.split(k, [None, kb])
        sch.reorder(n, co, pc, ko, po, ki, pi, cvo, cl)
        pairs = bf16_dot(spec, fam)
        if spec.block:
            _, k_lane = sch.split(ki, [None, spec.block])
            if pairs:  # a pair of input channels is one dot product per lane, innermost
                k_lane, k_pair = sch.split(k_lane, [None, 2])
                sch.reorder(k_lane, pi, cvo, cl, k_pair)
            sch.unroll(k_lane)
        elif pairs:
            _, k_pair = sch.split(ki, [None, 2])
            sch.reorder(pi, cvo, cl, k_pair)
        outer = sch.fuse(n, co, pc)
        sch.parallel(outer)
        sch.reverse_compute_at(epi, outer, preserve_unit_loops=True)
        if pairs and (not spec.block or spec.in_scale):  # the task's input rows of this k block: paired, or gated
            packed = sch.get_sblock("pairs")
            sch.compute_at(packed, ko, preserve_unit_loops=True)
            *_, pp_, jj = sch.get_loops(packed)
            if spec.block:  # gated: a channel vector at a time
                sch.vectorize(jj)
            else:  # the pixel loop's extent is a sampled tile: left to LLVM's loop vectorizer, so the trace's
                # instructions never depend on a knob's value (the tuner reads knobs back from them)
                sch.unroll(jj)
        # partial sums channel-minor, so a channel vector is one register
        sch.transform_layout(conv, ("write", 0), lambda nn, cc, pq: (nn, pq, cc))
        sch.unroll(pi)
        sch.unroll(cvo)
        if not pairs:
            sch.vectorize(cl)
        init = sch.decompose_reduction(conv, ko)
        if pairs:
            from .intrinsics import BF16_DOT_LLVM, bf16_dot_intrin, register

            register()
            sch.tensorize(cl, bf16_dot_intrin(lanes, bits=not spec.block or spec.in_scale))
            sch.annotate(outer, "pragma_import_llvm", BF16_DOT_LLVM)
        _vectorize_innermost(sch, init, outer)
        if spec.block:  # the epilogue stores whole channel vectors
            _vectorize_innermost(sch, epi, outer)
    else:
        co_d, split_d = _pixels_defaults(spec, fam, cpad)
        # Register tiles stay small (at most 16 channels x 4 vectors): unrolled bigger ones take LLVM minutes.
        # With groups, a tile inside one group reads one input row per k; a tile across a group boundary makes
        # every row's input index a division at run time (measured 5x slower on ShuffleNet V1 g3).
        tiles = [d for d in divisors(cpad, 16) if spec.groups == 1 or (spec.cout // spec.groups) % d == 0]
        co_t = decide.choose(KNOBS["pw.co_tile"], tiles or [1], co_d)
        factors = decide.tile(sch, p, KNOBS["pw.p_split"], 2, 4 * lanes, split_d)
        co, ci = sch.split(c, [None, co_t])
        po, pv = sch.split(p, factors)
        sch.reorder(n, co, po, k, ci, pv)
        outer = sch.fuse(n, co, po)
        sch.parallel(outer)
        pix = factors
        _finish_register_tile(sch, conv, epi, outer, [ci], pv, k, factors[-1])
    tiled = tiled_placement(spec)
    if tiled:  # the parts copied in each task right after its epilogue, a register tile's pixels a vector
        out = sch.get_sblock("out")
        sch.reverse_compute_at(out, outer, preserve_unit_loops=True)
        loops = sch.get_loops(out)
        sch.unroll(loops[-2] if tiled[0] == "interleaved" else loops[-3])
        _, pv = sch.split(loops[-1], [None, pix[-1]])
        sch.vectorize(pv)
    elif spec.placement:
        _schedule_placement(sch, lanes)


def _finish_register_tile(sch: Any, conv: Any, epi: Any, at: Any, unrolled: list, vec: Any, reduce_loop: Any,
                          lanes: Any) -> None:
    """The accumulator tile in registers: epilogue at ``at``, ``unrolled`` loops unrolled, ``vec`` vectorized
    (``lanes`` wide: the same factor, possibly a sampled one, splits the epilogue's vectors)."""
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(epi, at, preserve_unit_loops=True)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vec)
    init = sch.decompose_reduction(conv, reduce_loop)
    _vectorize_innermost(sch, init, at)
    loops = sch.get_loops(epi)
    if not sch.get(loops[-1]).same_as(sch.get(at)):
        _, ev = sch.split(loops[-1], [None, lanes])
        sch.vectorize(ev)


def schedule_window(sch: Any, acc: Any, out: Any, pad: Any, vec: Any, lanes: int) -> None:
    """Depthwise convs and pools: threads over planes, the padded plane per thread, ``vec`` output columns
    per vector (a divisor of the output width). ``acc`` is the window reduction (in registers), ``out`` its
    epilogue."""
    n, c, i, j, rh, rw = sch.get_loops(acc)
    jo, ji = sch.split(j, [None, vec])
    sch.reorder(n, c, i, jo, rh, rw, ji)
    outer = sch.fuse(n, c)
    sch.parallel(outer)
    sch.compute_at(pad, outer, preserve_unit_loops=True)
    _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    _window_tile(sch, acc, out, jo, [rh, rw], ji)


def _window_tile(sch: Any, acc: Any, out: Any, at: Any, unrolled: list, vec: Any) -> None:
    """A window reduction's register tile under ``at``: sums in registers, ``unrolled`` loops (the taps first)
    unrolled, ``vec`` vectorized, the epilogue stored right after the tile."""
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(out, at, preserve_unit_loops=True)
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vec)
    init = sch.decompose_reduction(acc, unrolled[0])
    _vectorize_innermost(sch, init, at)
    _vectorize_innermost(sch, out, at)


def window_vec(decide: Decider, knob: Knob, ow: int, lanes: int, stride: int = 1) -> Any:
    """The ``dw.vec`` / ``pool.vec`` decision: a divisor of the output width, at most two vectors.

    Default: whole vectors where some divide the row (16 or 8 lanes on AVX2), else, at stride 1,
    the widest divisor up to two vectors (14 on 14- and 28-wide rows: LLVM splits a 14-lane vector as 8 + 4 +
    2, a 7-lane one as 4 + 2 + 1; about 10% faster measured), else the widest up to one vector (strided rows
    read two input vectors per output vector: 14 lanes ran slower than 7 at stride 2)."""
    cands = divisors(ow, 2 * lanes)
    whole = [c for c in cands if c % lanes == 0]
    return decide.choose(knob, cands, max(whole or [c for c in cands if c <= (2 * lanes if stride == 1 else lanes)]))


def schedule_gpu_outputs(sch: Any, out: Any, acc: Any, threads: Any) -> None:
    """CUDA: one thread per output element, ``threads`` per block, the reduction in a register."""
    fused = sch.fuse(*sch.get_loops(out))
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.set_scope(acc, 0, "local")
    sch.compute_at(acc, tx)


def gpu_threads(decide: Decider) -> Any:
    return decide.choose(GPU_THREADS, list(GPU_THREAD_CHOICES), 256)


def _schedule_depthwise(sch: Any, spec: ConvSpec, fam: Family, decide: Decider) -> None:
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    vec = window_vec(decide, KNOBS["dw.vec"], spec.ow, fam.vector_lanes, spec.stride)
    schedule_window(sch, sch.get_sblock("conv"), epi, sch.get_sblock("pad"), vec, fam.vector_lanes)
    if spec.placement:
        _schedule_placement(sch, fam.vector_lanes)


def _schedule_depthwise_blocked(sch: Any, spec: ConvSpec, fam: Family, decide: Decider) -> None:
    """NCHW{B}c depthwise: threads over channel blocks, a register tile of ``dw.cols`` output columns x one
    channel vector (its taps' weight vectors reused across the columns), the padding inlined as a bounds
    check per tap (a padded copy of each block's plane made stride-2 and 7x7 maps 2x slower, measured)."""
    conv, out, pad = sch.get_sblock("conv"), sch.get_sblock("out"), sch.get_sblock("pad")
    n, cb, i, j, b, rh, rw = sch.get_loops(conv)
    taps = spec.kh * spec.kw
    fits = [d for d in divisors(spec.ow, 8) if d + min(taps, 9) <= fam.vector_registers] or [1]
    cols = decide.choose(KNOBS["dw.cols"], divisors(spec.ow, 8), max(fits))
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(n, cb, i, jo, rh, rw, ji, b)
    outer = sch.fuse(n, cb)
    sch.parallel(outer)
    sch.compute_inline(pad)
    _window_tile(sch, conv, out, jo, [rh, rw, ji], b)


def _schedule_dense_channels(sch: Any, spec: ConvSpec, fam: Family, cpad: int, decide: Decider) -> None:
    """A register tile of ``dense.c_vectors`` output-channel vectors x ``dense.cols`` output columns: per tap,
    one broadcast per column and one weight vector per channel vector. The padding is inlined as a bounds
    check per input read: the padded (phase-split) copy of the image is a pass of its own and made the 224x224
    stems 1.3-2.7x slower (2 Zen 4 cores). Measured there: 3->32 s2 110 us (NCHW16c out) against 240 us for
    the ``columns`` variant tuned, 3->24 s2 130 us with NCHW output against 230."""
    lanes, regs = fam.vector_lanes, fam.vector_registers
    conv, pad = sch.get_sblock("conv"), sch.get_sblock("pad")
    cv = decide.choose(KNOBS["dense.c_vectors"], divisors(cpad // lanes, 8 if regs >= 32 else 4), 1)
    cols = decide.choose(KNOBS["dense.cols"], divisors(spec.ow, 16), max(divisors(spec.ow, 8)))
    if spec.pool:
        _schedule_dense_pooled(sch, spec, fam, decide, cv, cols)
        return
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, i, j, rc, rh, rw = sch.get_loops(conv)
    co, cvo, cl = sch.split(c, [None, cv, lanes])
    jo, ji = sch.split(j, [None, cols])
    sch.reorder(n, co, i, jo, rc, rh, rw, ji, cvo, cl)
    outer = sch.fuse(n, co, i)
    sch.parallel(outer)
    sch.compute_inline(pad)
    sch.transform_layout(conv, ("write", 0), lambda nn, cc, ii, jj: (nn, ii, jj, cc))  # a channel vector: a register
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(epi, jo, preserve_unit_loops=True)
    for loop in (rh, rw, ji, cvo):
        sch.unroll(loop)
    sch.vectorize(cl)
    init = sch.decompose_reduction(conv, rc)
    _vectorize_innermost(sch, init, outer)
    if not spec.block:  # NCHW: each channel's columns are consecutive (NCHW{B}c: whole channel vectors)
        sch.unroll(sch.get_loops(epi)[-3])
    _vectorize_innermost(sch, epi, outer)
    if spec.placement:
        _schedule_placement(sch, lanes)


def _schedule_dense_pooled(sch: Any, spec: ConvSpec, fam: Family, decide: Decider, cv: Any, cols: Any) -> None:
    """A stem with its max pool (ShuffleNet's 3x3 s2 after the first conv) in one kernel: a task is
    (channel tile, ``dense.pool_rows`` pooled rows); it computes the conv rows under them (the channels
    variant's register tiles) into a buffer of its own, channel-minor, and pools that buffer from cache with
    channel vectors (every tap one contiguous load; the NCHW pool's stride-2 column vectors are gathers).
    Apart, the stem wrote 1.2 MB (24 x 112 x 112) that the pool read back: 0.25 + 0.08 ms in ShuffleNet V2
    x1.0 on 2 Zen 4 cores. The ``k - s`` conv rows two neighbouring tasks share are computed twice."""
    lanes = fam.vector_lanes
    conv, epi = sch.get_sblock("conv"), sch.get_sblock("epilogue")
    poolb, out = sch.get_sblock("pool"), sch.get_sblock("out")
    sch.compute_inline(sch.get_sblock("pad"))
    tasks_rows = [d for d in divisors(spec.out_h) if spec.out_h // d >= 4] or [1]
    rows = decide.choose(KNOBS["dense.pool_rows"], divisors(spec.out_h), max(tasks_rows))
    n, c, i, j, rh, rw = sch.get_loops(poolb)
    co, cvo, cl = sch.split(c, [None, cv, lanes])
    io, ii = sch.split(i, [None, rows])
    sch.reorder(n, co, io, ii, j, cvo, rh, rw, cl)
    outer = sch.fuse(n, co, io)
    sch.parallel(outer)
    sch.compute_at(epi, outer, preserve_unit_loops=True)
    sch.transform_layout(epi, ("write", 0), lambda nn, cc_, ii_, jj: (nn, ii_, jj, cc_))
    en, ec, ei, ej = sch.get_loops(epi)[-4:]
    ejo, eji = sch.split(ej, [None, cols])
    ecv, ecl = sch.split(ec, [None, lanes])
    sch.reorder(en, ei, ejo, eji, ecv, ecl)
    sch.compute_at(conv, ejo, preserve_unit_loops=True)
    cn, cc, ci, cj, rc, kh, kw = sch.get_loops(conv)[-7:]
    ccv, ccl = sch.split(cc, [None, lanes])
    sch.reorder(cn, ci, rc, kh, kw, cj, ccv, ccl)
    sch.transform_layout(conv, ("write", 0), lambda nn, cc_, ii_, jj: (nn, ii_, jj, cc_))
    sch.set_scope(conv, 0, "local")
    for loop in (kh, kw, cj, ccv):
        sch.unroll(loop)
    sch.vectorize(ccl)
    init = sch.decompose_reduction(conv, rc)
    _vectorize_innermost(sch, init, ejo)
    sch.unroll(eji)
    sch.unroll(ecv)
    sch.vectorize(ecl)
    sch.set_scope(poolb, 0, "local")
    sch.reverse_compute_at(out, j, preserve_unit_loops=True)
    for loop in (cvo, rh, rw):
        sch.unroll(loop)
    sch.vectorize(cl)
    init = sch.decompose_reduction(poolb, rh)
    sch.vectorize(sch.get_loops(init)[-1])
    oc = sch.get_loops(out)[-3]  # the channel loop: one vector per channel block, stored as a scatter
    ocv, ocl = sch.split(oc, [None, lanes])
    sch.unroll(ocv)
    sch.vectorize(ocl)


def _schedule_dense(sch: Any, spec: ConvSpec, fam: Family, cpad: int, decide: Decider, variant: str) -> None:
    if variant == "channels":
        _schedule_dense_channels(sch, spec, fam, cpad, decide)
        return
    lanes = fam.vector_lanes
    conv = sch.get_sblock("conv")
    pad = sch.get_sblock("pad")
    epi = sch.get_sblock("epilogue" if spec.placement else "out")
    n, c, i, j, rc, rh, rw = sch.get_loops(conv)
    co_t = decide.choose(KNOBS["dense.co_tile"], divisors(cpad, 16), 6 if fam.vector_registers >= 32 else 4)
    factors = decide.tile(sch, j, KNOBS["dense.ow_split"], 2, 4 * lanes, default_tile(spec.ow, 2, lanes))
    co, ci = sch.split(c, [None, co_t])
    jo, jv = sch.split(j, factors)
    sch.reorder(n, co, i, jo, rc, rh, rw, ci, jv)
    outer = sch.fuse(n, co, i)
    sch.parallel(outer)
    pl = sch.get_loops(pad)
    sch.parallel(sch.fuse(*pl[:2]))
    if spec.stride == 1:  # the phase-split copy reads with a stride: leave it scalar
        _vectorize_tail(sch, sch.get_loops(pad)[-1], lanes)
    _finish_register_tile(sch, conv, epi, jo, [rh, rw, ci], jv, rc, factors[-1])
    if spec.placement:
        _schedule_placement(sch, lanes)


def _schedule_gpu(sch: Any, spec: ConvSpec, decide: Decider) -> None:
    """One thread per output element; padding and epilogue inlined, the reduction kept in a register."""
    threads = gpu_threads(decide)
    for name in ("pad", "epilogue"):
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - the block does not exist for this kind
            pass
    if not spec.pool:
        schedule_gpu_outputs(sch, sch.get_sblock("out"), sch.get_sblock("conv"), threads)
        return
    # a fused max pool: each thread computes its window's conv values (k*k/s^2 times the conv's work, a stem's
    # 3 input channels: cheaper than a round trip of the stem's output through global memory)
    schedule_gpu_outputs(sch, sch.get_sblock("out"), sch.get_sblock("pool"), threads)
    conv = sch.get_sblock("conv")
    sch.compute_at(conv, sch.get_loops(sch.get_sblock("pool"))[-2])
    sch.set_scope(conv, 0, "local")


def workload(spec: ConvSpec, target: Any):
    """The unscheduled ``PrimFunc`` of ``spec`` on ``target`` (what a tuner searches schedules for) and its
    padded output-row count."""
    from tvm import te

    fam = kernel_family(spec, family_of(target, spec.acc))
    cpad = padded_cout(spec, fam)
    geometries = amx_geometries(spec, fam)
    if geometries:  # every variant's intrinsic: a tuning database's traces of this workload replay them by name
        from .amx import register

        for geo in geometries.values():
            register(geo)
    inputs, out = compute(spec, cpad, wblock=weight_block(fam), pairs=bf16_dot(spec, fam) or bool(geometries),
                          kpad=amx_kpad(spec) if geometries else 0, native_bf16=fam.bf16)
    return te.create_prim_func([*inputs, out]), cpad


def schedule(sch: Any, spec: ConvSpec, target: Any, decide: Decider) -> dict[str, Any]:
    """Apply ``spec``'s template to ``sch`` (a schedule of :func:`workload`); returns the concrete decisions."""
    fam = kernel_family(spec, family_of(target, spec.acc))
    cpad = padded_cout(spec, fam)
    axis = {"pointwise": "pw.axis", "dense": "dense.axis"}.get(spec.kind)
    variant = decide.variant(KNOBS[axis] if axis and not fam.gpu else ONLY_VARIANT, variants(spec, fam),
                             default_variant(spec, fam))
    if fam.gpu:
        _schedule_gpu(sch, spec, decide)
    elif spec.kind == "pointwise":
        _schedule_pointwise(sch, spec, fam, cpad, decide, variant)
    elif spec.kind == "depthwise" and spec.block:
        _schedule_depthwise_blocked(sch, spec, fam, decide)
    elif spec.kind == "depthwise":
        _schedule_depthwise(sch, spec, fam, decide)
    else:
        _schedule_dense(sch, spec, fam, cpad, decide, variant)
    return dict(decide.decisions)



def kernel(spec: ConvSpec, target: Any, decide: Decider):
    """``(scheduled PrimFunc, padded output rows, decisions)`` for ``spec`` on ``target``."""
    from tvm.s_tir import Schedule

    func, cpad = workload(spec, target)
    sch = Schedule(func)
    knobs = schedule(sch, spec, target, decide)
    return sch.mod["main"], cpad, knobs
