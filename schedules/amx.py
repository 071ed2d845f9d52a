"""AMX (Advanced Matrix Extensions) tile kernels: bf16 1x1 convolutions as tile matrix multiplies.

Sapphire Rapids and later Xeons multiply 16-row tiles of bf16 pairs in a separate unit: one ``tdpbf16ps`` is
16x16x32 multiply-adds into float32, where a ``vdpbf16ps`` is 16x2. A kernel's register tile of channel vectors
(:func:`conv2d._schedule_pointwise`) becomes ``G x J`` accumulator tiles that stay in tile registers over the
whole reduction, fed by ``G`` data tiles and ``J`` weight tiles per step (at most 8 tiles in all).

Two layouts, one micro-kernel (``C[M, N] += A[M, K] . B[K/2, N, 2]``, each operand a tile of rows ``stride``
bytes apart):

- NCHW{16,8}c (MobileNets): accumulator rows are pixels and columns a block of 16 output channels; ``A`` is the
  call's input repacked into rows of 32 channels (``repack``: a block has only 16 or 8 a row), ``B`` the
  ``(Cout16/16, Cin32/2, 16, 2)`` weight (:func:`conv2d.pack_pairs_weight` of the padded weight).
- NCHW (ShuffleNets): accumulator rows are output channels (16, or a divisor of a group conv's groups) and
  columns pixels; ``A`` is the weight ``(Cout, Kpad)`` (32 input channels a step), ``B`` the task's input rows
  interleaved in pairs (the ``pairs`` stage of the vdpbf16ps kernel), zero past the real input channels.

The instructions sit in an LLVM IR function per geometry, linked into each kernel with ``pragma_import_llvm``
(TVM has no tile type). Linux hands AMX state to a process only on request (``arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)``): the function asks once per library, so an app that loads one needs nothing else.
"""

from __future__ import annotations

__all__ = ["Geometry", "TILES", "has_amx", "register", "register_named", "llvm_ir"]

import re
from dataclasses import dataclass

TILES = 8  # tile registers

_AMX_CPUS = ("sapphirerapids", "emeraldrapids", "graniterapids", "diamondrapids")


def has_amx(mcpu: str, mattr: str) -> bool:
    """Whether an x86 target has AMX bf16 tiles (its CPU name, or ``+amx-bf16`` in its features)."""
    return mcpu.startswith(_AMX_CPUS) or "+amx-bf16" in mattr


@dataclass(frozen=True)
class Geometry:
    """One micro-kernel call: a grid of ``r x c`` blocks, each ``g x j`` accumulator tiles of ``m`` rows by ``n``
    float32 columns, every block accumulated over ``steps`` steps of ``k`` bf16 input channels (32). ``layout``:
    ``blocked`` / ``blocked8`` (NCHW16c / NCHW8c data: rows are pixels) or ``nchw`` (rows are output channels,
    ``rpg`` row blocks to a group of a group conv: its input pairs change with the group)."""

    layout: str
    m: int
    n: int
    k: int
    g: int
    j: int
    steps: int
    r: int = 1
    c: int = 1
    rpg: int = 0  # row blocks per group (0: one group)

    @property
    def name(self) -> str:
        return (f"tvm_shufflenet_amx_{self.layout}_m{self.m}n{self.n}k{self.k}_g{self.g}j{self.j}_s{self.steps}"
                f"_r{self.r}c{self.c}p{self.rpg}")

    @property
    def rows(self) -> int:
        """The accumulator rows of one call."""
        return self.m * self.g * self.r

    @property
    def cols(self) -> int:
        return self.n * self.j * self.c

    @property
    def fits(self) -> bool:
        return self.g * self.j + self.g + self.j <= TILES and 1 <= self.m <= 16 and 1 <= self.n <= 16

    def tiles(self) -> tuple[list[tuple[int, int, int]], list[int], list[int]]:
        """Tile numbers: accumulators ``(number, g, j)``, then A tiles per ``g``, B tiles per ``j``."""
        acc = [(gi * self.j + ji, gi, ji) for gi in range(self.g) for ji in range(self.j)]
        a = [self.g * self.j + gi for gi in range(self.g)]
        b = [self.g * self.j + self.g + ji for ji in range(self.j)]
        return acc, a, b


