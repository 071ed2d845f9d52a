"""The tuning run: MetaSchedule over the project's kernels, on this machine or on boards over RPC.

Candidates are built (and for a board, cross-linked) on this machine, so a board needs only the TVM runtime.
Measurements run with the deployment thread count. The MetaSchedule database in the work dir receives every
measurement as it arrives; a rerun of the same command counts what the database already holds against each
task's budget, so after Ctrl-C, a crash or a lost board nothing is measured twice. The best decisions go to
``tuning_logs/<target key>.json`` (:mod:`.export`) only after each tuned kernel matched the untuned one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from .tasks import Task, extract_tasks

__all__ = ["TuneConfig", "TuneError", "tune", "open_database", "measured_counts"]

SPACES = ("templates", "generic")


class TuneError(UserError, ValueError):
    """A tuning run that cannot start (bad arguments, no board, nothing to tune)."""


@dataclass
class TuneConfig:
    """What ``tvm-shufflenet tune`` was asked (see its ``--help``)."""

    models: list[str]
    target: str = "host"
    trials: int = 256  # measurements in all, over every task
    space: str = "templates"
    work_dir: Path | None = None
    threads: int | None = None
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    rpc: str | None = None
    input_size: int | None = None
    batch: int = 1
    per_iter: int = 16  # candidates measured per task per round
    seed: int = 0
    log: Path | None = None  # the tuning log written (default tuning_logs/<target key>.json)
    export: bool = True
    precision: str = "fp32"  # fp32, bf16, fp16: the kernels tuned are those of a build in this precision
    command: str = ""  # recorded in the log's made_by
    include_fallback: bool = True
    max_kernels: int | None = None  # only the heaviest kernels (calls x FLOPs)
    session_timeout: float = 120.0


@dataclass
class TuneResult:
    target_key: str
    work_dir: Path
    tasks: list[Task]
    trials_run: int
    trials_total: int
    seconds: float
    log: Path | None = None
    exported: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (trials, seconds, model estimate ms)


def open_database(work_dir: Path) -> Any:
    """The run's MetaSchedule JSON database (appended to as measurements arrive)."""
    from tvm.s_tir import meta_schedule as ms

    from ..schedules.amx import register_named
    from ..schedules.intrinsics import register

    register()  # the database replays its traces on load, bf16 dot products (tensorize) included
    work_dir.mkdir(parents=True, exist_ok=True)
    records = work_dir / "database_tuning_record.json"
    if records.exists():  # and the AMX tile kernels, one intrinsic per geometry, named in the traces
        register_named(records.read_text())
    return ms.database.JSONDatabase(path_workload=str(work_dir / "database_workload.json"),
                                    path_tuning_record=str(records),
                                    module_equality="structural")


def _mod(func: Any) -> Any:
    import tvm

    return tvm.IRModule({"main": func})


def measured_counts(db: Any, tasks: list[Task]) -> dict[str, int]:
    """Measurements the database holds per task (a resumed run subtracts them from the budgets)."""
    from tvm_ffi import structural_hash

    by_hash: dict[int, int] = {}
    for rec in db.get_all_tuning_records():
        h = structural_hash(rec.workload.mod)
        by_hash[h] = by_hash.get(h, 0) + 1
    return {t.key: by_hash.get(structural_hash(_mod(t.workload)), 0) for t in tasks}


