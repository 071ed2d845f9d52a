"""Export: the best measured decision per kernel, checked, into ``tuning_logs/<target key>.json``.

For each task the database's best records become knob values (template space) or stored traces (generic
space, kernels without a template). Before one is written, the candidates (the database's best two distinct
schedules and the log's earlier record) and the untuned kernel run on the same random inputs, on this machine
or on the board, timed in interleaved rounds: a machine whose speed drifts (a shared VM here ran 2x slower for
seconds at a time) slows every candidate of a round alike, while the search measured each candidate once, at
whatever speed the machine had then, so its best was partly luck. The candidate with the lowest median
(over rounds) of its time over the untuned kernel's in the same round wins if that ratio is below
``1 - MARGIN``; a candidate whose output differs is dropped, and when none wins, the defaults stay. The log keeps records of
kernels this run did not touch, and is replaced atomically. Records an older template made (a knob today's
template has and the record lacks) are dropped, and a record of a task this run did not measure is checked
again, the same way, against today's defaults.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bench.records import cpu_name, write_json_atomic

__all__ = ["export_log", "default_kernel", "tuned_kernel", "run_kernels", "MARGIN", "ROUNDS", "CANDIDATES"]

MARGIN = 0.02  # a tuned kernel must beat the defaults by this much (paired, median over rounds) to be recorded
ROUNDS = 7  # interleaved timing rounds per kernel at export
CANDIDATES = 2  # the database's best distinct schedules re-timed per kernel (each costs a compile)


def default_kernel(task: Any, target: Any) -> Any:
    """The kernel an untuned build runs: the template's defaults, or the plain fallback schedule."""
    from tvm.s_tir import Schedule

    from ..compiler.fallback import schedule_one
    from ..schedules import DefaultDecider, template

    if task.template is None:
        return schedule_one(task.workload, target)
    tpl = template(task.template)
    sch = Schedule(task.workload)
    tpl.schedule(sch, tpl.parse(task.spec_json), target, DefaultDecider())
    return sch.mod["main"]


def tuned_kernel(task: Any, target: Any, knobs: dict | None, trace_json: str | None) -> Any:
    from tvm.s_tir import Schedule

    from ..schedules import FixedDecider, template
    from .space import apply_trace_json

    if trace_json is not None:
        return apply_trace_json(task.workload, trace_json)
    tpl = template(task.template)
    sch = Schedule(task.workload)
    tpl.schedule(sch, tpl.parse(task.spec_json), target, FixedDecider(dict(knobs)))
    return sch.mod["main"]


def _param_shapes(func: Any) -> list[tuple[list[int], str]]:
    import tvm

    shapes = []
    for p in func.params:
        ty = p.ty if hasattr(p, "ty") else p.type_annotation
        if isinstance(ty, tvm.ir.PointerType) or not hasattr(ty, "shape"):
            raise ValueError("kernel parameters without a static shape")
        shapes.append(([int(v) for v in ty.shape], str(ty.dtype)))
    return shapes


