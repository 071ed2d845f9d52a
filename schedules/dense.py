"""The classifier: ``y = x @ W + b`` (``W`` constant, ``(K, M)``) with an optional activation.

CPU template: a register tile of ``dense.m_tile`` outputs (whole vectors) accumulated over K, tiles spread
over threads; M is padded to the tile with zero weights. CUDA: one thread per output, ``gpu.threads``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from typing import Any

from .knobs import GPU_THREADS, Decider, Knob, family_of

__all__ = ["DenseSpec", "KNOBS", "kernel"]

KNOBS = {
    "dense.m_tile": Knob("dense.m_tile", (8, 16, 32, 48, 64, 96, 128), "outputs per register tile"),
    "gpu.threads": GPU_THREADS,
}


@dataclass(frozen=True)
class DenseSpec:
    """``(n, k) @ (k, m) + bias``, then ``act``: the classifier, and squeeze-and-excitation 1x1 convs."""

    n: int
    k: int
    m: int
    bias: bool = True
    act: str | None = None
    dtype: str = "float32"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def padded_m(spec: DenseSpec, tile: int) -> int:
    return -(-spec.m // tile) * tile


def kernel(spec: DenseSpec, target: Any, decide: Decider):
    """``(PrimFunc, padded M, knobs)``: the weight passed must be ``(K, padded M)``, the bias ``(padded M,)``."""
    from tvm import te
    from tvm.s_tir import Schedule

    from .conv2d import _act, schedule_gpu_outputs, vector_width

    fam = family_of(target)
    if fam.gpu:
        tile = 1
    else:
        tile = decide(KNOBS["dense.m_tile"], 4 * fam.vector_lanes)
    mp = padded_m(spec, tile)
    x = te.placeholder((spec.n, spec.k), spec.dtype, name="data")
    w = te.placeholder((spec.k, mp), spec.dtype, name="weight")
    inputs = [x, w]
    b = te.placeholder((mp,), spec.dtype, name="bias") if spec.bias else None
    if b is not None:
        inputs.append(b)
    r = te.reduce_axis((0, spec.k), name="r")
    acc = te.compute((spec.n, mp), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="acc")

    def epi(i: Any, j: Any) -> Any:
        v = acc[i, j] + b[j] if b is not None else acc[i, j]
        return _act(spec.act, v, spec.dtype)

    out = te.compute((spec.n, spec.m), epi, name="out")
    sch = Schedule(te.create_prim_func([*inputs, out]))
    accb, outb = sch.get_sblock("acc"), sch.get_sblock("out")
    if fam.gpu:
        threads = decide(KNOBS["gpu.threads"], 256)
        schedule_gpu_outputs(sch, outb, accb, threads)
        return sch.mod["main"], mp, {"threads": threads}
    lanes = fam.vector_lanes
    i, j, k = sch.get_loops(accb)
    jo, ji = sch.split(j, [None, tile])
    vl = vector_width(tile, lanes)
    jvo, jv = sch.split(ji, [None, vl])
    sch.reorder(jo, i, k, jvo, jv)
    sch.parallel(jo)
    sch.set_scope(accb, 0, "local")
    sch.reverse_compute_at(outb, i)
    sch.unroll(jvo)
    sch.vectorize(jv)
    init = sch.decompose_reduction(accb, k)
    sch.vectorize(sch.get_loops(init)[-1])
    ol = sch.get_loops(outb)[-1]
    ov = vector_width(int(sch.get(ol).extent), lanes)
    if ov > 1:
        sch.vectorize(ol if ov == int(sch.get(ol).extent) else sch.split(ol, [None, ov])[1])
    return sch.mod["main"], mp, {"m_tile": tile}
