"""Tensor intrinsics the templates tensorize with: hardware dot products TVM's code generator cannot emit.

``bf16_dot_intrin(L)``: ``C[L] (f32) += A[L, 2] (bf16) . B[2] (bf16)``, one ``vdpbf16ps`` (AVX-512 BF16; L = 16:
zmm, 8: ymm, 4: xmm): each float32 lane accumulates the dot product of a pair of bfloat16 weights with a broadcast pair of inputs, two
multiply-adds per lane per instruction where float32 FMA does one. TVM's LLVM back end lowers bfloat16 values
to float32 before code generation (and crashes on native ``bfloat`` vectors), so the instruction sits in a
small LLVM IR function, linked into each kernel with ``pragma_import_llvm`` and always inlined: the compiled
loop is a run of ``vdpbf16ps`` with the input pair as an embedded broadcast, accumulators in registers.
"""

from __future__ import annotations

__all__ = ["LANES", "BF16_DOT_LLVM", "bf16_dot_intrin", "register"]

LANES = (16, 8, 4)  # float32 lanes: a zmm register (NCHW16c, NCHW), a ymm one (NCHW8c regions), an xmm one
# (group convs of 4-lane groups: ShuffleNet V1 g3's 20-channel ones)


def bf16_dot_intrin(lanes: int, bits: bool = False, vector_bits: bool = False) -> str:
    """The intrinsic's registered name: ``lanes`` accumulators, the broadcast pair as bf16 or as its uint16 bits
    (``bits``), or the vector operand as uint16 bits and the broadcast pair as bf16 (``vector_bits``: the NCHW
    pixel-vector form, where the vector is 16 pixels' input pairs and the broadcast a weight pair)."""
    return f"tvm_shufflenet_avx512_bf16_dot{lanes}" + ("_bits" if bits else "_vbits" if vector_bits else "")


def _func(lanes: int) -> str:
    return f"tvm_shufflenet_dpbf16_{lanes}"


def _llvm(lanes: int) -> str:
    suffix = {16: "512", 8: "256", 4: "128"}[lanes]  # zmm, ymm, xmm
    return f"""
define internal <{lanes} x float> @{_func(lanes)}(<{lanes} x float> %acc, <{lanes} x i32> %w, i32 %x) #0 {{
  %wv = bitcast <{lanes} x i32> %w to <{2 * lanes} x bfloat>
  %xi = insertelement <{lanes} x i32> poison, i32 %x, i64 0
  %xb = shufflevector <{lanes} x i32> %xi, <{lanes} x i32> poison, <{lanes} x i32> zeroinitializer
  %xv = bitcast <{lanes} x i32> %xb to <{2 * lanes} x bfloat>
  %r = call <{lanes} x float> @llvm.x86.avx512bf16.dpbf16ps.{suffix}(<{lanes} x float> %acc, <{2 * lanes} x bfloat> %wv, <{2 * lanes} x bfloat> %xv)
  ret <{lanes} x float> %r
}}
declare <{lanes} x float> @llvm.x86.avx512bf16.dpbf16ps.{suffix}(<{lanes} x float>, <{2 * lanes} x bfloat>, <{2 * lanes} x bfloat>)
"""


BF16_DOT_LLVM = "".join(_llvm(n) for n in LANES) + (
    'attributes #0 = { alwaysinline nounwind readnone "target-features"="+avx512bf16,+avx512f,+avx512bw,+avx512vl" }\n')

_registered = False


def register() -> None:
    """Register the intrinsics with TVM (once per process; MetaSchedule replays tensorize by name)."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    def make(lanes: int, b_dtype: str, a_dtype: str = "bfloat16"):
        def widen(v, dtype):
            return T.Cast("float32", v if dtype == "bfloat16" else T.reinterpret("bfloat16", v))

        # the conv's order, which tensorize matches: its input times its weight, read in that order (B is the
        # input, A the weight; or, when A holds bits, A the input and B the weight)
        def product(a, b):
            if a_dtype == "bfloat16":
                return widen(b, b_dtype) * widen(a, a_dtype)
            return widen(a, a_dtype) * widen(b, b_dtype)

        def operands(a_region, b_region):
            return [b_region, a_region] if a_dtype == "bfloat16" else [a_region, b_region]

        @T.prim_func(s_tir=True)
        def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (lanes, 2), a_dtype, offset_factor=1)
            B = T.match_buffer(b, (2,), b_dtype, offset_factor=1)
            C = T.match_buffer(c, (lanes,), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads([C[0:lanes], *operands(A[0:lanes, 0:2], B[0:2])])
                T.writes(C[0:lanes])
                for i, j in T.grid(lanes, 2):
                    with T.sblock("update"):
                        vi, vj = T.axis.remap("SR", [i, j])
                        C[vi] = C[vi] + product(A[vi, vj], B[vj])

        @T.prim_func(s_tir=True)
        def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
            A = T.match_buffer(a, (lanes, 2), a_dtype, offset_factor=1)
            B = T.match_buffer(b, (2,), b_dtype, offset_factor=1)
            C = T.match_buffer(c, (lanes,), "float32", offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:lanes], B[0:2], A[0:lanes, 0:2])
                T.writes(C[0:lanes])
                # values, not pointers: the accumulator stays a TIR load and store (in registers across the
                # reduction, as in the float32 loop); the bfloat16 pairs pass as their bits (TVM legalizes a
                # bfloat16 value to float32, but keeps a reinterpret's bits)
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_pure_extern(
                    f"float32x{lanes}", _func(lanes), C.vload([0], f"float32x{lanes}"),
                    T.reinterpret(A.vload([0, 0], f"{a_dtype}x{2 * lanes}"), dtype=f"int32x{lanes}"),
                    T.reinterpret(B.vload([0], f"{b_dtype}x2"), dtype="int32"))

        return desc, impl

    try:
        for lanes in LANES:
            TensorIntrin.register(bf16_dot_intrin(lanes), *make(lanes, "bfloat16"))
            TensorIntrin.register(bf16_dot_intrin(lanes, bits=True), *make(lanes, "uint16"))
            TensorIntrin.register(bf16_dot_intrin(lanes, vector_bits=True), *make(lanes, "bfloat16", "uint16"))
    except Exception as exc:  # noqa: BLE001 - registered by an earlier import of this module under another name
        if "already" not in str(exc):
            raise
    _registered = True
