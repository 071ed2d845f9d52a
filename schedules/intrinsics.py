"""Tensor intrinsics the templates tensorize with: hardware dot products TVM's code generator cannot emit.

``avx512_bf16_dot``: ``C[16] (f32) += A[16, 2] (bf16) . B[2] (bf16)``, one ``vdpbf16ps`` (AVX-512 BF16): each
float32 lane accumulates the dot product of a pair of bfloat16 weights with a broadcast pair of inputs, two
multiply-adds per lane per instruction where float32 FMA does one. TVM's LLVM back end lowers bfloat16 values
to float32 before code generation (and crashes on native ``bfloat`` vectors), so the instruction sits in a
small LLVM IR function, linked into each kernel with ``pragma_import_llvm`` and always inlined: the compiled
loop is a run of ``vdpbf16ps`` with the input pair as an embedded broadcast, accumulators in registers.
"""

from __future__ import annotations

__all__ = ["BF16_DOT", "BF16_DOT_LANES", "BF16_DOT_LLVM", "register"]

BF16_DOT = "tvm_shufflenet_avx512_bf16_dot"
BF16_DOT_LANES = 16
_FUNC = "tvm_shufflenet_dpbf16"

BF16_DOT_LLVM = rf"""
define internal <16 x float> @{_FUNC}(<16 x float> %acc, <16 x i32> %w, i32 %x) #0 {{
  %wv = bitcast <16 x i32> %w to <32 x bfloat>
  %xi = insertelement <16 x i32> poison, i32 %x, i64 0
  %xb = shufflevector <16 x i32> %xi, <16 x i32> poison, <16 x i32> zeroinitializer
  %xv = bitcast <16 x i32> %xb to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %wv, <32 x bfloat> %xv)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind readnone "target-features"="+avx512bf16,+avx512f,+avx512bw,+avx512vl" }}
"""

_registered = False


def register() -> None:
    """Register the intrinsics with TVM (once per process; MetaSchedule replays tensorize by name)."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    lanes = BF16_DOT_LANES

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (lanes, 2), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (2,), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], B[0:2], A[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i, j in T.grid(lanes, 2):
                with T.sblock("update"):
                    vi, vj = T.axis.remap("SR", [i, j])
                    C[vi] = C[vi] + T.Cast("float32", B[vj]) * T.Cast("float32", A[vi, vj])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (lanes, 2), "bfloat16", offset_factor=1)
        B = T.match_buffer(b, (2,), "bfloat16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "float32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], B[0:2], A[0:lanes, 0:2])
            T.writes(C[0:lanes])
            # values, not pointers: the accumulator stays a TIR load and store (in registers across the reduction,
            # as in the float32 loop); the bfloat16 pairs pass as their bits (TVM legalizes a bfloat16 value to
            # float32, but keeps a reinterpret's bits)
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_pure_extern(
                "float32x16", _FUNC, C.vload([0], "float32x16"),
                T.reinterpret(A.vload([0, 0], "bfloat16x32"), dtype="int32x16"),
                T.reinterpret(B.vload([0], "bfloat16x2"), dtype="int32"))

    try:
        TensorIntrin.register(BF16_DOT, desc, impl)
    except Exception as exc:  # noqa: BLE001 - registered by an earlier import of this module under another name
        if "already" not in str(exc):
            raise
    _registered = True
