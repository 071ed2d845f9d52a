"""``tvm-shufflenet report``: tables (Markdown, CSV) and the ShuffleNet V2 paper's Fig. 1 kind of plot.

For each board: latency against MFLOPs, one series per family. Across boards: one table of median latencies.
Emulated boards are labelled as such everywhere: their timings are qemu's, not the hardware's.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report", "board_label", "flops_vs_speed", "FAMILY_STYLE"]

FAMILY_STYLE = {
    "shufflenet_v1": ("ShuffleNet V1", "o"),
    "shufflenet_v2": ("ShuffleNet V2", "s"),
    "mobilenet_v1": ("MobileNet V1", "^"),
    "mobilenet_v2": ("MobileNet V2", "D"),
    "mobilenet_v3": ("MobileNet V3", "v"),
    "onnx": ("ONNX import", "x"),
}
_COLUMNS = ["model", "family", "board", "emulated", "target_key", "mflops", "median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "images_per_s", "gflops", "threads", "output_check"]


def board_label(board: str, emulated: bool) -> str:
    """A board's name as shown in tables and plots."""
    return f"{board} (emulated: qemu timings, not ARM)" if emulated else board


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return str(value)


def _plot(board: str, emulated: bool, rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for family, (label, marker) in FAMILY_STYLE.items():
        pts = sorted((r["mflops"], r["median_ms"], r["model"]) for r in rows if r["family"] == family and r.get("median_ms"))
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label, linewidth=1)
        for mf, ms, name in pts:
            ax.annotate(name.removeprefix(family + "_") or name, (mf, ms), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("MFLOPs (multiply-adds)")
    ax.set_ylabel("latency, median (ms)")
    ax.set_title(board_label(board, emulated), fontsize=10, color="firebrick" if emulated else "black")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a board whose every model failed its check has nothing to plot
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ranks(values: list[float]) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in set(values):  # ties share their average rank
        idx = [i for i, x in enumerate(values) if x == v]
        ranks[idx] = ranks[idx].mean()
    return ranks


def flops_vs_speed(rows: list[dict[str, Any]], margin: float = 0.05) -> dict[str, Any]:
    """The ShuffleNet V2 paper's Fig. 1 question for one board: how well do FLOPs rank the models' latency?

    Returns the Spearman rank correlation of MFLOPs and median latency, and every pair FLOPs orders wrongly
    (fewer FLOPs but more than ``margin`` slower).
    """
    ok = [r for r in rows if r.get("median_ms") is not None]
    result: dict[str, Any] = {"models": len(ok), "spearman": None, "wrong_pairs": []}
    if len(ok) < 3:
        return result
    f, t = _ranks([r["mflops"] for r in ok]), _ranks([r["median_ms"] for r in ok])
    result["spearman"] = round(float(np.corrcoef(f, t)[0, 1]), 3)
    for a in ok:
        for b in ok:
            if a["mflops"] < b["mflops"] and a["median_ms"] > (1 + margin) * b["median_ms"]:
                result["wrong_pairs"].append({"fewer_flops": a["model"], "mflops": [a["mflops"], b["mflops"]],
                                              "but_slower_than": b["model"], "median_ms": [a["median_ms"], b["median_ms"]]})
    return result


def write_report(records: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write ``index.md``, ``results.csv`` and one ``latency_vs_mflops_<board>.png`` per board; returns index.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    boards: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        boards.setdefault(r["board"], []).append(r)
    lines = ["# Benchmark report", ""]
    models = sorted({r["model"] for r in records}, key=lambda m: min(r["mflops"] for r in records if r["model"] == m))
    lines += ["## Median latency (ms) by board", ""]
    names = list(boards)
    lines.append("| model | MFLOPs | " + " | ".join(board_label(b, any(r["emulated"] for r in boards[b])) for b in names) + " |")
    lines.append("|---|---:|" + "---:|" * len(names))
    for m in models:
        mf = next(r["mflops"] for r in records if r["model"] == m)
        cells = []
        for b in names:
            r = next((r for r in boards[b] if r["model"] == m), None)
            cells.append("-" if r is None else ("output mismatch" if r["output_check"] == "fail" else _fmt(r["median_ms"])))
        lines.append(f"| {m} | {mf:.1f} | " + " | ".join(cells) + " |")
    for b, rows in boards.items():
        emulated = any(r["emulated"] for r in rows)
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in b)
        png = out / f"latency_vs_mflops_{slug}.png"
        _plot(b, emulated, rows, png)
        lines += ["", f"## {board_label(b, emulated)}", "", f"![latency vs MFLOPs]({png.name})", ""]
        fs = flops_vs_speed(rows)
        if fs["spearman"] is not None:
            lines += [f"FLOPs as a speed metric here (the ShuffleNet V2 paper's Fig. 1): Spearman rank correlation of "
                      f"MFLOPs and latency {fs['spearman']:.3f} over {fs['models']} models; "
                      f"{len(fs['wrong_pairs'])} pairs ordered wrongly (fewer FLOPs, more than 5% slower)"
                      + (":" if fs["wrong_pairs"] else "."), ""]
            for p in sorted(fs["wrong_pairs"], key=lambda p: p["median_ms"][1] / p["median_ms"][0])[:15]:
                lines.append(f"- {p['fewer_flops']} ({p['mflops'][0]:.1f} MFLOPs, {p['median_ms'][0]:.3f} ms) is slower than "
                             f"{p['but_slower_than']} ({p['mflops'][1]:.1f} MFLOPs, {p['median_ms'][1]:.3f} ms)")
            lines.append("")
        lines.append("| model | MFLOPs | median ms | mean ms | std ms | min ms | max ms | images/s | GFLOP/s | threads | check |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sorted(rows, key=lambda r: r["mflops"]):
            cells = [r["model"], f"{r['mflops']:.1f}", r.get("median_ms"), r.get("mean_ms"), r.get("std_ms"), r.get("min_ms"), r.get("max_ms"), r.get("images_per_s"), r.get("gflops"), r.get("threads"), r["output_check"]]
            lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    index = out / "index.md"
    index.write_text("\n".join(lines) + "\n")
    return index