def run_kernels(funcs: list[Any], spec: Any, session: Any = None, seed: int = 0, rounds: int = ROUNDS
                ) -> list[tuple[np.ndarray, list[float]]]:
    """Each kernel on the same random inputs: ``(output, seconds per round)``; on a board when ``session``.

    All are built and loaded first, then timed in ``rounds`` interleaved rounds (each kernel once per round,
    the order rotating), so drift of the machine's speed lands on all of them alike."""
    import tempfile

    import tvm
    from tvm.support import cc

    target = spec.tvm_target()
    shapes = _param_shapes(funcs[0])
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(s).astype(d) for s, d in shapes[:-1]]
    loaded = []
    with tempfile.TemporaryDirectory(prefix="tvm_shufflenet_check_") as tmp:
        for func in funcs:
            lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
            if session is None:
                mod, dev = lib.mod, tvm.cpu()
            else:
                # a new name per library: overwriting a library the board process has loaded crashes it
                name = f"tvm_shufflenet_check_{uuid.uuid4().hex[:12]}.so"
                path = os.path.join(tmp, name)
                lib.export_library(path, fcompile=cc.cross_compiler(spec.cross_compiler) if spec.cross_compiler else None)
                session.upload(path)
                mod, dev = session.load_module(name), session.cpu()
            args = [tvm.runtime.tensor(a, dev) for a in inputs]
            out = tvm.runtime.tensor(np.zeros(shapes[-1][0], shapes[-1][1]), dev)
            mod["main"](*args, out)
            timer = mod.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=10 if session is None else 0)
            loaded.append((out.numpy(), lambda timer=timer, args=args, out=out: float(np.median(timer(*args, out).results))))
        times: list[list[float]] = [[] for _ in funcs]
        for r in range(rounds):
            for k in range(len(funcs)):
                i = (k + r) % len(funcs)
                times[i].append(loaded[i][1]())
    return [(out, ts) for (out, _), ts in zip(loaded, times)]


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times[r] / reference[r]``."""
    return float(np.median(np.asarray(times) / np.asarray(reference)))


def _candidates(db: Any, workload: Any, t: Any, target: Any, space: str, trace_knobs: Any
                ) -> list[tuple[dict | None, str | None]]:
    """The database's best distinct schedules of a task, as ``(knobs, trace json)``."""
    import tvm

    found: list[tuple[dict | None, str | None]] = []
    seen: set[str] = set()
    for rec in db.get_top_k(workload, 4 * CANDIDATES):
        if space == "templates" and t.template is not None:
            try:
                cand = (trace_knobs(rec.trace, t.template, t.spec_json, target), None)
            except ValueError:  # measured with an older version of the template: its knobs cannot be read back
                continue
        else:
            cand = (None, tvm.ir.save_json(rec.trace.as_json()))
        tag = json.dumps(cand[0], sort_keys=True) if cand[0] is not None else cand[1]
        if tag not in seen:
            seen.add(tag)
            found.append(cand)
        if len(found) == CANDIDATES:
            break
    return found