def fast_build(mod: Any, target: Any, _params: Any = None) -> Any:
    """Builder function: ``tvm.compile`` of a scheduled kernel, without the default builder's import of every
    tensor intrinsic (about 15 s per new worker, every batch), which float32 templates never use."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.compile(mod, target=target)


def _export_with(cross_compiler: str | None) -> Callable[[Any], str]:
    """Builder export: a linked ``.so`` (cross-linked for a board: its own linker is not needed there)."""

    def export(rt_mod: Any) -> str:
        import tempfile

        from tvm.support import cc

        # one folder per artifact: MetaSchedule removes the artifact's whole folder once it is measured
        path = os.path.join(tempfile.mkdtemp(prefix="tvm_shufflenet_tune_"), "kernel.so")
        # a fresh compiler function per call: cross_compiler's closure accumulates options across calls
        fcompile = cc.cross_compiler(cross_compiler) if cross_compiler else None
        rt_mod.export_library(path, fcompile=fcompile) if fcompile else rt_mod.export_library(path)
        return path

    return export


def _direct_session(host: str, port: int, key: str, timeout: float) -> Callable[[Any], Any]:
    def create(_config: Any) -> Any:
        from tvm import rpc

        return rpc.connect(host, port, key=key, session_timeout=timeout)

    return create


def _synchronous(runner: Any, progress: "_Progress") -> Any:
    """``runner`` made to finish its measurements before the search goes on: MetaSchedule otherwise builds and
    searches the next kernel while this one is being timed, and on a small machine the two share the cores.
    It also moves the progress bar as measurements finish (MetaSchedule reports them to its callbacks only when
    it next visits the kernel)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture

    @derived_object
    class SynchronousRunner(PyRunner):
        def run(self, runner_inputs: list) -> list:
            results = [f.result() for f in runner.run(runner_inputs)]
            progress.measured(len(results))
            return [RunnerFuture(f_done=lambda: True, f_result=lambda r=r: r) for r in results]

    return SynchronousRunner()


def _time_share_scheduler(weights: list[float], progress: "_Progress") -> Any:
    """A task scheduler that puts trials where the network's time goes, and records every round at once.

    First every kernel gets a round, heaviest first (the tasks come sorted by calls x FLOPs); then the next
    round goes to the kernel with the largest share of the model's time per trial spent on it so far
    (calls x best time / trials, as the progress callback saw them). Finished rounds are joined (and so written
    to the database) before the next starts: MetaSchedule's gradient scheduler holds the first round of every
    kernel until all of them ran.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class TimeShareScheduler(PyTaskScheduler):
        def next_task_id(self) -> int:
            outer = self._outer()
            tasks = outer.tasks_
            for i, t in enumerate(tasks):
                if not t.is_terminated:
                    outer.touch_task(i)  # joins a finished round: its records go to the database now
            live = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not live:
                return -1
            fresh = [i for i in live if i not in progress.trials]
            if fresh:
                progress.trials[fresh[0]] = 0
                return fresh[0]
            # a kernel none of whose candidates ran has no time to win back
            return max(live, key=lambda i: weights[i] * progress.best.get(i, 0.0) / max(progress.trials[i], 1))

    return TimeShareScheduler()


def _runner(cfg: TuneConfig, address: Any, evaluator: Any) -> tuple[Any, int]:
    """MetaSchedule's local runner, or its RPC runner over every board under the key (in parallel)."""
    from tvm.s_tir import meta_schedule as ms

    if address is None:
        return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator), 1
    from ..rpc.board import connect, release, tracker_boards

    session = connect(address, wait_timeout=30)  # fails in one line now, not inside a worker later
    release(session)
    if address.direct:
        host, port = address.direct
        # no tracker: the session comes from f_create_session; the config only has to be complete
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=address.key or "direct",
                                     session_timeout_sec=cfg.session_timeout)
        return ms.runner.RPCRunner(config, evaluator, max_workers=1,
                                   f_create_session=_direct_session(host, port, address.key or "", cfg.session_timeout)), 1
    boards = next((r["total"] for r in tracker_boards(address.tracker) if r["key"] == address.key), 1)
    config = ms.runner.RPCConfig(tracker_host=address.tracker[0], tracker_port=address.tracker[1],
                                 tracker_key=address.key, session_timeout_sec=cfg.session_timeout)
    return ms.runner.RPCRunner(config, evaluator, max_workers=max(1, boards)), max(1, boards)


