"""Knobs: the named, ranged decisions a schedule template makes, and who makes them.

A template never hard-codes a tile size. It asks its :class:`Decider` three kinds of question:

- ``variant(knob, candidates, default)``: a structural choice (which axis carries the vectors). Under
  MetaSchedule each variant is its own design space, so this is always a plain string.
- ``choose(knob, candidates, default)``: one value out of a list computed for this kernel (every candidate is
  valid: it divides what it tiles).
- ``tile(sch, loop, knob, n, max_innermost, default)``: the ``n`` factors of a perfect split of ``loop``.

An untuned build answers with the target family's defaults (:class:`DefaultDecider`), a tuning record with
what was measured best (:class:`FixedDecider`), and a tuning run with *sampled* decisions
(:class:`SampledDecider`: ``sch.sample_categorical`` / ``sch.sample_perfect_tile``). Sampled answers are
random variables that flow straight into the schedule's ``split`` calls, so MetaSchedule can replay a
template's trace with other decisions, mutate them in its evolutionary search and rank them with its XGBoost
cost model. This is AutoTVM's template idea on MetaSchedule's machinery. Templates therefore never compute
Python values from a knob's answer: everything derived from it goes through the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

__all__ = ["GPU_THREADS", "Knob", "Family", "family_of", "Decider", "DefaultDecider", "FixedDecider",
           "SampledDecider", "ONLY_VARIANT", "divisors", "padded_rows", "pad_rows", "window_positions"]


@dataclass(frozen=True)
class Knob:
    """One tunable decision: ``name`` (unique within a template), its ``kind`` (``variant``, ``choice``,
    ``tile``) and what it means. The candidate values are computed per kernel (see each template)."""

    name: str
    kind: str
    doc: str


GPU_THREADS = Knob("gpu.threads", "choice", "threads per block (every CUDA template): 32-1024")
GPU_THREAD_CHOICES = (32, 64, 128, 256, 512, 1024)

ONLY_VARIANT = Knob("variant", "variant", "the structural variant of a template that has one")


@dataclass(frozen=True)
class Family:
    """What a template needs to know about a target: vector lanes (of the type it computes in), registers,
    GPU or not."""

    name: str  # x86-avx512 | x86-avx2 | x86 | arm-neon64 | arm-neon64-fp16 | arm-neon32 | cuda
    vector_lanes: int
    vector_registers: int
    gpu: bool = False
    threads: int = 0  # CPU worker threads the defaults assume (0: the runtime's choice)
    amx: bool = False  # AMX bf16 tiles (Sapphire Rapids and later): bf16 1x1 convs as tile multiplies
    bf16: bool = False  # AVX-512 BF16 (Zen 4, Cooper Lake, Sapphire Rapids...): vdpbf16ps and vcvtneps2bf16


_FAMILIES = {
    "x86-avx512": Family("x86-avx512", 16, 32),
    "x86-avx2": Family("x86-avx2", 8, 16),
    "x86": Family("x86", 4, 16),
    "arm-neon64": Family("arm-neon64", 4, 32),
    "arm-neon64-fp16": Family("arm-neon64-fp16", 8, 32),  # ARMv8.2-A fp16 arithmetic: 8 halves per register
    "arm-neon32": Family("arm-neon32", 4, 16),
    "cuda": Family("cuda", 1, 0, gpu=True),
}

_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake", "sapphirerapids", "tigerlake",
                "znver4", "znver5", "graniterapids", "emeraldrapids", "rocketlake", "alderlake-avx512")
# CPUs with AVX-512 BF16 (what --precision bf16 needs: tvm_shufflenet.precision reads this list)
BF16_CPUS = ("cooperlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5", "diamondrapids")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "znver1", "znver2", "znver3", "alderlake", "x86-64-v3", "raptorlake")


def family_of(target: Any, dtype: str = "float32") -> Family:
    """The template family of a ``tvm.target.Target`` for kernels computing in ``dtype`` (``float16``
    arithmetic packs twice the lanes of ``float32`` into an ARM vector; bfloat16 kernels compute in float32)."""
    fam = _family_of(target)
    if dtype == "float16" and fam.name == "arm-neon64":
        return _FAMILIES["arm-neon64-fp16"]
    return fam


def _family_of(target: Any) -> Family:
    kind = target.kind.name
    if kind != "llvm":
        return _FAMILIES["cuda"] if kind == "cuda" else _FAMILIES["x86"]
    attrs = {k: target.attrs[k] for k in target.attrs.keys()}
    triple = str(attrs.get("mtriple", "") or "")
    mcpu = str(attrs.get("mcpu", "") or "")
    mattr = " ".join(str(a) for a in (attrs.get("mattr") or []))
    if triple.startswith("aarch64"):
        return _FAMILIES["arm-neon64"]
    if triple.startswith("arm"):
        return _FAMILIES["arm-neon32"]
    if mcpu.startswith(_AVX512_CPUS) or "+avx512f" in mattr:
        from .amx import has_amx

        bf16 = mcpu.startswith(BF16_CPUS) or "+avx512bf16" in mattr
        return replace(_FAMILIES["x86-avx512"], amx=has_amx(mcpu, mattr), bf16=bf16)
    if mcpu.startswith(_AVX2_CPUS) or "+avx2" in mattr:
        return _FAMILIES["x86-avx2"]
    return _FAMILIES["x86"]


def divisors(n: int, at_most: int | None = None) -> list[int]:
    """Divisors of ``n`` (at most ``at_most``), ascending."""
    top = n if at_most is None else min(n, at_most)
    return [d for d in range(1, top + 1) if n % d == 0]


def window_positions(size: int, window: int, stride: int, before: int, after: int) -> int:
    """Positions of a ``window`` sliding by ``stride`` over ``size`` padded by ``before`` and ``after`` (a conv's
    or pool's output extent, no ceil mode)."""
    return (size + before + after - window) // stride + 1


def pad_rows(a: Any, rows: int) -> Any:
    """``a`` with zero rows appended up to ``rows`` (padded output channels: computed, never stored)."""
    import numpy as np

    a = np.asarray(a)
    if a.shape[0] == rows:
        return a
    out = np.zeros((rows, *a.shape[1:]), a.dtype)
    out[: a.shape[0]] = a
    return out


def padded_rows(rows: int, lanes: int) -> int:
    """Output rows a kernel computes: ``rows`` rounded up so that many tiles divide them.

    A multiple of the vector width (channel vectors need whole vectors), and among multiples of 1-4 vectors
    that waste at most 7%, the one whose vector count has the most divisors up to 4 (more tile shapes for the
    tuner). Padded rows have zero weights (free: weights are constants) and are never stored.
    """
    lanes = max(lanes, 1)
    best, best_score = None, None
    for m in (1, 2, 3, 4):
        step = lanes * m
        cand = -(-rows // step) * step
        if best is not None and cand > rows * 1.07:
            continue
        score = (len(divisors(cand // lanes, 4)), -cand)
        if best is None or score > best_score:
            best, best_score = cand, score
    return best


class Decider:
    """Answers a template's questions. Subclasses choose how; concrete answers are kept in ``decisions``."""

    def __init__(self) -> None:
        self.decisions: dict[str, Any] = {}

    def variant(self, knob: Knob, candidates: Sequence[str], default: str) -> str:
        value = self._variant(knob, list(candidates), default)
        self.decisions[knob.name] = value
        return value

    def choose(self, knob: Knob, candidates: Sequence[int], default: int) -> Any:
        cands = list(candidates)
        if default not in cands:
            default = min(cands, key=lambda c: (abs(c - default), c))
        value = self._choose(knob, cands, default)
        if isinstance(value, int):
            self.decisions[knob.name] = value
        return value

    def tile(self, sch: Any, loop: Any, knob: Knob, n: int, max_innermost: int, default: Sequence[int]) -> list[Any]:
        extent = int(sch.get(loop).extent)
        value = self._tile(sch, loop, knob, n, max_innermost, list(default), extent)
        if all(isinstance(v, int) for v in value):
            self.decisions[knob.name] = list(value)
        return value

    # defaults: the family default, validated
    def _variant(self, knob: Knob, candidates: list[str], default: str) -> str:
        return default if default in candidates else candidates[0]

    def _choose(self, knob: Knob, candidates: list[int], default: int) -> Any:
        return default

    def _tile(self, sch: Any, loop: Any, knob: Knob, n: int, max_innermost: int, default: list[int], extent: int) -> list[Any]:
        return default if _valid_tile(default, n, max_innermost, extent) else default_tile(extent, n, max_innermost)


def _valid_tile(factors: Any, n: int, max_innermost: int, extent: int) -> bool:
    return (isinstance(factors, (list, tuple)) and len(factors) == n and all(isinstance(f, int) and f >= 1 for f in factors)
            and math.prod(factors) == extent and factors[-1] <= max_innermost)


def default_tile(extent: int, n: int, max_innermost: int) -> list[int]:
    """A perfect split: the widest inner factor allowed, the rest outermost."""
    inner = max(divisors(extent, max_innermost))
    return [extent // inner] + [1] * (n - 2) + [inner]


class DefaultDecider(Decider):
    """The family default for every knob: what a never-tuned build uses."""


@dataclass
class FixedDecider(Decider):
    """Decisions from a tuning record; knobs the record lacks (or values no longer valid) get the default.

    ``stale`` says that happened for a knob with a choice: the record was made by an older template, and
    its values were measured only together, so the caller builds with the defaults instead.
    """

    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self.stale = False

    def _variant(self, knob: Knob, candidates: list[str], default: str) -> str:
        v = self.values.get(knob.name, default)
        return v if v in candidates else super()._variant(knob, candidates, default)

    def _choose(self, knob: Knob, candidates: list[int], default: int) -> Any:
        v = self.values.get(knob.name)
        if v in candidates:
            return v
        self.stale |= len(candidates) > 1
        return default

    def _tile(self, sch: Any, loop: Any, knob: Knob, n: int, max_innermost: int, default: list[int], extent: int) -> list[Any]:
        v = self.values.get(knob.name)
        if _valid_tile(v, n, max_innermost, extent):
            return list(v)
        self.stale = True
        return super()._tile(sch, loop, knob, n, max_innermost, default, extent)


class SampledDecider(Decider):
    """Decisions sampled in a traced ``tvm.s_tir.Schedule``, for MetaSchedule to search.

    ``variant`` fixes the structural variant of this design space (each variant's trace has its own sequence of
    schedule instructions, which is how :func:`tvm_shufflenet.tuning.space.trace_knobs` tells them apart).
    ``order`` lists the sampled knobs in trace order.
    """

    def __init__(self, sch: Any, variant: str | None = None) -> None:
        super().__init__()
        self.sch = sch
        self.fixed_variant = variant
        self.order: list[tuple[str, str, list[Any]]] = []

    def _variant(self, knob: Knob, candidates: list[str], default: str) -> str:
        return self.fixed_variant if self.fixed_variant in candidates else super()._variant(knob, candidates, default)

    def _choose(self, knob: Knob, candidates: list[int], default: int) -> Any:
        if len(candidates) == 1:  # nothing to search: no instruction in the trace
            return candidates[0]
        self.order.append((knob.name, "choice", candidates))
        return self.sch.sample_categorical(candidates, [1.0 / len(candidates)] * len(candidates))

    def _tile(self, sch: Any, loop: Any, knob: Knob, n: int, max_innermost: int, default: list[int], extent: int) -> list[Any]:
        self.order.append((knob.name, "tile", []))
        return list(self.sch.sample_perfect_tile(loop, n=n, max_innermost_factor=max_innermost))
