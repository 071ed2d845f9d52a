"""Convergence of tuning runs: the whole-model latency estimate against trials (and minutes).

For each tuning work dir (``tvm-shufflenet tune --work-dir``), replays its MetaSchedule database in the order
the measurements arrived: after ``n`` trials the model estimate is the sum over its kernels of calls x the best
time measured so far (the untuned kernel's time, from the run's export, until the search beats it). Reports the
trials and minutes each run needed to come within 10% of its final best, and plots the curves.

Run ``tvm-shufflenet convergence --help`` (or ``python benchmarks/convergence.py --help``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def curve(work_dir: Path) -> dict[str, Any]:
    """``{"trials": [...], "minutes": [...], "estimate_ms": [...], "final_ms", "within_10pct": {...}}``."""
    import numpy as np
    from tvm_ffi import structural_hash

    from tvm_shufflenet.tuning.tuner import open_database

    tasks = json.loads((work_dir / "tasks.json").read_text())
    export = json.loads((work_dir / "export.json").read_text())
    history = json.loads((work_dir / "history.json").read_text())["history"] if (work_dir / "history.json").exists() else []
    by_hash = {t["workload_hash"]: t for t in tasks}
    default = {t["key"]: export[t["key"]]["default_us"] * 1e-6 for t in tasks if t["key"] in export}
    best = dict(default)
    trials, est = [], []
    for n, rec in enumerate(open_database(work_dir).get_all_tuning_records(), 1):
        t = by_hash.get(str(structural_hash(rec.workload.mod)))
        if t is not None and rec.run_secs and t["key"] in best:
            s = float(np.mean([float(v) for v in rec.run_secs]))
            best[t["key"]] = min(best[t["key"]], s)
        trials.append(n)
        est.append(sum(tk["weight"] * best[tk["key"]] for tk in tasks if tk["key"] in best) * 1e3)
    h_trials = [h["trials"] for h in history] or [0]
    h_secs = [h["seconds"] for h in history] or [0.0]
    minutes = [float(np.interp(n, h_trials, h_secs)) / 60 for n in trials]
    final = est[-1] if est else float("nan")
    start = sum(t["weight"] * default[t["key"]] for t in tasks if t["key"] in default) * 1e3
    hit = next((i for i, e in enumerate(est) if e <= 1.1 * final), None)
    return {"work_dir": str(work_dir), "trials": trials, "minutes": minutes, "estimate_ms": est, "untuned_ms": start,
            "final_ms": final, "within_10pct": None if hit is None else {"trials": trials[hit], "minutes": round(minutes[hit], 1)}}


def plot(curves: dict[str, dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, c in curves.items():
        for ax, xs in ((a1, c["trials"]), (a2, c["minutes"])):
            ax.plot(xs, c["estimate_ms"], label=f"{label} (final {c['final_ms']:.2f} ms)")
    for ax, xl in ((a1, "trials"), (a2, "minutes")):
        ax.set_xlabel(xl)
        ax.set_ylabel("whole-model estimate (ms, sum of kernels)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "tuning convergence", fontsize=9)
    fig.tight_layout()
    from tvm_shufflenet.bench.records import save_figure_atomic

    save_figure_atomic(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="tuning work dirs, each optionally LABEL=DIR")
    p.add_argument("--plot", help="PNG with the curves against trials and minutes")
    p.add_argument("--json", help="write the curves and the 10%% points here")
    p.add_argument("--title", default="", help="plot title")


def run(args: argparse.Namespace) -> int:
    from tvm_shufflenet.bench.records import write_json_atomic

    curves = {}
    for item in args.runs:
        label, _, d = item.rpartition("=")
        work = Path(d)
        missing = [f for f in ("tasks.json", "export.json", "database_tuning_record.json") if not (work / f).exists()]
        if missing:
            print(f"error: {work} is not a finished tuning work dir (no {', '.join(missing)}): run `tvm-shufflenet tune "
                  f"--work-dir {work}` first", file=sys.stderr)
            return 2
        curves[label or work.name] = curve(work)
    for label, c in curves.items():
        hit = c["within_10pct"]
        print(f"{label}: {len(c['trials'])} trials, model estimate {c['untuned_ms']:.3f} ms untuned -> {c['final_ms']:.3f} ms; "
              + (f"within 10% of its final best after {hit['trials']} trials, {hit['minutes']} min" if hit else "never within 10%"))
    if args.json:
        write_json_atomic(Path(args.json), curves)
    if args.plot:
        plot(curves, Path(args.plot), args.title)
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convergence", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
