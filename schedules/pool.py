"""Pooling kernels: windowed max/average (NCHW, padded) and global average, with CPU and CUDA templates.

Knobs: ``pool.vec`` (output columns per vector on CPU), ``gpu.threads`` on CUDA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from typing import Any

from .conv2d import gpu_threads, padded_window, schedule_gpu_outputs, schedule_window, window_vec
from .knobs import GPU_THREADS, ONLY_VARIANT, Decider, Knob, family_of, window_positions

__all__ = ["PoolSpec", "KNOBS", "workload", "schedule", "kernel"]

KNOBS = {
    "pool.vec": Knob("pool.vec", "choice", "output columns per vector (divisors of the output width, up to two machine vectors)"),
    "gpu.threads": GPU_THREADS,
}


@dataclass(frozen=True)
class PoolSpec:
    """``kind``: ``max``, ``avg`` or ``global_avg`` (mean over H and W; ``keepdims`` keeps a 1x1 plane)."""

    kind: str
    n: int
    c: int
    h: int
    w: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = True
    keepdims: bool = False
    dtype: str = "float32"  # what it reads and writes; sums are float32 whatever it is
    out_dtype: str = ""  # what it writes when not ``dtype``: a reduced network's last features, in float32

    @property
    def oh(self) -> int:
        return 1 if self.kind == "global_avg" else window_positions(self.h, self.kh, self.stride, self.pad[0], self.pad[2])

    @property
    def ow(self) -> int:
        return 1 if self.kind == "global_avg" else window_positions(self.w, self.kw, self.stride, self.pad[1], self.pad[3])

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.kind == "global_avg" and not self.keepdims:
            return (self.n, self.c)
        return (self.n, self.c, self.oh, self.ow)

    def to_json(self) -> str:
        d = asdict(self)
        if not d["out_dtype"]:  # added since the tuning records were made: appears only when set
            d.pop("out_dtype")
        return json.dumps(d, sort_keys=True)


def compute(spec: PoolSpec):
    from tvm import te, tirx

    from .conv2d import cast

    dt, f32 = spec.dtype, "float32"
    x = te.placeholder((spec.n, spec.c, spec.h, spec.w), dt, name="data")
    if spec.kind == "global_avg":
        odt = spec.out_dtype or dt
        rh, rw = te.reduce_axis((0, spec.h), name="rh"), te.reduce_axis((0, spec.w), name="rw")
        total = te.compute((spec.n, spec.c), lambda n, c: te.sum(cast(x[n, c, rh, rw], f32), axis=[rh, rw]), name="pool")
        inv = tirx.const(1.0 / (spec.h * spec.w), f32)
        if spec.keepdims:
            out = te.compute(spec.out_shape, lambda n, c, i, j: cast(total[n, c] * inv, odt), name="out")
        else:
            out = te.compute(spec.out_shape, lambda n, c: cast(total[n, c] * inv, odt), name="out")
        return [x], out
    t, left = spec.pad[0], spec.pad[1]
    fill = tirx.min_value(spec.dtype) if spec.kind == "max" else tirx.const(0.0, spec.dtype)
    read = padded_window(x, spec.n, spec.c, spec.h, spec.w, spec.pad, spec.stride, fill)
    rh, rw = te.reduce_axis((0, spec.kh), name="rh"), te.reduce_axis((0, spec.kw), name="rw")
    s = spec.stride
    if spec.kind == "max":
        pooled = te.compute(spec.out_shape, lambda n, c, i, j: te.max(read(n, c, i, j, rh, rw), axis=[rh, rw]), name="pool")
        out = te.compute(spec.out_shape, lambda n, c, i, j: pooled[n, c, i, j], name="out")
        return [x], out
    pooled = te.compute(spec.out_shape, lambda n, c, i, j: te.sum(cast(read(n, c, i, j, rh, rw), f32), axis=[rh, rw]),
                        name="pool")
    if spec.count_include_pad:
        out = te.compute(spec.out_shape, lambda n, c, i, j: cast(pooled[n, c, i, j] / tirx.const(spec.kh * spec.kw, f32), dt),
                         name="out")
    else:
        def count(i: Any, j: Any) -> Any:
            h0, w0 = i * s - t, j * s - left
            hh = te.min(h0 + spec.kh, spec.h) - te.max(h0, 0)
            ww = te.min(w0 + spec.kw, spec.w) - te.max(w0, 0)
            return (hh * ww).astype(f32)

        out = te.compute(spec.out_shape, lambda n, c, i, j: cast(pooled[n, c, i, j] / count(i, j), dt), name="out")
    return [x], out


def workload(spec: PoolSpec, target: Any = None):
    """The unscheduled ``PrimFunc`` of ``spec``."""
    from tvm import te

    inputs, out = compute(spec)
    return te.create_prim_func([*inputs, out])


def schedule(sch: Any, spec: PoolSpec, target: Any, decide: Decider) -> dict[str, Any]:
    """Apply the pooling template to ``sch`` (a schedule of :func:`workload`); returns the decisions."""
    fam = family_of(target, spec.dtype)
    decide.variant(ONLY_VARIANT, ["default"], "default")
    pool, outb = sch.get_sblock("pool"), sch.get_sblock("out")
    if fam.gpu:
        threads = gpu_threads(decide)
        if spec.kind != "global_avg":
            sch.compute_inline(sch.get_sblock("pad"))
        schedule_gpu_outputs(sch, outb, pool, threads)
    elif spec.kind == "global_avg":
        sch.parallel(sch.fuse(*sch.get_loops(pool)[:2]))
        sch.reverse_compute_at(outb, sch.get_loops(pool)[0])
    else:
        vec = window_vec(decide, KNOBS["pool.vec"], spec.ow, fam.vector_lanes, spec.stride)
        schedule_window(sch, pool, outb, sch.get_sblock("pad"), vec, fam.vector_lanes)
    return dict(decide.decisions)


def kernel(spec: PoolSpec, target: Any, decide: Decider):
    """The scheduled ``PrimFunc`` of ``spec`` on ``target`` and the knob decisions."""
    from tvm.s_tir import Schedule

    sch = Schedule(workload(spec, target))
    knobs = schedule(sch, spec, target, decide)
    return sch.mod["main"], knobs
