"""Throughput of one loaded model called from 1, 2, 4, ... Python threads at once (what a server's pool does).

One library, one ``load()``, each caller thread calling the model in a loop on its own input; images per second
over all callers, per-call latency percentiles, and every output checked against the sequential one. Two ways
of sharing a model are measured side by side, in alternating rounds so the machine's drift hits both alike:
``pool`` is ``CompiledModel`` as shipped (a VM per concurrent call over one loaded library), ``lock`` is the
alternative it was measured against (callers take turns on one model behind a global lock).

Run ``tvm-shufflenet concurrency --help`` or ``python benchmarks/concurrency.py --help``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tvm_shufflenet.bench.records import cpu_name

MODES = ("pool", "lock")
IDLE_S = 0.3  # lets the last point's TVM worker threads stop spinning before the next point starts


def measure(model: Any, callers: int, calls: int, mode: str, inputs: list[np.ndarray], want: list[np.ndarray]) -> dict[str, Any]:
    """``calls`` calls spread over ``callers`` threads: throughput, latency percentiles, wrong outputs."""
    lock = threading.Lock() if mode == "lock" else None
    per_caller = max(1, calls // callers)
    latencies: list[list[float]] = [[] for _ in range(callers)]
    wrong = [0] * callers
    start = threading.Barrier(callers + 1)

    def work(i: int) -> None:
        model(inputs[i % len(inputs)])  # this thread's TVM pool and a VM of its own exist before timing
        start.wait()
        for n in range(per_caller):
            k = (i + n) % len(inputs)
            t0 = time.perf_counter()
            if lock is None:
                out = model(inputs[k])
            else:
                with lock:
                    out = model(inputs[k])
            latencies[i].append(time.perf_counter() - t0)
            wrong[i] += not np.array_equal(out, want[k])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.concatenate([np.asarray(v) for v in latencies]) * 1e3
    return {"images_per_s": per_caller * callers * int(model.input_shape[0]) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "wrong_outputs": int(sum(wrong))}


def run_benchmark(library: Path, callers: list[int], calls: int, rounds: int, threads: int | None, modes: list[str],
                  out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every (mode, callers) point ``rounds`` times, alternating; the JSON is rewritten after each round."""
    from tvm_shufflenet.bench.records import write_json_atomic
    from tvm_shufflenet.runtime import load, set_threads

    per_call = set_threads(threads)
    model = load(library)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(model.input_shape).astype(np.float32) for _ in range(4)]
    want = [model(x) for x in inputs]
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {(m, c): [] for m in modes for c in callers}
    result: dict[str, Any] = {}
    points = len(samples) * rounds
    done, started = 0, time.perf_counter()
    for r in range(rounds):
        for key in samples:
            samples[key].append(measure(model, key[1], calls, key[0], inputs, want))
            done += 1
            if progress:
                eta = (time.perf_counter() - started) / done * (points - done)
                print(f"\r  round {r + 1}/{rounds}, {done}/{points} points, ETA {eta:.0f} s ", end="", file=sys.stderr, flush=True)
            time.sleep(IDLE_S)
        result = summarize(model, library, samples, per_call, calls, r + 1)
        if out:
            write_json_atomic(out, result)
    if progress:
        print(file=sys.stderr)
    return result


def summarize(model: Any, library: Path, samples: dict[tuple[str, int], list[dict[str, Any]]], per_call: int, calls: int, rounds: int) -> dict[str, Any]:
    rows = []
    base = {m: float(np.median([s["images_per_s"] for s in samples[(m, c)]])) for (m, c) in samples if c == min(c for _, c in samples)}
    for (mode, callers), runs in samples.items():
        ips = float(np.median([s["images_per_s"] for s in runs]))
        rows.append({"mode": mode, "callers": callers, "images_per_s": round(ips, 2),
                     "vs_one_caller": round(ips / base[mode], 3),
                     "p50_ms": round(float(np.median([s["p50_ms"] for s in runs])), 3),
                     "p95_ms": round(float(np.median([s["p95_ms"] for s in runs])), 3),
                     "wrong_outputs": int(sum(s["wrong_outputs"] for s in runs))})
    return {"library": str(library), "model": model.metadata["model"], "target_key": model.metadata["target_key"],
            "tuning_log": model.metadata.get("tuning_log"), "threads_per_call": per_call, "calls_per_point": calls,
            "rounds": rounds, "cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'mode':<6} {'callers':>7} {'images/s':>9} {'vs 1 caller':>11} {'p50 ms':>8} {'p95 ms':>8} {'wrong':>6}"]
    for r in sorted(result["rows"], key=lambda r: (MODES.index(r["mode"]), r["callers"])):
        lines.append(f"{r['mode']:<6} {r['callers']:>7} {r['images_per_s']:>9.1f} {r['vs_one_caller']:>10.2f}x "
                     f"{r['p50_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['wrong_outputs']:>6}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tvm_shufflenet.bench.records import save_figure_atomic

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        rows = sorted((r for r in result["rows"] if r["mode"] == mode), key=lambda r: r["callers"])
        if rows:
            ax.plot([r["callers"] for r in rows], [r["images_per_s"] for r in rows], "o-",
                    label={"pool": "VM pool (shipped)", "lock": "one model behind a lock"}[mode])
    ax.set_xlabel("caller threads")
    ax.set_ylabel("images / s (all callers)")
    ax.set_xticks(sorted({r["callers"] for r in result["rows"]}))
    ax.set_ylim(bottom=0)
    ax.set_title(f"{result['model']}, {result['threads_per_call']} TVM threads per call, {result['cpus']} CPUs", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure_atomic(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("library", help="a .so built by `compile` for this machine")
    p.add_argument("--callers", default="1,2,4", help="caller thread counts, comma-separated (default 1,2,4)")
    p.add_argument("--calls", type=int, default=200, help="calls per point, over all callers (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported (default 5)")
    p.add_argument("--threads", type=int, help="TVM threads per call (default: every CPU here)")
    p.add_argument("--modes", default="pool,lock", help="pool (CompiledModel as shipped), lock (one model behind a lock)")
    p.add_argument("--json", help="write the result here (rewritten after each round)")
    p.add_argument("--plot", help="PNG of images/s against caller threads")


def run(args: argparse.Namespace) -> int:
    try:
        callers = sorted({int(c) for c in args.callers.split(",")})
    except ValueError:
        print(f"error: --callers takes comma-separated counts like 1,2,4, not {args.callers!r}", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if not callers or min(callers) < 1 or any(m not in MODES for m in modes) or not modes:
        print(f"error: --callers must be positive counts and --modes a subset of {','.join(MODES)}", file=sys.stderr)
        return 2
    result = run_benchmark(Path(args.library), callers, args.calls, args.rounds, args.threads, modes,
                           Path(args.json) if args.json else None)
    print(f"{result['model']} ({result['library']}), {result['threads_per_call']} TVM threads per call, "
          f"{result['cpus']} CPUs ({result['cpu']}), median of {result['rounds']} rounds of {result['calls_per_point']} calls")
    print(table(result))
    if args.plot:
        plot(result, Path(args.plot))
        print(f"wrote {args.plot}")
    return 1 if any(r["wrong_outputs"] for r in result["rows"]) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concurrency", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