class _Progress:
    """A measure callback: one progress bar over the run (task i/n, trials, best time and GFLOP/s of the
    task, whole-model estimate, elapsed, ETA) and a history for convergence plots."""

    def __init__(self, tasks: list[Task], total: int, done: int, started: float, history: list) -> None:
        from tqdm import tqdm

        self.tasks = tasks
        self.best: dict[int, float] = {}
        self.trials: dict[int, int] = {}
        self.started = started
        self.done = done
        self.history = history
        self.bar = tqdm(total=total, initial=done, desc="tune", unit="trial", dynamic_ncols=True)

    def estimate_ms(self) -> float:
        return sum(self.tasks[i].weight * s for i, s in self.best.items()) * 1e3

    def measured(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self.history.append((self.done, time.perf_counter() - self.started, self.estimate_ms()))

    def __call__(self, task_id: int, runner_results: list) -> None:
        """The results of a kernel's round, as MetaSchedule hands them over: best time, GFLOP/s, estimate."""
        t = self.tasks[task_id]
        self.trials[task_id] = self.trials.get(task_id, 0) + len(runner_results)
        for r in runner_results:
            if r.run_secs and not r.error_msg:
                s = sum(float(v) for v in r.run_secs) / len(r.run_secs)
                if s < self.best.get(task_id, math.inf):
                    self.best[task_id] = s
        best = self.best.get(task_id)
        gflops = t.flops / best / 1e9 if best and t.flops else 0.0
        self.bar.set_postfix_str(
            f"task {task_id + 1}/{len(self.tasks)} {t.name}: best {best * 1e6 if best else float('nan'):.1f} us "
            f"{gflops:.0f} GFLOP/s, model ~{self.estimate_ms():.3f} ms (measured kernels)")

    def close(self) -> None:
        self.bar.close()


def _measure_callback(progress: _Progress) -> Any:
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
                  runner_results: Any) -> None:
            progress(task_id, list(runner_results))

    return ProgressCallback()


def resolve_board(cfg: TuneConfig) -> Any:
    from ..rpc.board import BoardAddress

    if not (cfg.rpc or cfg.rpc_tracker):
        if cfg.rpc_key:
            raise TuneError("--rpc-key goes with --rpc-tracker HOST:PORT (or with --rpc HOST:PORT)")
        return None
    return BoardAddress.parse(cfg.rpc_tracker, cfg.rpc_key, cfg.rpc)


def _say(text: str) -> None:
    print(text, flush=True)  # interleaved with the progress bar on stderr, and with logs when redirected


def tune(cfg: TuneConfig, echo: Callable[[str], None] = _say) -> TuneResult:
    """Tune the kernels of ``cfg.models`` for ``cfg.target``; export the best decisions as a tuning log."""
    from ..runtime import set_threads
    from ..targets import resolve

    if cfg.space not in SPACES:
        raise TuneError(f"unknown --space {cfg.space!r}; use templates or generic")
    if cfg.trials < 1:
        raise TuneError("--trials must be at least 1")
    spec = resolve(cfg.target)
    if spec.device != "cpu":
        raise TuneError("tuning needs a CPU target here (CUDA kernels are measured on a GPU machine)")
    from ..precision import for_target

    prec, spec = for_target(cfg.precision, spec)  # fp16 adds +fullfp16: candidates build as the library will
    spec.check_toolchain()
    address = resolve_board(cfg)
    if address is None and spec.elf_machine != _host_machine():
        raise TuneError(f"{spec.name} libraries do not run on this {_host_machine()} machine: measure on a board "
                        f"with --rpc-tracker HOST:PORT --rpc-key KEY (or --rpc HOST:PORT)")
    threads = cfg.threads or (os.cpu_count() or 1)
    # The runner's worker process inherits this: measurements use the deployment thread count.
    os.environ["TVM_NUM_THREADS"] = str(threads)
    if address is None:
        set_threads(threads)
    work_dir = Path(cfg.work_dir or Path("build") / "tune" / spec.key)
    started = time.perf_counter()
    echo(f"[1/3] extract tasks of {', '.join(cfg.models)} for {spec.key}")
    tasks = extract_tasks(cfg.models, spec, input_size=cfg.input_size, batch=cfg.batch,
                          include_fallback=cfg.include_fallback, precision=prec)
    if cfg.max_kernels:
        tasks = tasks[: cfg.max_kernels]
    if not tasks:
        raise TuneError("no kernels to tune in these models")
    db = open_database(work_dir)
    _write_tasks(work_dir, tasks)
    have = measured_counts(db, tasks)
    done = sum(have.values())
    echo(f"      {len(tasks)} kernels ({sum(t.weight for t in tasks)} calls per inference), "
         f"{done} measurements already in {work_dir}")
    history: list[tuple[int, float, float]] = []
    remaining = cfg.trials - done
    run = 0
    if remaining > 0:
        run = _search(cfg, spec, address, tasks, db, work_dir, have, remaining, threads, started, history, echo)
    else:
        echo(f"[2/3] nothing left to measure: {done} of {cfg.trials} trials done (raise --trials to go on)")
    result = TuneResult(spec.key, work_dir, tasks, run, cfg.trials, time.perf_counter() - started, history=history)
    if cfg.export:
        from ..rpc.emulate import is_emulated
        from .export import export_log

        if cfg.log is None and is_emulated(address):  # qemu's timings are never shipped
            cfg.log = work_dir / "emulated-log.json"
            echo(f"      an emulated board: its timings say nothing about ARM, so the log goes to {cfg.log}")

        echo("[3/3] export the best decision per kernel (each checked against the untuned kernel)")
        result.log, result.exported = export_log(cfg, spec, address, tasks, db, threads, echo, work_dir)
    return result