_PERM = """
@tvm_shufflenet_amx_granted = internal global i32 0
declare i64 @syscall(i64, ...)
define internal void @tvm_shufflenet_amx_request() {
entry:
  %v = load atomic i32, ptr @tvm_shufflenet_amx_granted monotonic, align 4
  %z = icmp eq i32 %v, 0
  br i1 %z, label %ask, label %done
ask:
  ; arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): once per process; asking again is harmless
  %r = call i64 (i64, ...) @syscall(i64 158, i64 4131, i64 18)
  store atomic i32 1, ptr @tvm_shufflenet_amx_granted monotonic, align 4
  br label %done
done:
  ret void
}
declare void @llvm.x86.ldtilecfg(ptr)
declare void @llvm.x86.sttilecfg(ptr)
declare void @llvm.x86.tilezero(i8 immarg)
declare void @llvm.x86.tileloadd64(i8 immarg, ptr, i64)
declare void @llvm.x86.tilestored64(i8 immarg, ptr, i64)
declare void @llvm.x86.tdpbf16ps(i8 immarg, i8 immarg, i8 immarg)
attributes #7 = { nounwind "target-features"="+amx-tile,+amx-bf16,+avx512f" }
"""


def _offset(lines: list[str], name: str, terms: list[tuple[str, int]]) -> str:
    """Emit ``%name = sum(k * var)`` (strides are arguments: a multiple is an instruction); returns ``%name``."""
    parts = []
    for i, (var, k) in enumerate(terms):
        if k == 0:
            continue
        if k == 1:
            parts.append(var)
        else:
            lines.append(f"  %{name}_{i} = mul i64 {var}, {k}")
            parts.append(f"%{name}_{i}")
    if not parts:
        return "0"
    acc = parts[0]
    for i, p in enumerate(parts[1:]):
        lines.append(f"  %{name}_s{i} = add i64 {acc}, {p}")
        acc = f"%{name}_s{i}"
    return acc


