"""Schedule templates for tvm_shufflenet's kernels and per-target tuning settings.

Each template is a TE compute (``workload``: the unscheduled kernel) plus a schedule function (``schedule``)
whose tile sizes, vector widths, thread counts and structural variants are named knobs
(:data:`conv2d.KNOBS`, :data:`pool.KNOBS`, :data:`dense.KNOBS`) answered by a :class:`Decider`: the target
family's defaults (x86 AVX-512/AVX2, ARM NEON, CUDA), a tuning record, or MetaSchedule's sampling.
:func:`template` maps the name a compiled kernel carries (``conv2d``, ``pool``, ``dense``) to its functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from .knobs import Decider, DefaultDecider, Family, FixedDecider, Knob, SampledDecider, family_of

__all__ = ["Decider", "DefaultDecider", "Family", "FixedDecider", "Knob", "SampledDecider", "family_of", "Template",
           "template", "TEMPLATES"]


@dataclass(frozen=True)
class Template:
    """One template: ``parse(spec json) -> spec``, ``workload(spec, target) -> PrimFunc``,
    ``schedule(sch, spec, target, decider) -> decisions``, ``variants(spec, target) -> names``, ``macs(spec)``."""

    name: str
    parse: Callable[[str], Any]
    workload: Callable[[Any, Any], Any]
    schedule: Callable[[Any, Any, Any, Decider], dict]
    variants: Callable[[Any, Any], list]
    macs: Callable[[Any], int]


def _templates() -> dict[str, Template]:
    from . import conv2d, dense, pool

    def pool_spec(text: str) -> Any:
        d = json.loads(text)
        d["pad"] = tuple(d["pad"])
        return pool.PoolSpec(**d)

    def pool_macs(s: Any) -> int:
        return s.n * s.c * s.oh * s.ow * (s.h * s.w if s.kind == "global_avg" else s.kh * s.kw)

    return {
        "conv2d": Template("conv2d", conv2d.ConvSpec.from_json, lambda s, t: conv2d.workload(s, t)[0], conv2d.schedule,
                           lambda s, t: conv2d.variants(s, conv2d.kernel_family(s, family_of(t))), lambda s: s.macs),
        "dense": Template("dense", lambda text: dense.DenseSpec(**json.loads(text)), lambda s, t: dense.workload(s, t)[0],
                          dense.schedule, lambda s, t: ["default"], lambda s: s.n * s.k * s.m),
        "pool": Template("pool", pool_spec, pool.workload, pool.schedule, lambda s, t: ["default"], pool_macs),
    }


TEMPLATES: dict[str, Template] = {}


def template(name: str) -> Template:
    """The template a kernel attribute ``"<name>:<spec json>"`` names."""
    if not TEMPLATES:
        TEMPLATES.update(_templates())
    if name not in TEMPLATES:
        raise KeyError(f"unknown schedule template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]