def _write_tasks(work_dir: Path, tasks: list[Task]) -> None:
    """``tasks.json`` beside the database: which workload is which kernel, and its weight (for convergence plots)."""
    from tvm_ffi import structural_hash

    from ..bench.records import write_json_atomic

    write_json_atomic(work_dir / "tasks.json", [
        {"key": t.key, "name": t.name, "weight": t.weight, "flops": t.flops, "models": t.models,
         "workload_hash": str(structural_hash(_mod(t.workload)))} for t in tasks])


def _host_machine() -> str:
    from ..elf import host_machine

    return host_machine()


def _search(cfg: TuneConfig, spec: Any, address: Any, tasks: list[Task], db: Any, work_dir: Path,
            have: dict[str, int], remaining: int, threads: int, started: float, history: list,
            echo: Callable[[str], None]) -> int:
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    from .space import generic_space, template_space

    import tvm

    # MetaSchedule sizes its search for the cores the kernels will use.
    target = tvm.target.Target({**spec.target, "num-cores": threads})
    # Per task: at most twice an equal share of the run's trials (at least two rounds); the scheduler gives
    # the rounds to the kernels with the largest share of the model's time.
    cap = max(2 * cfg.per_iter, math.ceil(cfg.trials / len(tasks) * 2))
    live = [t for t in tasks if have[t.key] < cap]
    if not live:
        echo(f"[2/3] every kernel has its share of {cap} trials in the database")
        return 0
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=5 if address is None else 3, min_repeat_ms=20 if address is None else 0,
                                          enable_cpu_cache_flush=False)
    runner, boards = _runner(cfg, address, evaluator)
    builder = ms.builder.LocalBuilder(max_workers=min(2, os.cpu_count() or 1), timeout_sec=120, f_build=fast_build,
                                      f_export=_export_with(spec.cross_compiler))
    names = [f"{i:03d}_{t.name}" for i, t in enumerate(live)]
    # MetaSchedule's per-round tables go to the task logs in the work dir; the console keeps warnings only
    # (the progress bar says the rest).
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    contexts = []
    for i, (t, logger) in enumerate(zip(live, get_loggers_from_work_dir(str(work_dir), names))):
        templated = cfg.space == "templates" and t.template is not None
        space = template_space(t.template, t.spec_json, target) if templated else generic_space()
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=64 if templated else 128, init_min_unmeasured=16 if templated else 32,
            genetic_num_iters=2, init_measured_ratio=0.1)
        contexts.append(ms.TuneContext(_mod(t.workload), target=target, space_generator=space, search_strategy=strategy,
                                       task_name=names[i], rand_state=cfg.seed + i, num_threads=min(2, os.cpu_count() or 1),
                                       logger=logger).clone())
    done = sum(have.values())
    progress = _Progress(live, done + remaining, done, started, history)
    echo(f"[2/3] MetaSchedule: {len(live)} kernels, {remaining} trials ({cfg.space} space, XGBoost cost model, "
         f"evolutionary search), {threads} threads, measured on "
         + (f"{address} ({boards} board{'s' if boards > 1 else ''})" if address else "this machine"))
    try:
        ms.tune.tune_tasks(
            tasks=contexts, task_weights=[float(t.weight) for t in live], work_dir=str(work_dir),
            max_trials_global=remaining, max_trials_per_task=cap, num_trials_per_iter=cfg.per_iter,
            builder=builder, runner=_synchronous(runner, progress), database=db, cost_model=ms.cost_model.XGBModel(adaptive_training=True),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), _measure_callback(progress)],
            task_scheduler=_time_share_scheduler([float(t.weight) for t in live], progress))
    finally:
        progress.close()
    return progress.done - done
