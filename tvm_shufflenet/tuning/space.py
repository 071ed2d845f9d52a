"""A schedule template as a MetaSchedule search space, and measured traces read back as knob values.

Each structural variant of a template (``pw.axis``: pixel or channel vectors) is one design space: the
template applied to the kernel's workload with a :class:`~tvm_shufflenet.schedules.knobs.SampledDecider`, whose
answers are ``sample_categorical`` / ``sample_perfect_tile`` random variables used directly as split factors.
MetaSchedule's evolutionary search replays these traces with other decisions, mutates them (``MutateTileSize``
for tiles, :class:`KnobMutator` for the categorical knobs, which no stock mutator touches) and ranks candidates
with its XGBoost cost model before measuring the most promising.
"""

from __future__ import annotations

import random
from typing import Any

from ..compiler.tuning import apply_trace_json

__all__ = ["template_space", "generic_space", "KnobMutator", "trace_knobs", "apply_trace_json"]


def _mutator_class():
    from tvm.s_tir.meta_schedule.mutator import PyMutator
    from tvm.ir.utils import derived_object

    @derived_object
    class KnobMutator(PyMutator):
        """Moves one categorical knob of a trace to another of its candidates (uniformly)."""

        def __init__(self, seed: int = 0) -> None:
            self.rng = random.Random(seed)

        def _initialize_with_tune_context(self, context: Any) -> None:
            pass

        def apply(self, trace: Any, _rand_state: int) -> Any:
            sites = []
            for inst in trace.insts:
                if inst.kind.name == "SampleCategorical" and len(inst.attrs[0]) > 1:
                    sites.append(inst)
            if not sites:
                return None
            inst = self.rng.choice(sites)
            n = len(inst.attrs[0])
            current = int(trace.decisions[inst])
            new = self.rng.choice([i for i in range(n) if i != current])
            return trace.with_decision(inst, new, remove_postproc=True)

        def clone(self) -> "KnobMutator":
            return KnobMutator(self.rng.randrange(1 << 30))

    return KnobMutator


def KnobMutator(seed: int = 0) -> Any:  # noqa: N802 - a factory for the derived TVM object
    """A :class:`tvm.s_tir.meta_schedule.mutator.PyMutator` over categorical knob decisions."""
    return _mutator_class()(seed)


def template_space(template_name: str, spec_json: str, target: Any) -> Any:
    """The design spaces (one per variant) of a template kernel, as a MetaSchedule ``ScheduleFn``."""
    from tvm.s_tir import meta_schedule as ms

    from ..schedules import SampledDecider, template

    tpl = template(template_name)
    spec = tpl.parse(spec_json)
    names = tpl.variants(spec, target)

    def space(sch: Any) -> list[Any]:
        out = []
        for v in names:
            s = sch.copy()
            tpl.schedule(s, spec, target, SampledDecider(s, v))
            out.append(s)
        return out

    mutators = {ms.mutator.MutateTileSize(): 0.5, KnobMutator(): 0.5}
    return ms.space_generator.ScheduleFn(space, sch_rules=[], postprocs=[], mutator_probs=mutators)


def generic_space() -> str:
    """MetaSchedule's own space (its schedule rules for the target): for kernels no template covers."""
    return "post-order-apply"


def _signature(trace: Any) -> list[str]:
    return [inst.kind.name for inst in trace.insts]


def trace_knobs(trace: Any, template_name: str, spec_json: str, target: Any) -> dict[str, Any]:
    """The knob values a measured template trace stands for (what a tuning log records).

    The template is run once more in each of its variants: the one whose instruction sequence is the trace's
    is the variant, and its knobs come in the order of the trace's sampling instructions.
    """
    from tvm.s_tir import Schedule

    from ..schedules import SampledDecider, template

    tpl = template(template_name)
    spec = tpl.parse(spec_json)
    trace = trace.simplified(remove_postproc=True)
    samples = [inst for inst in trace.insts if inst.kind.name in ("SampleCategorical", "SamplePerfectTile")]
    want = _signature(trace)
    for variant in tpl.variants(spec, target):
        probe = Schedule(tpl.workload(spec, target))
        decider = SampledDecider(probe, variant)
        tpl.schedule(probe, spec, target, decider)
        if _signature(probe.trace.simplified(remove_postproc=True)) != want or len(decider.order) != len(samples):
            continue
        values: dict[str, Any] = {"pw.axis" if "pw.axis" in decider.decisions else "variant": variant}
        for (name, kind, _cands), inst in zip(decider.order, samples):
            decision = trace.decisions[inst]
            values[name] = [int(v) for v in decision] if kind == "tile" else int(inst.attrs[0][int(decision)])
        return values
    raise ValueError(f"a {template_name} trace matches none of its template's variants")
