"""``tvm-shufflenet bench``: compile (or take) libraries, run them locally or on boards, check, time, record.

Every model's output on the board is compared with the same library built for this machine, on the same input;
a mismatch is recorded as a failure with no latency. Records are written as soon as each model is measured and
a rerun with the same ``-o`` skips what is already there. Several boards under one tracker key are used in
parallel, one model per board at a time.
"""

from __future__ import annotations

import concurrent.futures
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..elf import read_metadata
from ..errors import UserError
from ..rpc.board import BoardAddress, BoardError, check_reachable, connect, release, run_library, tracker_boards
from .records import RecordFile, summarize

__all__ = ["BenchConfig", "Job", "prepare", "bench", "OUTPUT_RTOL"]

# Board and host differ in float rounding (FMA contraction, vector widths): outputs agree to ~1e-6 of their
# range; 1e-3 of the range still catches any wrong kernel or layout.
OUTPUT_RTOL = 1e-3
# A bf16/fp16 library is checked against the f32 build: its rounding moves outputs by up to ~8e-3 of the range
# (bf16 MobileNet V3 large; fp16 below 5e-3), a wrong kernel by far more.
REDUCED_RTOL = 2e-2


@dataclass
class BenchConfig:
    """How to measure: TVM time-evaluator settings, thread count, and how models are built."""

    repeat: int = 50
    number: int = 1
    min_repeat_ms: int = 0
    warmup: int = 2
    threads: int | None = None
    wait_timeout: float = 120.0
    input_size: int | None = None
    weights: str | None = None
    seed: int = 0
    build_dir: Path = field(default_factory=lambda: Path("build") / "bench")
    board_arch: str | None = None
    pipeline: str = "shufflenet"
    precision: str = "fp32"  # of the libraries built from model names
    tuning: str = "auto"  # "auto" | "none" | a tuning log's path (see build.applied_log)


@dataclass
class Job:
    """One library to measure, with its metadata and this machine's output for the check."""

    model: str
    library: Path
    metadata: dict[str, Any]
    x: np.ndarray
    expected: np.ndarray | None


def _cached_build(model: str, target: str, cfg: BenchConfig, weights: str | None, input_size: int | None, seed: int, num_classes: int = 1000) -> Path:
    from ..build import applied_log, build
    from ..targets import resolve

    spec = resolve(target)
    applied = applied_log(spec, cfg.tuning if cfg.pipeline == "shufflenet" else "none")
    tag = (f"{model}_{input_size or 'native'}_{Path(weights).stem if weights else f'seed{seed}'}_{cfg.pipeline}_"
           f"{cfg.precision}_{applied.tag}")
    path = cfg.build_dir / spec.key / f"{tag}.so"
    if path.exists():
        try:
            read_metadata(path)
            return path
        except UserError:
            path.unlink()
    build(model, spec, path, weights=weights, seed=seed, input_size=input_size, num_classes=num_classes, pipeline=cfg.pipeline,
          tuning=applied.path or "none", precision=cfg.precision)
    return path


def _host_output(meta: dict[str, Any], x: np.ndarray, cfg: BenchConfig) -> np.ndarray | None:
    """The same network built for this machine, on ``x``; ``None`` when its source is not at hand."""
    from ..runtime import load

    weights = meta["weights"]["source"]
    if meta["family"] == "guideline":  # `guidelines` checks these against PyTorch itself
        return None
    if meta["family"] == "onnx":
        if not Path(weights).is_file():
            return None
        source, wfile, seed = weights, None, 0
    else:
        source = meta["model"]
        seed = int(weights.split(":")[1]) if weights.startswith("seeded:") else 0
        wfile = None if weights.startswith("seeded:") else weights
        if wfile and not Path(wfile).is_file():
            return None
    size = meta["input_shape"][-1]
    if meta["input_shape"][0] != 1:
        return None
    # the reference is the float32 build, whatever the library's precision
    lib = _cached_build(source, "host", replace(cfg, precision="fp32"), wfile, size, seed, meta["num_classes"])
    return load(lib)(x)


class Failure(str):
    """One line of a failed item, with the exit code it calls for (2: bad input, 1: the system failed)."""

    exit_code: int

    def __new__(cls, line: str, exit_code: int = 2) -> "Failure":
        self = super().__new__(cls, line)
        self.exit_code = exit_code
        return self

    @classmethod
    def of(cls, item: str, exc: UserError) -> "Failure":
        text = str(exc)
        return cls(text if text.startswith(item) else f"{item}: {text}", getattr(exc, "exit_code", 2))


def prepare(item: str, target: str | None, cfg: BenchConfig) -> Job:
    """A model name (compiled for ``target``, cached) or a ``.so``; refused early if it cannot run on the board."""
    if item.endswith(".so"):
        library = Path(item)
    else:
        if target is None:
            raise UserError(f"{item}: give --target (e.g. rpi4) to compile it, or pass a built .so")
        library = _cached_build(item, target, cfg, cfg.weights, cfg.input_size, cfg.seed)
    info, meta = read_metadata(library)
    if meta["target"].get("device", "cpu") != "cpu":
        raise BoardError(f"{library} is a {meta['target']['device']} library; bench runs CPU libraries")
    if cfg.board_arch and info.machine != cfg.board_arch:
        raise BoardError(f"{library} is built for {info.machine}, the board is {cfg.board_arch}: refused before upload; rebuild it with the board's --target")
    x = np.random.default_rng(cfg.seed).standard_normal(meta["input_shape"]).astype(np.float32)
    return Job(meta["model"], library, meta, x, _host_output(meta, x, cfg))


