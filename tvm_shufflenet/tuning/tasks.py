"""Tuning tasks: the kernels of the project's own compiled graph.

Every template kernel (its template and spec) and every kernel that falls back to the plain schedule becomes
one task, deduplicated across the models given (the same kernel in two models is tuned once) and weighted by
how often the networks call it, so MetaSchedule's task scheduler spends trials where the time goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..compiler.lower import KERNEL_ATTR
from ..compiler.tuning import fallback_key
from ..schedules import template

__all__ = ["Task", "extract_tasks", "fallback_key"]


@dataclass
class Task:
    """One kernel to tune. ``key`` is the tuning log's key: ``"<template>:<spec json>"`` for template kernels,
    ``"fallback:<structural hash>"`` for the rest."""

    key: str
    name: str
    workload: Any  # the unscheduled PrimFunc
    weight: int = 0  # calls per inference, summed over the models
    models: list[str] = field(default_factory=list)
    flops: float = 0.0  # per call (2 x multiply-adds for templates; estimated by TVM for the rest)

    @property
    def template(self) -> str | None:
        kind, _, _ = self.key.partition(":")
        return None if kind == "fallback" else kind

    @property
    def spec_json(self) -> str:
        return self.key.partition(":")[2]


def _estimate_flops(func: Any) -> float:
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # noqa: BLE001 - opaque ops: no estimate
        return 0.0


def _workload(key: str, func: Any, target: Any) -> Any:
    """The unscheduled kernel a task searches: the template's compute, or the stock kernel itself."""
    name, _, spec_json = key.partition(":")
    if name == "fallback":
        return func.without_attr("global_symbol") if "global_symbol" in func.attrs.keys() else func
    tpl = template(name)
    return tpl.workload(tpl.parse(spec_json), target)


def extract_tasks(models: list[str], target_spec: Any, *, input_size: int | None = None, batch: int = 1,
                  include_fallback: bool = True, precision: Any = None) -> list[Task]:
    """Tasks of ``models`` compiled for ``target_spec`` with the project's pipeline (in ``precision``, a
    :class:`~tvm_shufflenet.precision.Precision`; default fp32), heaviest first."""
    import tvm
    from tvm import relax

    from ..build import load_source
    from ..compiler.graph import op_name
    from ..compiler.pipeline import lower

    target = target_spec.tvm_target()
    tasks: dict[str, Task] = {}
    for model in models:
        src = load_source(model, input_size=input_size, batch=batch)
        # reshapes the VM turns into zero-copy views are not kernels
        lowered = relax.transform.RewriteDataflowReshape()(lower(src.mod, target, fallback=False, precision=precision))
        calls: dict[str, int] = {}

        def visit(expr: Any) -> None:
            if op_name(expr) == "relax.call_tir":
                name = expr.args[0].name_hint
                calls[name] = calls.get(name, 0) + 1

        relax.analysis.post_order_visit(lowered["main"], visit)
        for gv, func in lowered.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in calls:
                continue
            attrs = func.attrs.keys() if func.attrs is not None else []
            if KERNEL_ATTR in attrs:
                key = str(func.attrs[KERNEL_ATTR])
                tname, _, spec_json = key.partition(":")
                flops = 2.0 * template(tname).macs(template(tname).parse(spec_json))
            elif include_fallback and "tirx.is_scheduled" not in attrs:
                flops = _estimate_flops(func)
                if flops <= 0:  # a pure copy (fused reshapes): nothing for a schedule search to win
                    continue
                key = fallback_key(func)
            else:
                continue
            task = tasks.get(key)
            if task is None:
                task = tasks[key] = Task(key, gv.name_hint, _workload(key, func, target), flops=flops)
            task.weight += calls[gv.name_hint]
            if model not in task.models:
                task.models.append(model)
    return sorted(tasks.values(), key=lambda t: -(t.weight * max(t.flops, 1.0)))