def _func(geo: Geometry) -> str:
    """``void F(c, c_row, c_g, c_j, c_r, c_c, a, ..., b, ...)``, strides in bytes (``_row`` between a tile's rows,
    ``_g``/``_j`` between tiles of a block, ``_k`` between steps, ``_r``/``_c`` between the call's row and
    column blocks; B moves by ``b_r`` per group of row blocks): for each block, loads the accumulators from
    ``c``, adds ``steps`` steps of products and stores them back. It configures the tiles once, if the thread's
    configuration is not already its own (ldtilecfg costs about a 16x16x512 product; sttilecfg, the check, a
    fraction), and leaves it: the next call on this thread, and any other AMX code, compares or loads its own."""
    acc, a_t, b_t = geo.tiles()
    shapes: dict[int, tuple[int, int]] = {}  # tile -> (rows, bytes per row)
    for t, _, _ in acc:
        shapes[t] = (geo.m, 4 * geo.n)
    for t in a_t:
        shapes[t] = (geo.m, 2 * geo.k)
    for t in b_t:
        shapes[t] = (geo.k // 2, 4 * geo.n)
    lines = ["  %cfg = alloca [64 x i8], align 64",
             "  call void @llvm.memset.p0.i64(ptr align 64 %cfg, i8 0, i64 64, i1 false)",
             "  store i8 1, ptr %cfg"]  # palette 1
    for t, (rows, colsb) in shapes.items():
        lines += [f"  %cb{t} = getelementptr i8, ptr %cfg, i64 {16 + 2 * t}", f"  store i16 {colsb}, ptr %cb{t}",
                  f"  %rw{t} = getelementptr i8, ptr %cfg, i64 {48 + t}", f"  store i8 {rows}, ptr %rw{t}"]
    # ldtilecfg costs about as much as a 16x16x512 product: load the configuration only when the thread's
    # current one differs (the previous call of this kernel left it), and keep it past the call
    lines += ["  call void @tvm_shufflenet_amx_request()",
              "  %cur = alloca [64 x i8], align 64", "  call void @llvm.x86.sttilecfg(ptr %cur)",
              "  %want = load <8 x i64>, ptr %cfg, align 64", "  %have = load <8 x i64>, ptr %cur, align 64",
              "  %diff = icmp ne <8 x i64> %want, %have",
              "  %dbits = bitcast <8 x i1> %diff to i8", "  %same = icmp eq i8 %dbits, 0",
              "  br i1 %same, label %ready, label %load", "load:", "  call void @llvm.x86.ldtilecfg(ptr %cfg)",
              "  br label %ready", "ready:", "  br label %rowblk",
              "rowblk:", "  %u = phi i64 [ 0, %ready ], [ %u1, %rowdone ]",
              f"  %grp = udiv i64 %u, {geo.rpg or geo.r}",
              "  %cr = mul i64 %u, %c_r", "  %ar = mul i64 %u, %a_r", "  %br = mul i64 %grp, %b_r",
              "  br label %tile",
              "tile:", "  %v = phi i64 [ 0, %rowblk ], [ %v1, %stored ]",
              "  %cc = mul i64 %v, %c_c", "  %bc = mul i64 %v, %b_c", "  %ac = mul i64 %v, %a_c",
              "  %ct = add i64 %cr, %cc", "  %at = add i64 %ar, %ac", "  %bt = add i64 %br, %bc",
              "  %c = getelementptr i8, ptr %c0, i64 %ct", "  %a = getelementptr i8, ptr %a0, i64 %at",
              "  %b = getelementptr i8, ptr %b0, i64 %bt"]
    for t, gi, ji in acc:  # the reduction starts here: accumulators from zero, no partial sums to read
        off = _offset(lines, f"co{t}", [("%c_g", gi), ("%c_j", ji)])
        lines += [f"  %cp{t} = getelementptr i8, ptr %c, i64 {off}", f"  call void @llvm.x86.tilezero(i8 {t})"]
    steps = ["  br label %loop", "loop:", "  %s = phi i64 [ 0, %tile ], [ %s1, %loop ]"]
    body: list[str] = []
    for gi, t in enumerate(a_t):
        off = _offset(body, f"aq{t}", [("%s_a", 1), ("%a_g", gi)])
        body += [f"  %ap{t} = getelementptr i8, ptr %a, i64 {off}",
                 f"  call void @llvm.x86.tileloadd64(i8 {t}, ptr %ap{t}, i64 %a_row)"]
    for ji, t in enumerate(b_t):
        off = _offset(body, f"bq{t}", [("%s_b", 1), ("%b_j", ji)])
        body += [f"  %bp{t} = getelementptr i8, ptr %b, i64 {off}",
                 f"  call void @llvm.x86.tileloadd64(i8 {t}, ptr %bp{t}, i64 %b_row)"]
    for t, gi, ji in acc:
        body.append(f"  call void @llvm.x86.tdpbf16ps(i8 {t}, i8 {a_t[gi]}, i8 {b_t[ji]})")
    lines += steps + ["  %s_a = mul i64 %s, %a_k", "  %s_b = mul i64 %s, %b_k"] + body
    lines += ["  %s1 = add i64 %s, 1", f"  %more = icmp ult i64 %s1, {geo.steps}",
              "  br i1 %more, label %loop, label %stored", "stored:"]
    for t, _, _ in acc:
        lines.append(f"  call void @llvm.x86.tilestored64(i8 {t}, ptr %cp{t}, i64 %c_row)")
    lines += ["  %v1 = add i64 %v, 1", f"  %again = icmp ult i64 %v1, {geo.c}",
              "  br i1 %again, label %tile, label %rowdone", "rowdone:",
              "  %u1 = add i64 %u, 1", f"  %more_rows = icmp ult i64 %u1, {geo.r}",
              "  br i1 %more_rows, label %rowblk, label %exit", "exit:", "  ret void"]
    args = ", ".join(f"{ty} %{n}" for ty, n in [
        ("ptr", "c0"), ("i64", "c_row"), ("i64", "c_g"), ("i64", "c_j"), ("i64", "c_r"), ("i64", "c_c"),
        ("ptr", "a0"), ("i64", "a_row"), ("i64", "a_g"), ("i64", "a_k"), ("i64", "a_r"), ("i64", "a_c"),
        ("ptr", "b0"), ("i64", "b_row"), ("i64", "b_j"), ("i64", "b_k"), ("i64", "b_r"), ("i64", "b_c")])
    text = "\n".join(lines)
    return f"define internal void @{geo.name}({args}) #7 {{\nentry:\n{text}\n}}\n"


def llvm_ir(geo: Geometry) -> str:
    """The LLVM IR module text of ``geo``'s micro-kernel (with the permission request and declarations)."""
    return _PERM + "declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)\n" + _func(geo)


_registered: set[str] = set()
_NAME = re.compile(r"tvm_shufflenet_amx_(blocked8|blocked|nchw)_m(\d+)n(\d+)k(\d+)_g(\d+)j(\d+)_s(\d+)_r(\d+)c(\d+)p(\d+)")


def register_named(text: str) -> int:
    """Register every intrinsic named in ``text`` (a tuning database's records: MetaSchedule parses a record's
    trace, tensorize included, when it opens the database, before any template has run). Returns how many."""
    names = {m.group(0): m for m in _NAME.finditer(text)}
    for m in names.values():
        layout, *nums = m.groups()
        mm, n, k, g, j, steps, r, c, rpg = map(int, nums)
        register(Geometry(layout, mm, n, k, g, j, steps, r, c, rpg))
    return len(names)


def register(geo: Geometry) -> str:
    """Register ``geo``'s tensor intrinsic with TVM (once per process) and return its name: the whole reduction
    of a conv block, its init included (the accumulators start as zero tiles, no partial sums in memory).

    ``blocked``: ``C[P, Co] += data[K/16, P, 16] . weight[Co/16, K/2, 16, 2]`` (the NCHW16c conv's partial sums
    pixel-major); ``nchw``: ``C[Co, P] += weight[Co, K] . pairs[K/2, P, 2]`` (the pairs as uint16 bits)."""
    if geo.name in _registered:
        return geo.name
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    rows, cols, kk = geo.rows, geo.cols, geo.k * geo.steps
    i64 = lambda v: T.Cast("int64", v)  # noqa: E731

    def ptr(buf, rw: int, size: int):
        # a bf16 buffer's pointer as its storage type: TVM's bf16 legalization widens access_ptr's element type
        # to float32 but stores the buffer as uint16, and then refuses the pair
        dtype = "uint16" if buf.dtype in ("bfloat16", "uint16") else buf.dtype
        return T.tvm_access_ptr(T.type_annotation(dtype), buf.data, buf.elem_offset, size, rw)

    if geo.layout in ("blocked", "blocked8"):
        bl = 8 if geo.layout == "blocked8" else 16  # the data's channel block: a row of 32 is 32/bl of them
        a_shape, b_shape, c_shape = (kk // 32, rows, 32 // bl, bl), (cols // 16, kk // 2, 16, 2), (rows, cols)

        @T.prim_func(s_tir=True)
        def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, a_shape, "uint16", offset_factor=1)
            B = T.match_buffer(b, b_shape, "bfloat16", offset_factor=1)
            C = T.match_buffer(c, c_shape, "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads(A[0:kk // 32, 0:rows, 0:32 // bl, 0:bl], B[0:cols // 16, 0:kk // 2, 0:16, 0:2])
                T.writes(C[0:rows, 0:cols])
                for p, q, r in T.grid(rows, cols, kk):
                    with T.sblock("update"):
                        vq, vp, vr = T.axis.remap("SSR", [q, p, r])  # the conv's iterators: channel, pixel
                        T.reads(C[vp, vq], A[vr // 32, vp, vr % 32 // bl, vr % bl], B[vq // 16, vr // 2, vq % 16, vr % 2])
                        T.writes(C[vp, vq])
                        with T.init():
                            C[vp, vq] = T.float32(0.0)
                        C[vp, vq] = C[vp, vq] + T.Cast("float32", T.reinterpret("bfloat16", A[vr // 32, vp, vr % 32 // bl, vr % bl])) * \
                            T.Cast("float32", B[vq // 16, vr // 2, vq % 16, vr % 2])

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
            sa0, sa1, sb0, sb1, sc0 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
            A = T.match_buffer(a, a_shape, "uint16", offset_factor=1, strides=[sa0, sa1, bl, 1])
            B = T.match_buffer(b, b_shape, "bfloat16", offset_factor=1, strides=[sb0, sb1, 2, 1])
            C = T.match_buffer(c, c_shape, "float32", offset_factor=1, strides=[sc0, 1])
            with T.sblock("root"):
                T.reads(A[0:kk // 32, 0:rows, 0:32 // bl, 0:bl], B[0:cols // 16, 0:kk // 2, 0:16, 0:2])
                T.writes(C[0:rows, 0:cols])
                T.evaluate(T.call_extern(
                    "void", geo.name,
                    ptr(C, 3, rows * cols), i64(sc0 * 4), i64(geo.m * sc0 * 4), i64(64),
                    i64(geo.m * geo.g * sc0 * 4), i64(geo.j * 64),
                    ptr(A, 1, 1), i64(sa1 * 2), i64(geo.m * sa1 * 2), i64(sa0 * 2), i64(geo.m * geo.g * sa1 * 2), i64(0),
                    ptr(B, 1, 1), i64(sb1 * 2), i64(sb0 * 2), i64(sb1 * 2 * 16), i64(0), i64(geo.j * sb0 * 2)))
    else:
        a_shape, c_shape = (rows, kk), (rows, cols)
        args = lambda C, A, B, sc0, sa0, sb0, sbg: (  # noqa: E731
            ptr(C, 3, rows * cols), i64(sc0 * 4), i64(geo.m * sc0 * 4), i64(geo.n * 4),
            i64(geo.m * geo.g * sc0 * 4), i64(geo.n * geo.j * 4),
            ptr(A, 1, 1), i64(sa0 * 2), i64(geo.m * sa0 * 2), i64(geo.k * 2), i64(geo.m * geo.g * sa0 * 2), i64(0),
            ptr(B, 1, 1), i64(sb0 * 2), i64(geo.n * 4), i64(sb0 * 2 * (geo.k // 2)), i64(sbg * 2),
            i64(geo.n * geo.j * 4))
        if not geo.rpg:
            b_shape = (kk // 2, cols, 2)

            @T.prim_func(s_tir=True)
            def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
                A = T.match_buffer(a, a_shape, "bfloat16", offset_factor=1)
                B = T.match_buffer(b, b_shape, "uint16", offset_factor=1)
                C = T.match_buffer(c, c_shape, "float32", offset_factor=1)
                with T.sblock("root"):
                    T.reads(B[0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                    T.writes(C[0:rows, 0:cols])
                    for q, p, r in T.grid(rows, cols, kk):
                        with T.sblock("update"):
                            vq, vp, vr = T.axis.remap("SSR", [q, p, r])
                            T.reads(C[vq, vp], B[vr // 2, vp, vr % 2], A[vq, vr])
                            T.writes(C[vq, vp])
                            with T.init():
                                C[vq, vp] = T.float32(0.0)
                            C[vq, vp] = C[vq, vp] + T.Cast("float32", T.reinterpret("bfloat16", B[vr // 2, vp, vr % 2])) * \
                                T.Cast("float32", A[vq, vr])

            @T.prim_func(s_tir=True)
            def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
                sa0, sb0, sc0 = T.int32(), T.int32(), T.int32()
                A = T.match_buffer(a, a_shape, "bfloat16", offset_factor=1, strides=[sa0, 1])
                B = T.match_buffer(b, b_shape, "uint16", offset_factor=1, strides=[sb0, 2, 1])
                C = T.match_buffer(c, c_shape, "float32", offset_factor=1, strides=[sc0, 1])
                with T.sblock("root"):
                    T.reads(B[0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                    T.writes(C[0:rows, 0:cols])
                    T.evaluate(T.call_extern("void", geo.name, *args(C, A, B, sc0, sa0, sb0, 0)))
        else:  # a group conv: the call's rows span whole groups, each reading its own pairs
            grp_rows = geo.rpg * geo.m * geo.g
            groups = rows // grp_rows
            b_shape = (groups, kk // 2, cols, 2)

            @T.prim_func(s_tir=True)
            def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
                A = T.match_buffer(a, a_shape, "bfloat16", offset_factor=1)
                B = T.match_buffer(b, b_shape, "uint16", offset_factor=1)
                C = T.match_buffer(c, c_shape, "float32", offset_factor=1)
                with T.sblock("root"):
                    T.reads(B[0:groups, 0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                    T.writes(C[0:rows, 0:cols])
                    for q, p, r in T.grid(rows, cols, kk):
                        with T.sblock("update"):
                            vq, vp, vr = T.axis.remap("SSR", [q, p, r])
                            T.reads(C[vq, vp], B[vq // grp_rows, vr // 2, vp, vr % 2], A[vq, vr])
                            T.writes(C[vq, vp])
                            with T.init():
                                C[vq, vp] = T.float32(0.0)
                            C[vq, vp] = C[vq, vp] + T.Cast("float32", T.reinterpret(
                                "bfloat16", B[vq // grp_rows, vr // 2, vp, vr % 2])) * T.Cast("float32", A[vq, vr])

            @T.prim_func(s_tir=True)
            def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
                sa0, sb0, sbg, sc0 = T.int32(), T.int32(), T.int32(), T.int32()
                A = T.match_buffer(a, a_shape, "bfloat16", offset_factor=1, strides=[sa0, 1])
                B = T.match_buffer(b, b_shape, "uint16", offset_factor=1, strides=[sbg, sb0, 2, 1])
                C = T.match_buffer(c, c_shape, "float32", offset_factor=1, strides=[sc0, 1])
                with T.sblock("root"):
                    T.reads(B[0:groups, 0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                    T.writes(C[0:rows, 0:cols])
                    T.evaluate(T.call_extern("void", geo.name, *args(C, A, B, sc0, sa0, sb0, sbg)))

    pairs = [(geo.name, desc, impl)] + _split_intrinsics(geo, impl)
    for name, d, i in pairs:
        try:
            TensorIntrin.register(name, d, i)
        except Exception as exc:  # noqa: BLE001 - registered by an earlier import of this module under another name
            if "already" not in str(exc):
                raise
    _registered.add(geo.name)
    return geo.name


def split_names(geo: Geometry) -> tuple[str, str]:
    """``(zero, accumulate)`` intrinsics of a geometry (registered with it): the reduction's init as a no-op (the
    micro-kernel starts its accumulators as zero tiles and stores every one; tensorized whole, the block kept its
    init, which LLVM made a memset of the partial sums: 53 KB a task in ShuffleNet V1 g3's 120x480 at 14x14, which
    ran 41 -> 34 us on one thread without it) and the update without an init. The whole intrinsic stays registered
    for the traces of tuning databases made before."""
    return geo.name + "_zero", geo.name + "_acc"


def _split_intrinsics(geo: Geometry, impl):
    from tvm.script import tirx as T

    rows, cols, kk = geo.rows, geo.cols, geo.k * geo.steps
    grp_rows = geo.rpg * geo.m * geo.g if geo.rpg else rows
    groups = rows // grp_rows

    if geo.layout == "nchw":  # C[channel, pixel]
        @T.prim_func(s_tir=True)
        def zero_desc(c: T.handle) -> None:
            C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads()
                T.writes(C[0:rows, 0:cols])
                for q, p in T.grid(rows, cols):
                    with T.sblock("init"):
                        vq, vp = T.axis.remap("SS", [q, p])
                        T.reads()
                        T.writes(C[vq, vp])
                        C[vq, vp] = T.float32(0.0)
    else:  # C[pixel, channel], iterated channel-major like the conv
        @T.prim_func(s_tir=True)
        def zero_desc(c: T.handle) -> None:
            C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads()
                T.writes(C[0:rows, 0:cols])
                for p, q in T.grid(rows, cols):
                    with T.sblock("init"):
                        vq, vp = T.axis.remap("SS", [q, p])
                        T.reads()
                        T.writes(C[vp, vq])
                        C[vp, vq] = T.float32(0.0)

    @T.prim_func(s_tir=True)
    def zero_impl(c: T.handle) -> None:
        sc0 = T.int32()
        C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1, strides=[sc0, 1])
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:rows, 0:cols])
            T.evaluate(0)

    if geo.layout != "nchw":
        bl = 8 if geo.layout == "blocked8" else 16
        a_shape, b_shape = (kk // 32, rows, 32 // bl, bl), (cols // 16, kk // 2, 16, 2)

        @T.prim_func(s_tir=True)
        def acc_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, a_shape, "uint16", offset_factor=1)
            B = T.match_buffer(b, b_shape, "bfloat16", offset_factor=1)
            C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:rows, 0:cols], A[0:kk // 32, 0:rows, 0:32 // bl, 0:bl], B[0:cols // 16, 0:kk // 2, 0:16, 0:2])
                T.writes(C[0:rows, 0:cols])
                for p, q, r in T.grid(rows, cols, kk):
                    with T.sblock("update"):
                        vq, vp, vr = T.axis.remap("SSR", [q, p, r])
                        T.reads(C[vp, vq], A[vr // 32, vp, vr % 32 // bl, vr % bl], B[vq // 16, vr // 2, vq % 16, vr % 2])
                        T.writes(C[vp, vq])
                        C[vp, vq] = C[vp, vq] + T.Cast("float32", T.reinterpret("bfloat16", A[vr // 32, vp, vr % 32 // bl, vr % bl])) * \
                            T.Cast("float32", B[vq // 16, vr // 2, vq % 16, vr % 2])
    elif not geo.rpg:
        @T.prim_func(s_tir=True)
        def acc_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (rows, kk), "bfloat16", offset_factor=1)
            B = T.match_buffer(b, (kk // 2, cols, 2), "uint16", offset_factor=1)
            C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:rows, 0:cols], B[0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                T.writes(C[0:rows, 0:cols])
                for q, p, r in T.grid(rows, cols, kk):
                    with T.sblock("update"):
                        vq, vp, vr = T.axis.remap("SSR", [q, p, r])
                        T.reads(C[vq, vp], B[vr // 2, vp, vr % 2], A[vq, vr])
                        T.writes(C[vq, vp])
                        C[vq, vp] = C[vq, vp] + T.Cast("float32", T.reinterpret("bfloat16", B[vr // 2, vp, vr % 2])) * \
                            T.Cast("float32", A[vq, vr])
    else:
        @T.prim_func(s_tir=True)
        def acc_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (rows, kk), "bfloat16", offset_factor=1)
            B = T.match_buffer(b, (groups, kk // 2, cols, 2), "uint16", offset_factor=1)
            C = T.match_buffer(c, (rows, cols), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:rows, 0:cols], B[0:groups, 0:kk // 2, 0:cols, 0:2], A[0:rows, 0:kk])
                T.writes(C[0:rows, 0:cols])
                for q, p, r in T.grid(rows, cols, kk):
                    with T.sblock("update"):
                        vq, vp, vr = T.axis.remap("SSR", [q, p, r])
                        T.reads(C[vq, vp], B[vq // grp_rows, vr // 2, vp, vr % 2], A[vq, vr])
                        T.writes(C[vq, vp])
                        C[vq, vp] = C[vq, vp] + T.Cast("float32", T.reinterpret(
                            "bfloat16", B[vq // grp_rows, vr // 2, vp, vr % 2])) * T.Cast("float32", A[vq, vr])

    zero, acc = split_names(geo)
    return [(zero, zero_desc, zero_impl), (acc, acc_desc, impl)]
