"""Knobs: the named, ranged decisions a schedule template makes, and who makes them.

A template never hard-codes a tile size. It asks ``decide(name, choices, default)``; an untuned build answers
with the target family's default, a tuning run answers with a sampled decision (``sch.sample_categorical``,
which MetaSchedule's evolutionary search mutates and its XGBoost cost model ranks), and a tuning record
answers with what was measured best. This is AutoTVM's template idea on MetaSchedule's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["GPU_THREADS", "Knob", "Family", "family_of", "Decider", "DefaultDecider", "FixedDecider", "SampledDecider"]


@dataclass(frozen=True)
class Knob:
    """One tunable decision: ``name`` (unique within a template), the ``choices`` a tuner may pick from."""

    name: str
    choices: tuple[Any, ...]
    doc: str = ""


GPU_THREADS = Knob("gpu.threads", (32, 64, 128, 256, 512, 1024), "threads per block (every CUDA template)")


@dataclass(frozen=True)
class Family:
    """What a template needs to know about a target: vector lanes (float32), registers, GPU or not."""

    name: str  # x86-avx512 | x86-avx2 | x86 | arm-neon64 | arm-neon32 | cuda
    vector_lanes: int
    vector_registers: int
    gpu: bool = False
    threads: int = 0  # CPU worker threads the defaults assume (0: the runtime's choice)


_FAMILIES = {
    "x86-avx512": Family("x86-avx512", 16, 32),
    "x86-avx2": Family("x86-avx2", 8, 16),
    "x86": Family("x86", 4, 16),
    "arm-neon64": Family("arm-neon64", 4, 32),
    "arm-neon32": Family("arm-neon32", 4, 16),
    "cuda": Family("cuda", 1, 0, gpu=True),
}

_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake", "sapphirerapids", "tigerlake",
                "znver4", "znver5", "graniterapids", "emeraldrapids", "rocketlake", "alderlake-avx512")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "znver1", "znver2", "znver3", "alderlake", "x86-64-v3", "raptorlake")


def family_of(target: Any) -> Family:
    """The template family of a ``tvm.target.Target``."""
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
        return _FAMILIES["x86-avx512"]
    if mcpu.startswith(_AVX2_CPUS) or "+avx2" in mattr:
        return _FAMILIES["x86-avx2"]
    return _FAMILIES["x86"]


class Decider:
    """Answers a template's questions. Subclasses choose how; every answer is recorded in ``decisions``."""

    def __init__(self) -> None:
        self.decisions: dict[str, Any] = {}

    def __call__(self, knob: Knob, default: Any) -> Any:
        value = self._decide(knob, default)
        if value not in knob.choices:
            raise ValueError(f"knob {knob.name}: {value!r} is not one of {knob.choices}")
        self.decisions[knob.name] = value
        return value

    def _decide(self, knob: Knob, default: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class DefaultDecider(Decider):
    """The family default for every knob: what a never-tuned build uses."""

    def _decide(self, knob: Knob, default: Any) -> Any:
        return default


@dataclass
class FixedDecider(Decider):
    """Decisions from a tuning record; knobs the record lacks fall back to the default."""

    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def _decide(self, knob: Knob, default: Any) -> Any:
        return self.values.get(knob.name, default)


class SampledDecider(Decider):
    """Decisions sampled in a ``tvm.s_tir.Schedule``, so MetaSchedule can search them (uniform prior)."""

    def __init__(self, sch: Any) -> None:
        super().__init__()
        self.sch = sch

    def _decide(self, knob: Knob, default: Any) -> Any:
        n = len(knob.choices)
        rv = self.sch.sample_categorical(list(range(n)), [1.0 / n] * n)
        return knob.choices[int(self.sch.get(rv))]


def nearest(choices: Sequence[int], want: int) -> int:
    """The choice closest to ``want`` (ties to the smaller)."""
    return min(choices, key=lambda c: (abs(c - want), c))
