"""``tvm-shufflenet guidelines``: the ShuffleNet V2 paper's four guideline experiments, measured on a target.

Every cell of the paper's Tables 1-4 (:mod:`tvm_shufflenet.models.guidelines`) is compiled with the project's
pipeline (tuned where a tuning log applies), checked against PyTorch running the same network on the same
input, and timed on this CPU, on a board over RPC, or on a CUDA GPU. Results go to a JSON file rewritten
after each table column (a rerun resumes), tables in the paper's layout beside the paper's numbers, a verdict per
guideline, one chart per guideline and a markdown report.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SystemFailure, UserError
from .models import guidelines as G

__all__ = ["GuidelineConfig", "run", "verdict", "table", "CLAIMS"]

# What the paper found, per guideline: the row it found fastest and the row it found slowest at every width.
CLAIMS = {
    "g1": ("1:1", "1:12", "equal channel widths (1:1) run fastest, 1:12 slowest"),
    "g2": ("g=1", "g=8", "dense 1x1 convolutions (g=1) run fastest, g=8 slowest"),
    "g3": ("1-fragment", "4-fragment-parallel", "one fragment runs fastest, four parallel fragments slowest"),
    "g4": ("no relu, no shortcut", "relu, shortcut", "without ReLU and shortcut fastest, with both slowest"),
}
NOISE = 0.03  # speeds this close count as a tie: the machines drift by more between minutes


@dataclass
class GuidelineConfig:
    """What to measure and where (see ``tvm-shufflenet guidelines --help``)."""

    guidelines: list[str]
    target: str = "host"
    address: Any = None  # rpc.board.BoardAddress
    batch: int = 1
    repeat: int = 10
    threads: int | None = None
    build_dir: Path = Path("build/guidelines")
    tuning: str = "auto"
    json_out: Path | None = None
    cuda_arch: str | None = None
    widths: int = 3  # the first N widths (columns) of each table: fewer for a slow board


def _weights(params: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded weights with variance 1/fan_in, so ten stacked blocks neither vanish nor overflow."""
    out = {}
    for name, shape in params:
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        fan_in = int(np.prod(shape[1:]))
        out[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return out


def torch_reference(net: G.GuidelineNet, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The same network in PyTorch: the independent reference every measured output is checked against."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x)
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    ch = net.channels
    with torch.no_grad():
        for b in range(G.BLOCKS):
            p = f"{b}."
            if net.guideline == "g1":
                t = F.conv2d(F.conv2d(t, w[p + "conv1.weight"]), w[p + "conv2.weight"])
            elif net.guideline == "g2":
                g = ch["groups"]
                t = F.conv2d(F.conv2d(t, w[p + "conv1.weight"], groups=g), w[p + "conv2.weight"], groups=g)
            elif net.guideline == "g3":
                outs = []
                for i in range(ch["fragments"]):
                    if ch["parallel"]:
                        outs.append(F.conv2d(t, w[f"{p}convs.{i}.weight"]))
                    else:
                        t = F.conv2d(t, w[f"{p}convs.{i}.weight"])
                if ch["parallel"]:
                    t = sum(outs[1:], outs[0])
            else:
                act = F.relu if ch["relu"] else (lambda v: v)
                y = act(F.conv2d(t, w[p + "conv1.weight"]))
                y = act(F.conv2d(y, w[p + "conv2.weight"], padding=1))
                y = F.conv2d(y, w[p + "conv3.weight"])
                t = act(y + t if ch["shortcut"] else y)
    return t.numpy()


def _library(net: G.GuidelineNet, spec: Any, cfg: GuidelineConfig) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """The cell's library for ``spec`` (cached by network, target and tuning log) and its weights."""
    import tvm
    from tvm import relax

    from .build import Source, applied_log, build_source
    from .compiler.lower import channel_blocking
    from .elf import read_metadata

    mod, params, shape = net.to_relax(batch=cfg.batch)
    weights = _weights(params)
    applied = applied_log(spec, cfg.tuning)
    tag = hashlib.sha256(f"{net.name}|{json.dumps(net.channels, sort_keys=True)}|{shape}".encode()).hexdigest()[:12]
    path = cfg.build_dir / spec.key / f"{net.guideline}_{tag}_{applied.tag}.so"
    if path.exists():
        try:
            return path, read_metadata(path)[1], weights
        except UserError:
            path.unlink()
    bound = {var.name: tvm.runtime.tensor(weights[name]) for var, (name, _) in zip(mod["main"].params[1:], params)}
    mod = relax.transform.BindParams("main", bound)(mod)
    src = Source(mod, f"guideline_{net.guideline}", "guideline", shape, 0, "seeded:0 (1/fan_in)", None)
    # One kernel family for every row: channel blocking would take only the rows whose widths are whole
    # vectors (G1's 32x32 but not its 22x44), and the table would compare layouts instead of structures.
    with channel_blocking(False):
        record = build_source(src, spec, path, tuning=applied.path or "none")
    return path, record, weights


def _run_remote(path: Path, x: np.ndarray, cfg: GuidelineConfig) -> tuple[np.ndarray, list[float], int]:
    from .rpc.board import connect, run_library

    session = connect(cfg.address)
    res = run_library(session, path, x, repeat=cfg.repeat, min_repeat_ms=50, warmup=2, threads=cfg.threads)
    return res.output, res.repeats_ms, res.threads


def _measure_group(items: list[tuple[Path, np.ndarray]], cfg: GuidelineConfig, device: str) -> list[tuple[np.ndarray, list[float], int]]:
    """``(output, samples ms, threads)`` per library of one table column.

    Locally the rows are timed in alternation, one sample (of at least 50 ms) of each per round, so this
    machine's drift (up to 2x between minutes) hits every row alike; a board over RPC times one library
    after the other (a session per upload).
    """
    if cfg.address is not None:
        import gc

        results = []
        for path, x in items:
            results.append(_run_remote(path, x, cfg))
            gc.collect()  # the session's reference cycles: its board goes back to the tracker before the next
        return results
    import tvm

    from .runtime import benchmark, load, set_threads

    if cfg.threads:
        set_threads(cfg.threads)
    models = [load(path, device=device) for path, _ in items]
    outputs = [m(x) for m, (_, x) in zip(models, items)]
    samples: list[list[float]] = [[] for _ in items]
    for round_ in range(cfg.repeat):
        for i, (m, (_, x)) in enumerate(zip(models, items)):
            samples[i] += benchmark(m, x, repeat=1, warmup=2 if round_ == 0 else 0, min_repeat_ms=50)
    threads = int(tvm.get_global_func("runtime.NumThreads")())
    return [(out, s, threads) for out, s in zip(outputs, samples)]


def _board(cfg: GuidelineConfig) -> tuple[str, bool]:
    if cfg.address is None:
        return f"local-{platform.node() or 'host'}", False
    from .rpc.emulate import is_emulated

    return str(cfg.address), is_emulated(cfg.address)


def run(cfg: GuidelineConfig) -> dict[str, Any]:
    """Measure every cell of ``cfg.guidelines``; returns (and keeps writing) the JSON record."""
    from tqdm import tqdm

    from .bench.records import write_json_atomic
    from .counting import count
    from .elf import host_machine
    from .rpc.board import check_reachable
    from .targets import resolve

    spec = resolve(cfg.target, cfg.cuda_arch)
    if cfg.address is not None:
        check_reachable(cfg.address)
    elif spec.elf_machine != host_machine():
        raise UserError(f"target {cfg.target} builds {spec.elf_machine} code, this machine is {host_machine()}: measure it on a "
                        "board with --rpc-tracker HOST:PORT --rpc-key KEY or --rpc HOST:PORT")
    board, emulated = _board(cfg)
    result: dict[str, Any] = {"target": spec.key, "board": board, "emulated": emulated, "batch": cfg.batch, "guidelines": {}}
    if cfg.json_out and cfg.json_out.exists():
        try:
            old = json.loads(cfg.json_out.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{cfg.json_out} is not a guidelines result: move it away or pick another --json") from None
        if not isinstance(old, dict) or not isinstance(old.get("guidelines"), dict):
            raise UserError(f"{cfg.json_out} is not a guidelines result: move it away or pick another --json")
        if (old.get("target"), old.get("board"), old.get("batch")) == (spec.key, board, cfg.batch):
            result["guidelines"] = old["guidelines"]
        else:
            raise UserError(f"{cfg.json_out} holds results for {old.get('target')} on {old.get('board')} at batch "
                            f"{old.get('batch')}: pick another --json for {spec.key} on {board}")
    platform_name = "gpu" if spec.device == "cuda" else "arm"
    groups = [(g, col, [n for n in G.networks(g) if n.column == col]) for g in cfg.guidelines for col in range(cfg.widths)]
    rng = np.random.default_rng(0)
    unit = "batches/s" if cfg.batch > 1 else "images/s"
    paper_platform = "GPU, batch 8" if platform_name == "gpu" else "ARM, batch 1"
    with tqdm(total=sum(len(nets) for *_, nets in groups), desc=f"guidelines on {board}", unit="net") as bar:
        for g, col, nets in groups:
            section = result["guidelines"].setdefault(g, {"claim": CLAIMS[g][2], "rows": []})
            keys = [{"config": n.config, "width": n.width, "channels": n.channels} for n in nets]
            have = [k for k in keys if any({f: r[f] for f in k} == k and r.get("measured") for r in section["rows"])]
            if len(have) < len(keys):  # a column is measured as a whole: its rows are only comparable together
                bar.set_postfix_str(f"{g} {nets[0].width}: compile")
                built = [_library(net, spec, cfg) for net in nets]
                xs = [rng.standard_normal(record["input_shape"]).astype(np.float32) for _, record, _ in built]
                bar.set_postfix_str(f"{g} {nets[0].width}: measure")
                measured = _measure_group([(path, x) for (path, _, _), x in zip(built, xs)], cfg, spec.device)
                rows = []
                for net, key, (_, _, weights), x, (out, samples, threads) in zip(nets, keys, built, xs, measured):
                    want = torch_reference(net, weights, x)
                    err = float(np.abs(out - want).max())
                    if not err <= 1e-3 * float(np.ptp(want)):
                        raise SystemFailure(f"{net.name}: output differs from PyTorch's (max abs error {err:.3g} of range "
                                            f"{float(np.ptp(want)):.3g}) on {board}: not timed")
                    c = count(net.to_relax()[0])
                    median = float(np.median(samples))
                    rows.append({**key, "mflops": round(c.mflops, 3), "mac": c.memory_access, "median_ms": round(median, 4),
                                 "measured": round(1e3 / median, 3), "unit": unit,
                                 "samples_ms": [round(v, 4) for v in samples], "threads": threads, "max_abs_err": err,
                                 "paper": net.paper(platform_name), "paper_platform": paper_platform})
                section["rows"] = [r for r in section["rows"] if r["width"] != nets[0].width] + rows
                section.update(verdict(g, section["rows"]))
                if cfg.json_out:
                    write_json_atomic(cfg.json_out, result)
            bar.update(len(nets))
    for g, section in result["guidelines"].items():  # also after a resumed run: the verdict's rules may be newer
        section.update(verdict(g, section["rows"]))
    if cfg.json_out:
        write_json_atomic(cfg.json_out, result)
    return result


def verdict(guideline: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the paper's ordering hold at every width measured: its fastest row fastest, its slowest slowest
    (within ``NOISE``)? Also the factor fastest/slowest, measured and in the paper."""
    fast, slow, _ = CLAIMS[guideline]
    widths, factors, paper_factors, holds, fastest, slowest = [], [], [], True, [], []
    for width in dict.fromkeys(r["width"] for r in rows):
        cells = {r["config"]: r for r in rows if r["width"] == width}
        if len(cells) < len(G.TABLES[guideline]):
            continue
        speeds = {k: r["measured"] for k, r in cells.items()}
        fastest_ok = speeds[fast] >= (1 - NOISE) * max(speeds.values())
        slowest_ok = speeds[slow] <= (1 + NOISE) * min(speeds.values())
        holds = holds and fastest_ok and slowest_ok
        widths.append(width)
        fastest.append(max(speeds, key=speeds.get))
        slowest.append(min(speeds, key=speeds.get))
        factors.append(round(speeds[fast] / speeds[slow], 3))
        paper_factors.append(round(cells[fast]["paper"] / cells[slow]["paper"], 3))
    return {"holds": holds if widths else None, "widths": widths, "factor": factors, "paper_factor": paper_factors,
            "fastest": fastest, "slowest": slowest}


def _channels_text(guideline: str, ch: dict[str, Any]) -> str:
    return {"g1": lambda: f"({ch['c1']},{ch['c2']})", "g2": lambda: f"c={ch['c']}",
            "g3": lambda: f"c={ch['c']}", "g4": lambda: f"c={ch['c']}"}[guideline]()


def table(guideline: str, section: dict[str, Any], markdown: bool = False) -> str:
    """One guideline's table in the paper's layout: channels per width, measured speed, the paper's."""
    rows = section["rows"]
    widths = list(dict.fromkeys(r["width"] for r in rows))
    unit = rows[0]["unit"] if rows else "images/s"
    platform_name = rows[0]["paper_platform"] if rows else ""
    header = ["config", *[f"channels {w}" for w in widths], *[f"{w} {unit}" for w in widths], *[f"paper {w}" for w in widths], "MFLOPs", "MAC (M)"]
    lines = []
    for config in G.TABLES[guideline]:
        cells = {r["width"]: r for r in rows if r["config"] == config}
        if not cells:
            continue
        line = [config]
        line += [_channels_text(guideline, cells[w]["channels"]) if w in cells else "-" for w in widths]
        line += [f"{cells[w]['measured']:.1f}" if w in cells else "-" for w in widths]
        line += [f"{cells[w]['paper']}" if w in cells else "-" for w in widths]
        line += [" / ".join(f"{cells[w]['mflops']:.1f}" for w in widths if w in cells), " / ".join(f"{cells[w]['mac'] / 1e6:.1f}" for w in widths if w in cells)]
        lines.append(line)
    v = section.get("holds")
    verdict_line = (f"{guideline.upper()}: {section['claim']}: "
                    + ("holds" if v else "does not hold" if v is not None else "not measured at every row")
                    + (f" here (fastest/slowest {', '.join(f'{f:.2f}x' for f in section['factor'])}; paper, {platform_name}: "
                       f"{', '.join(f'{f:.2f}x' for f in section['paper_factor'])})" if section.get("factor") else "")
                    + (f"; fastest here: {', '.join(section['fastest'])}; slowest: {', '.join(section['slowest'])}"
                       if section.get("fastest") else ""))
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + "\n\n" + verdict_line
    widths_col = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths_col))
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines), verdict_line])


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """One chart per guideline: speed relative to the paper's fastest row, measured beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .bench.records import save_figure_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for g, section in result["guidelines"].items():
        rows = section["rows"]
        widths = list(dict.fromkeys(r["width"] for r in rows))
        configs = [c for c in G.TABLES[g] if any(r["config"] == c for r in rows)]
        fig, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3.4), squeeze=False)
        for ax, width in zip(axes[0], widths):
            cells = {r["config"]: r for r in rows if r["width"] == width}
            base = cells.get(CLAIMS[g][0])
            xs = np.arange(len(configs))
            ours = [cells[c]["measured"] / base["measured"] if base and c in cells else 0 for c in configs]
            paper = [cells[c]["paper"] / base["paper"] if base and c in cells else 0 for c in configs]
            ax.bar(xs - 0.2, ours, 0.4, label="measured here")
            ax.bar(xs + 0.2, paper, 0.4, label=f"paper ({rows[0]['paper_platform']})", alpha=0.6)
            ax.set_xticks(xs)
            ax.set_xticklabels(configs, rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{g.upper()} {width}", fontsize=9)
            ax.axhline(1.0, color="grey", linewidth=0.6)
        axes[0][0].set_ylabel(f"speed / speed of {CLAIMS[g][0]}")
        axes[0][0].legend(fontsize=7)
        title = f"{result['target']} on {result['board']}" + (" (EMULATED: qemu speed says nothing of ARM)" if result["emulated"] else "")
        fig.suptitle(title, fontsize=9, color="firebrick" if result["emulated"] else "black")
        fig.tight_layout()
        path = out_dir / f"{g}.png"
        save_figure_atomic(fig, path)
        paths.append(path)
    return paths


def report(result: dict[str, Any], out_dir: Path, command: str) -> Path:
    """``index.md``: every table with its verdict and chart, and the command that made them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# ShuffleNet V2 guidelines on {result['target']} ({result['board']})", ""]
    if result["emulated"]:
        lines += ["**Emulated board: qemu's speed says nothing about ARM hardware.**", ""]
    lines += [f"Batch {result['batch']}, 56x56 inputs, 10 stacked blocks; measured speed beside the paper's. Made by:", "",
              f"    {command}", ""]
    for g, section in result["guidelines"].items():
        lines += [f"## {g.upper()}", "", table(g, section, markdown=True), "", f"![{g}]({g}.png)", ""]
    path = out_dir / "index.md"
    path.write_text("\n".join(lines))
    return path
