"""The classifier: ``y = x @ W + b`` (``W`` constant, ``(K, M)``) with an optional activation.

CPU template: a register tile of ``dense.m_vectors`` whole output vectors accumulated over K, tiles spread
over threads; M is padded to whole vectors with zero weights, and the weight is packed ``(M/L, K, L)`` (``L``
lanes: :func:`pack_weight`), so each output vector's weights are one contiguous stream. Inside a network the
classifier's weights come from memory, not cache: packed, the 1280x1000 one ran 103-146 us with cold caches
against 316-376 us as ``(K, M)`` rows, whose every K step touched a new 4 KiB-strided line per vector (2 Zen 4
cores). CUDA: one thread per output, ``gpu.threads``, ``(K, M)`` weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from typing import Any

from .knobs import GPU_THREADS, ONLY_VARIANT, Decider, Knob, divisors, family_of, pad_rows, padded_rows

__all__ = ["DenseSpec", "KNOBS", "workload", "schedule", "kernel", "pack_weight"]

KNOBS = {
    "dense.m_vectors": Knob("dense.m_vectors", "choice", "output vectors per register tile (1-8)"),
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
    dtype: str = "float32"  # data, weight and output (bfloat16, float16: reduced precision)
    acc: str = "float32"  # products, sums, bias, activation
    out_dtype: str = ""  # the output's when not ``dtype``: a reduced network's logits are written in float32
    weight_dtype: str = ""  # the weight's when not ``dtype``: float16 under bf16 storage (the same bytes, 3 more
    # bits of mantissa; converted to float32 by one instruction per vector)

    def to_json(self) -> str:
        d = asdict(self)
        if d["acc"] == "float32":  # keys added since the tuning records were made appear only when set
            d.pop("acc")
        for key in ("out_dtype", "weight_dtype"):
            if not d[key]:
                d.pop(key)
        return json.dumps(d, sort_keys=True)


def padded_m(spec: DenseSpec, target: Any) -> int:
    """Outputs computed: M padded to whole vectors (zero weights), never stored past M."""
    fam = family_of(target, spec.acc)
    return spec.m if fam.gpu else padded_rows(spec.m, fam.vector_lanes)


def _lanes(spec: DenseSpec, target: Any) -> int:
    """Lanes of the packed weight's blocks: one vector on a CPU, 1 (plain ``(K, M)``) on a GPU."""
    fam = family_of(target, spec.acc)
    return 1 if fam.gpu else fam.vector_lanes


def pack_weight(w: Any, spec: DenseSpec, target: Any) -> Any:
    """The ``(K, M)`` weight as the kernel reads it: ``(padded M / L, K, L)``, padded columns zero."""
    import numpy as np

    mp, lanes = padded_m(spec, target), _lanes(spec, target)
    full = pad_rows(np.asarray(w).T, mp).T
    return np.ascontiguousarray(full.reshape(spec.k, mp // lanes, lanes).transpose(1, 0, 2))


def workload(spec: DenseSpec, target: Any):
    """``(unscheduled PrimFunc, padded M)``: the weight passed must be :func:`pack_weight`'s, the bias
    ``(padded M,)``."""
    from tvm import te

    from .conv2d import _act, cast

    mp, lanes = padded_m(spec, target), _lanes(spec, target)
    x = te.placeholder((spec.n, spec.k), spec.dtype, name="data")
    w = te.placeholder((mp // lanes, spec.k, lanes), spec.weight_dtype or spec.dtype, name="weight")
    inputs = [x, w]
    b = te.placeholder((mp,), spec.acc, name="bias") if spec.bias else None
    if b is not None:
        inputs.append(b)
    r = te.reduce_axis((0, spec.k), name="r")
    acc = te.compute((spec.n, mp), lambda i, j: te.sum(cast(x[i, r], spec.acc) * cast(w[j // lanes, r, j % lanes], spec.acc), axis=r), name="acc")

    def epi(i: Any, j: Any) -> Any:
        v = acc[i, j] + b[j] if b is not None else acc[i, j]
        return cast(_act(spec.act, v, spec.acc), spec.out_dtype or spec.dtype)

    out = te.compute((spec.n, spec.m), epi, name="out")
    return te.create_prim_func([*inputs, out]), mp


def schedule(sch: Any, spec: DenseSpec, target: Any, decide: Decider) -> dict[str, Any]:
    """A register tile of whole output vectors accumulated over K, tiles spread over threads."""
    from .conv2d import _vectorize_innermost, gpu_threads, schedule_gpu_outputs

    fam = family_of(target, spec.acc)
    decide.variant(ONLY_VARIANT, ["default"], "default")
    accb, outb = sch.get_sblock("acc"), sch.get_sblock("out")
    if fam.gpu:
        schedule_gpu_outputs(sch, outb, accb, gpu_threads(decide))
        return dict(decide.decisions)
    lanes = fam.vector_lanes
    mp = padded_m(spec, target)
    nv = decide.choose(KNOBS["dense.m_vectors"], divisors(mp // lanes, 8), 4)
    i, j, k = sch.get_loops(accb)
    jo, jvo, jv = sch.split(j, [None, nv, lanes])
    sch.reorder(jo, i, k, jvo, jv)
    sch.parallel(jo)
    sch.set_scope(accb, 0, "local")
    sch.reverse_compute_at(outb, i, preserve_unit_loops=True)  # the last tile stores only up to M: left scalar (a few hundred floats)
    sch.unroll(jvo)
    sch.vectorize(jv)
    init = sch.decompose_reduction(accb, k)
    _vectorize_innermost(sch, init, i)
    return dict(decide.decisions)


def kernel(spec: DenseSpec, target: Any, decide: Decider):
    """``(PrimFunc, padded M, knobs)``: the weight passed must be :func:`pack_weight`'s, the bias ``(padded M,)``."""
    from tvm.s_tir import Schedule

    func, mp = workload(spec, target)
    sch = Schedule(func)
    knobs = schedule(sch, spec, target, decide)
    return sch.mod["main"], mp, knobs