def _check(job: Job, output: np.ndarray) -> tuple[str, float | None]:
    if job.expected is None:
        return "skipped", None
    err = float(np.abs(output - job.expected).max())
    rtol = OUTPUT_RTOL if job.metadata.get("precision", "fp32") == "fp32" else REDUCED_RTOL
    return ("pass" if err <= rtol * float(np.ptp(job.expected)) else "fail"), err


def _record(job: Job, board: str, emulated: bool, samples: list[float], output: np.ndarray, threads: int, cfg: BenchConfig, number: int) -> dict[str, Any]:
    import tvm

    meta = job.metadata
    check, err = _check(job, output)
    rec: dict[str, Any] = {
        "model": job.model,
        "family": meta["family"],
        "board": board,
        "emulated": emulated,
        "target": meta["target"],
        "target_key": meta["target_key"],
        "library": str(job.library),
        "library_sha256": meta["library_sha256"],
        "tuning_log": meta.get("tuning_log"),
        "precision": meta.get("precision", "fp32"),
        "tvm_version": tvm.__version__,
        "input_shape": meta["input_shape"],
        "mflops": meta["mflops"],
        "threads": threads,
        "number": number,
        "repeat": len(samples),
        "output_check": check,
        "output_max_abs_err": err,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if check == "fail":  # a wrong answer has no latency worth reporting
        rec.update({k: None for k in ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "images_per_s", "gflops")})
        rec["repeats_ms"] = []
        return rec
    stats = summarize(samples)
    batch = meta["input_shape"][0]
    rec.update(stats)
    rec["repeats_ms"] = samples
    rec["images_per_s"] = batch * 1e3 / stats["median_ms"]
    rec["gflops"] = 2 * meta["mflops"] * 1e6 * batch / (stats["median_ms"] * 1e-3) / 1e9
    return rec


def _run_local(job: Job, cfg: BenchConfig):
    import tvm

    from ..runtime import benchmark, load

    model = load(job.library)
    if cfg.threads:
        from ..runtime import set_threads

        set_threads(cfg.threads)
    output = model(job.x)
    samples = benchmark(model, job.x, number=cfg.number, repeat=cfg.repeat, warmup=cfg.warmup, min_repeat_ms=cfg.min_repeat_ms)
    return output, samples, int(tvm.get_global_func("runtime.NumThreads")())


def _is_emulated(address: BoardAddress | None) -> bool:
    from ..rpc.emulate import is_emulated

    return is_emulated(address)


def bench(
    items: list[str],
    target: str | None,
    address: BoardAddress | None,
    cfg: BenchConfig,
    output: str | None = None,
    progress: Callable[[str], None] = print,
    emulated: bool | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Measure every item; returns the records of this run and the failures (one line each)."""
    from tqdm import tqdm

    if address is not None:
        check_reachable(address)  # a wrong address is bad input: said before minutes of compiling
    store = RecordFile(output)
    board = str(address) if address else f"local-{platform.node() or 'host'}"
    emulated = _is_emulated(address) if emulated is None else emulated
    failures: list[str] = []
    jobs: list[Job] = []
    for item in tqdm(items, desc="compile", unit="model", disable=len(items) < 2, leave=False):
        try:
            job = prepare(item, target, cfg)
        except UserError as exc:
            failures.append(Failure.of(item, exc))
            continue
        previous = store.done(job.model, board, job.metadata["target_key"], job.metadata["library_sha256"])
        if previous:
            progress(f"{job.model}: already measured on {board} in {output}, skipped")
            continue
        jobs.append(job)

    workers = 1
    if address and address.tracker:
        rows = {r["key"]: r for r in tracker_boards(address.tracker)}
        workers = max(1, min(len(jobs), rows.get(address.key, {}).get("total", 1)))

    def measure(job: Job) -> dict[str, Any]:
        if address is None:
            out, samples, threads = _run_local(job, cfg)
        else:
            session = connect(address, wait_timeout=cfg.wait_timeout)
            try:
                res = run_library(session, job.library, job.x, number=cfg.number, repeat=cfg.repeat, min_repeat_ms=cfg.min_repeat_ms, warmup=cfg.warmup, threads=cfg.threads)
            finally:
                release(session)
            out, samples, threads = res.output, res.repeats_ms, res.threads
        return _record(job, board, emulated, samples, out, threads, cfg, cfg.number)

    done: list[dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, tqdm(total=len(jobs), desc=f"bench on {board}", unit="model", disable=not jobs) as bar:
        futures = {pool.submit(measure, job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            bar.update(1)
            try:
                rec = future.result()
            except UserError as exc:
                failures.append(Failure.of(job.model, exc))
                continue
            except Exception as exc:  # the board dropped the session, ran out of memory, ...
                failures.append(Failure(f"{job.model}: lost the board during the run ({type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else 'no message'}); rerun to resume", 1))
                continue
            store.add(rec)
            done.append(rec)
            if rec["output_check"] == "fail":
                failures.append(Failure(f"{job.model}: output differs from this machine's (max abs error {rec['output_max_abs_err']:.3g}): not timed", 1))
    return done, failures