def _load_raw(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON: restore it from git or delete it before tuning again") from None
    return data if isinstance(data, dict) else {}


def export_log(cfg: Any, spec: Any, address: Any, tasks: list[Any], db: Any, threads: int,
               echo: Callable[[str], None] = print, work_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the best checked decisions of ``tasks`` into the target's tuning log; returns ``(path, summary)``."""
    import tvm

    from ..compiler.tuning import log_path
    from ..schedules import family_of
    from .space import trace_knobs

    target = spec.tvm_target()
    path = Path(cfg.log) if cfg.log else log_path(spec.key)
    log = _load_raw(path)
    kernels, traces, measured = log.get("kernels", {}), log.get("traces", {}), log.get("measured", {})
    session = None
    if address is not None:
        from ..rpc.board import connect

        session = connect(address, wait_timeout=120)
    summary: dict[str, Any] = {"kept": 0, "default_faster": 0, "mismatch": 0, "unmeasured": 0, "stale": 0}
    for key in [k for k, v in kernels.items() if _stale(k, v, target)]:
        kernels.pop(key)
        measured.pop(key, None)
        summary["stale"] += 1
    if summary["stale"]:
        echo(f"      {summary['stale']} records of an older template dropped (their kernels build with the defaults)")
    from tqdm import tqdm

    for t in tqdm(tasks, desc="export", unit="kernel", leave=False, disable=None):  # None: a bar on a TTY only
        workload = db.commit_workload(tvm.IRModule({"main": t.workload}))
        cands = _candidates(db, workload, t, target, cfg.space, trace_knobs)
        earlier = (kernels.get(t.key), traces.get(t.key))
        if earlier != (None, None) and earlier not in cands:  # the log's record competes again, against today's defaults
            cands.append(earlier)
        if not cands:
            summary["unmeasured"] += 1
            continue
        (want, t_default), *tried = run_kernels(
            [default_kernel(t, target), *(tuned_kernel(t, target, k, tr) for k, tr in cands)], spec, session)
        valid = []
        for cand, (got, times) in zip(cands, tried):
            err = float(np.abs(got - want).max()) if want.size else 0.0
            if np.isfinite(err) and err <= 1e-4 * max(float(np.ptp(want)), 1e-6) + 1e-6:
                valid.append((paired_ratio(times, t_default), cand, times))
            else:
                echo(f"      {t.name}: a tuned schedule's output differs from the untuned kernel (max error {err:.3g}): "
                     "not recorded")
        if len(valid) < len(cands):
            summary["mismatch"] += 1
        if not valid:  # nothing right today, the log's own record included: it goes
            kernels.pop(t.key, None)
            traces.pop(t.key, None)
            measured.pop(t.key, None)
            continue
        ratio, (knobs, trace_json), t_tuned = min(valid, key=lambda v: v[0])
        entry = {"default_us": round(float(np.median(t_default)) * 1e6, 2),
                 "tuned_us": round(float(np.median(t_tuned)) * 1e6, 2), "tuned_ratio": round(ratio, 3),
                 "calls": t.weight, "models": sorted(t.models)}
        if ratio >= 1 - MARGIN:
            summary["default_faster"] += 1
            kernels.pop(t.key, None)
            traces.pop(t.key, None)
            measured[t.key] = {**entry, "applied": "default"}
            continue
        summary["kept"] += 1
        if knobs is not None:
            kernels[t.key] = knobs
            traces.pop(t.key, None)
        else:
            traces[t.key] = trace_json
            kernels.pop(t.key, None)
        measured[t.key] = {**entry, "applied": "tuned"}
    if work_dir is not None:  # this run's kernels, untuned and tuned, beside its database (convergence plots)
        write_json_atomic(Path(work_dir) / "export.json", {k: measured[k] for k in (t.key for t in tasks) if k in measured})
    if session is not None:
        from ..rpc.board import release

        release(session)
    made_by = {
        "command": cfg.command or "tvm-shufflenet tune " + " ".join(cfg.models),
        "machine": _machine(address),
        "trials": cfg.trials,
        "space": cfg.space,
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tvm_version": tvm.__version__,
    }
    history = [*log.get("history", []), made_by][-20:]
    write_json_atomic(path, {"target_key": spec.key, "family": family_of(target).name, "made_by": made_by,
                             "history": history, "kernels": kernels, "traces": traces, "measured": measured},
                      sort_keys=True)
    default_ms = sum(v["default_us"] * v["calls"] for k, v in measured.items() if k in {t.key for t in tasks}) / 1e3
    tuned_ms = sum((v["tuned_us"] if v["applied"] == "tuned" else v["default_us"]) * v["calls"]
                   for k, v in measured.items() if k in {t.key for t in tasks}) / 1e3
    summary.update(default_ms=round(default_ms, 3), tuned_ms=round(tuned_ms, 3))
    echo(f"      {path}: {summary['kept']} kernels tuned, {summary['default_faster']} keep their defaults, "
         f"{summary['mismatch']} mismatched, {summary['unmeasured']} unmeasured, {summary['stale']} stale records "
         f"dropped; kernels alone sum to "
         f"{default_ms:.3f} ms untuned -> {tuned_ms:.3f} ms tuned per inference")
    return path, summary


def _stale(key: str, knobs: dict[str, Any], target: Any) -> bool:
    """A template record its template no longer takes whole (a knob it lacks, a value out of range)."""
    from tvm.s_tir import Schedule

    from ..schedules import FixedDecider, template

    name, _, spec_json = key.partition(":")
    try:
        tpl = template(name)
        spec = tpl.parse(spec_json)
        decider = FixedDecider(dict(knobs))
        tpl.schedule(Schedule(tpl.workload(spec, target)), spec, target, decider)
    except Exception:  # noqa: BLE001 - a record no template of today can read
        return True
    return decider.stale


def _machine(address: Any) -> str:
    if address is not None:
        return f"board {address}"
    return f"{cpu_name()}, {os.cpu_count()} CPUs ({platform.machine()})"
