"""Engine comparison on this machine: same model, weights and input, measured side by side in one run.

Engines: this project's pipeline (untuned; and tuned when a tuning log applies: ``tuning_logs/<target key>.json``
or one of the same template family), TVM's stock pipeline, ONNX Runtime (CPU), OpenVINO (CPU plugin, f32
precision hint set explicitly: its default on AVX-512 BF16 CPUs is bf16) and PyTorch eager. Every engine is timed the same way, wall clock around
one inference call with the input already in place, each engine in its own process (no engine's spinning
worker threads steal another's cores), in alternating blocks of calls (twenty rounds by default), so drift of the
machine hits all of them alike. Reported: medians, the ratio to ONNX Runtime and to the fastest f32 peer engine
(ONNX Runtime or OpenVINO), each output's largest distance to PyTorch's over a fixed set of seeded inputs
(``ERROR_INPUTS``; with ``--precision``, also top-1 agreement with PyTorch's f32 on them). Thread counts are fixed for all engines and printed.
A ratio is paired: the median over rounds of (this engine's median in the round / the peer's median in the same
round), so a slow phase of the machine, which lasts longer than a round, cancels out of it (a 2-vCPU VM here ran
every engine 20-75% slower for minutes at a time; ratios of whole-run medians moved by up to 15% between runs).

Run ``tvm-shufflenet compare --help`` or ``python benchmarks/compare.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tvm_shufflenet.bench.records import cpu_name

BLOCKS = 20  # alternating blocks (rounds) per engine: this VM drifts by up to 1.7x between minutes
IDLE_S = 0.3  # pause after a block: lets the last engine's spinning worker threads go to sleep
ENGINES = ("tvm_shufflenet", "tvm_shufflenet_tuned", "tvm_stock", "onnxruntime", "openvino", "pytorch")
# with --precision bf16|fp16: this project's reduced build (tuned where a log applies) and OpenVINO's bf16
REDUCED_ENGINES = ("tvm_shufflenet_reduced", "openvino_bf16")
ERROR_INPUTS = 8  # seeded inputs each output is compared on (max error over them; top-1 agreement on each)
PEERS = ("onnxruntime", "openvino")  # the other f32 engines a user could pick instead
LABELS = {
    "tvm_shufflenet": "tvm_shufflenet (untuned)",
    "tvm_shufflenet_tuned": "tvm_shufflenet (tuned)",
    "tvm_stock": "TVM stock pipeline",
    "onnxruntime": "ONNX Runtime",
    "openvino": "OpenVINO (f32)",
    "pytorch": "PyTorch eager",
    "tvm_shufflenet_reduced": "tvm_shufflenet (tuned, reduced precision)",
    "openvino_bf16": "OpenVINO (bf16, its default here)",
}


def error_inputs(shape: tuple[int, ...], seed: int, n: int | None = None) -> list[np.ndarray]:
    """The fixed inputs every engine's output is checked on (the first is the timed one): the error of one
    input's logits moves by 10-40% with the input (bf16 rounding), too much to rank two engines by."""
    n = ERROR_INPUTS if n is None else n
    return [np.random.default_rng(seed + i).standard_normal(shape).astype("float32") for i in range(n)]


def _tvm_runner(src: Any, spec: Any, pipeline: str, log: dict | None, xs: list[np.ndarray], threads: int,
                precision: str = "fp32") -> tuple[Callable[[], None], list[np.ndarray]]:
    import tvm
    from tvm import relax

    from tvm_shufflenet.build import compile_source

    from tvm_shufflenet.runtime import set_threads

    set_threads(threads)  # before compiling: constant folding may start TVM's pool, which cannot grow later
    ex = compile_source(src, spec, pipeline, log, precision)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    outs = [vm["main"](tvm.runtime.tensor(x)).numpy() for x in xs]
    vm.set_input("main", tvm.runtime.tensor(xs[0]))
    vm.invoke_stateful("main")
    return (lambda: vm.invoke_stateful("main")), outs


def _ort_runner(onnx_path: Path, xs: list[np.ndarray], threads: int) -> tuple[Callable[[], None], list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x})[0] for x in xs]
    feed = {name: xs[0]}
    return (lambda: sess.run(None, feed)), outs


def _openvino_runner(onnx_path: Path, xs: list[np.ndarray], threads: int,
                     hint: str = "f32") -> tuple[Callable[[], None], list[np.ndarray]]:
    import openvino as ov

    # f32 stated explicitly: on CPUs with AVX-512 BF16 the CPU plugin otherwise computes in bf16
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
    request = compiled.create_infer_request()
    outs = [np.array(request.infer({0: x})[compiled.output(0)]) for x in xs]
    return (lambda: request.infer({0: xs[0]})), outs


def _torch_runner(module: Any, xs: list[np.ndarray], threads: int) -> tuple[Callable[[], None], list[np.ndarray]]:
    import torch

    torch.set_num_threads(threads)
    xt = torch.from_numpy(xs[0])

    def run() -> None:
        with torch.inference_mode():
            module(xt)

    with torch.inference_mode():
        outs = [module(torch.from_numpy(x)).numpy() for x in xs]
    return run, outs


def _make_runner(engine: str, model: str, threads: int, input_size: int | None, seed: int, target: str,
                 precision: str = "fp32"):
    """Build one engine's runner (in its own process): ``(run, outputs)`` (run times the first of the
    :func:`error_inputs`; outputs are of all of them) or a note why it is unavailable."""
    from tvm_shufflenet import models, reference
    from tvm_shufflenet import weights as weights_mod
    from tvm_shufflenet.build import applied_log, load_source
    from tvm_shufflenet.targets import resolve

    spec = resolve(target)
    entry = models.get(model)
    w = weights_mod.seeded(entry.to_relax(input_size=input_size), seed)
    src = load_source(model, seed=seed, input_size=input_size)
    xs = error_inputs(src.input_shape, seed)
    if engine == "tvm_shufflenet":
        return _tvm_runner(src, spec, "shufflenet", None, xs, threads)
    if engine == "tvm_shufflenet_tuned":
        applied = applied_log(spec, "auto")
        if applied.log is None:
            return f"no tuning log for {spec.key} or its template family"
        return _tvm_runner(src, spec, "shufflenet", applied.log, xs, threads)
    if engine == "tvm_stock":
        return _tvm_runner(src, spec, "stock", None, xs, threads)
    if engine == "tvm_shufflenet_reduced":
        return _tvm_runner(src, spec, "shufflenet", applied_log(spec, "auto").log, xs, threads, precision)
    if engine == "pytorch_reduced":  # the same-type reference, never timed
        from tvm_shufflenet.benchmarks.precision import torch_outputs

        storage = {"bf16": "bfloat16", "fp16": "float16"}[precision]
        return (lambda: None), torch_outputs(model, w, xs, storage)
    if engine in ("onnxruntime", "openvino", "openvino_bf16"):
        with tempfile.TemporaryDirectory(prefix="tvm_shufflenet_compare_") as tmp:
            onnx_path = Path(tmp) / f"{model}.onnx"
            reference.export_onnx(entry, w, onnx_path, input_size=input_size)
            if engine.startswith("openvino"):
                try:
                    return _openvino_runner(onnx_path, xs, threads, "bf16" if engine == "openvino_bf16" else "f32")
                except ImportError:
                    return "not installed (pip install openvino)"
            return _ort_runner(onnx_path, xs, threads)
    if engine == "pytorch":
        return _torch_runner(reference.load_weights(reference.build(entry), w).eval(), xs, threads)
    raise ValueError(engine)


def _worker(conn: Any, engine: str, model: str, threads: int, input_size: int | None, seed: int, target: str,
            precision: str = "fp32") -> None:
    """An engine in its own process: no other engine's threads share its cores or its memory allocator."""
    try:
        made = _make_runner(engine, model, threads, input_size, seed, target, precision)
    except Exception as exc:  # noqa: BLE001 - reported as unavailable, the comparison goes on
        conn.send(("error", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"))
        return
    if isinstance(made, str):
        conn.send(("unavailable", made))
        return
    fn, out = made
    conn.send(("ready", out))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        warm, n = msg
        for _ in range(warm):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        conn.send(times)


def _max_error(outs: list[np.ndarray], refs: list[np.ndarray], ranges: list[np.ndarray] | None = None) -> float:
    """The largest over the inputs of max |out - ref| relative to the range of the input's f32 logits."""
    return max(float(np.abs(o.reshape(r.shape) - r).max() / max(float(np.ptp(g)), 1e-12))
               for o, r, g in zip(outs, refs, ranges or refs))


def paired_ratio(rounds: list[list[float]], peer_rounds: list[list[float]]) -> float:
    """Median over rounds of the ratio of the two engines' medians in the same round."""
    return float(np.median([np.median(a) / np.median(b) for a, b in zip(rounds, peer_rounds)]))


def compare_model(model: str, *, threads: int, repeat: int, warmup: int, input_size: int | None, seed: int,
                  engines: tuple[str, ...] = ENGINES, target: str = "host", blocks: int = BLOCKS,
                  precision: str = "fp32") -> dict[str, Any]:
    """Measure ``model`` on every engine; returns one record (see the module docstring). With ``precision``
    bf16 or fp16, each engine's output is also compared with PyTorch's in that type (``max_err_vs_pytorch_reduced``)."""
    import multiprocessing as mp

    import onnxruntime
    import torch
    import tvm
    from tqdm import tqdm

    from tvm_shufflenet import models
    from tvm_shufflenet.targets import resolve

    size = input_size or models.get(model).input_size
    ctx = mp.get_context("spawn")
    workers: dict[str, Any] = {}
    notes: dict[str, str] = {}
    outputs: dict[str, np.ndarray] = {}
    reduced = precision != "fp32"
    for engine in engines + (("pytorch_reduced",) if reduced else ()):  # one at a time: builds would fight over the cores
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, engine, model, threads, input_size, seed, target, precision),
                           daemon=True)
        proc.start()
        status, payload = parent.recv()
        if status != "ready":
            notes[engine] = payload
            proc.join()
            continue
        outputs[engine] = payload
        if engine == "pytorch_reduced":  # a reference output only
            parent.send(None)
            proc.join(timeout=30)
            continue
        workers[engine] = (proc, parent)
    rounds: dict[str, list[list[float]]] = {e: [] for e in workers}
    # Engines run in blocks, alternating: each engine's thread pool spins for a while after its last call,
    # so a pause follows every block; several rounds of blocks let drift of the machine hit every engine.
    blocks = max(1, min(blocks, repeat))
    bar = tqdm(total=blocks * len(workers), desc=model, unit="block", leave=False, disable=None)  # None: TTY only
    try:
        for b in range(blocks):
            for engine, (_proc, conn) in workers.items():
                n = max(1, repeat // blocks if engine != "tvm_stock" else max(2, repeat // (10 * blocks)))
                conn.send((warmup if b == 0 else 1, n))
                rounds[engine].append(conn.recv())
                time.sleep(IDLE_S)
                bar.update()
    finally:
        bar.close()
        for proc, conn in workers.values():
            conn.send(None)
            proc.join(timeout=30)
    samples = {e: [t for r in rs for t in r] for e, rs in rounds.items()}
    ref = outputs.get("pytorch")
    ref_reduced = outputs.get("pytorch_reduced")
    peer_ms = {e: float(np.median(samples[e])) for e in PEERS if e in samples}
    best_peer = min(peer_ms, key=peer_ms.get) if peer_ms else None
    results: dict[str, Any] = {}
    for engine in engines:
        if engine not in workers:
            results[engine] = {"available": False, "note": notes.get(engine, "not run")}
            continue
        med = float(np.median(samples[engine]))
        out = outputs[engine]
        err = None if ref is None else _max_error(out, ref)
        results[engine] = {
            "available": True,
            "median_ms": round(med, 4),
            "min_ms": round(float(np.min(samples[engine])), 4),
            "samples": len(samples[engine]),
            "rounds": len(rounds[engine]),
            "ratio_vs_onnxruntime": (round(paired_ratio(rounds[engine], rounds["onnxruntime"]), 3)
                                     if "onnxruntime" in rounds else None),
            "ratio_vs_fastest_peer": round(paired_ratio(rounds[engine], rounds[best_peer]), 3) if best_peer else None,
            "ratio_vs_openvino_bf16": (round(paired_ratio(rounds[engine], rounds["openvino_bf16"]), 3)
                                       if "openvino_bf16" in rounds else None),
            "max_err_vs_pytorch": err,
        }
        if ref is not None and ref_reduced is not None:
            results[engine]["max_err_vs_pytorch_reduced"] = _max_error(out, ref_reduced, ref)
            results[engine]["top1_as_pytorch_f32"] = float(np.mean([int(o.argmax()) == int(r.argmax())
                                                                    for o, r in zip(out, ref)]))
    from tvm_shufflenet.build import applied_log

    tuning = applied_log(resolve(target), "auto").to_json()
    return {
        "model": model,
        "input_shape": [1, 3, size, size],
        "weights": f"seeded:{seed}",
        "error_inputs": f"{ERROR_INPUTS} standard normal, seeds {seed}..{seed + ERROR_INPUTS - 1} (the first timed)",
        "threads": threads,
        "repeat": repeat,
        "rounds": blocks,
        "ratios": "paired: median over rounds of (engine's median / peer's median in the same round)",
        "target_key": resolve(target).key,
        "tuning_log": tuning,
        "precision": precision,
        **({"pytorch_reduced": notes["pytorch_reduced"]} if "pytorch_reduced" in notes else {}),
        "fastest_peer": best_peer,
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                     "openvino": _version("openvino")},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engines": results,
    }


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def table(records: list[dict[str, Any]], markdown: bool = False) -> str:
    """Median ms and ratio to ONNX Runtime per model and engine."""
    engines = [e for e in ENGINES + REDUCED_ENGINES if any(r["engines"].get(e, {}).get("available") for r in records)]
    header = ["model"] + [LABELS[e] for e in engines]
    best = next((e for e in ("tvm_shufflenet_tuned", "tvm_shufflenet") if e in engines), None)
    if best:
        header.append(f"{LABELS[best]} / fastest f32 peer")
    reduced = "tvm_shufflenet_reduced" in engines
    if reduced:
        header += ["reduced / OpenVINO bf16", f"max error vs PyTorch f32 ({ERROR_INPUTS} inputs): reduced / OpenVINO bf16"]
    rows = []
    for r in records:
        row = [r["model"]]
        for e in engines:
            d = r["engines"].get(e, {})
            if not d.get("available"):
                row.append("-")
            elif d.get("ratio_vs_onnxruntime") is None:
                row.append(f"{d['median_ms']:.2f} ms")
            else:
                row.append(f"{d['median_ms']:.2f} ms ({d['ratio_vs_onnxruntime']:.2f}x)")
        if best:
            d = r["engines"].get(best, {})
            ratio = d.get("ratio_vs_fastest_peer")
            peer = LABELS.get(r.get("fastest_peer") or "", "")
            row.append("-" if ratio is None else f"{ratio:.2f}x ({peer})")
        if reduced:
            d, ov = r["engines"].get("tvm_shufflenet_reduced", {}), r["engines"].get("openvino_bf16", {})
            ratio = d.get("ratio_vs_openvino_bf16")
            row.append("-" if ratio is None else f"{ratio:.2f}x")
            errs = [x.get("max_err_vs_pytorch") for x in (d, ov)]
            row.append(" / ".join("-" if e is None else f"{e:.1e}" for e in errs))
        rows.append(row)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: median latency per model and engine (log scale), ratio to ONNX Runtime on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [e for e in ENGINES + REDUCED_ENGINES if any(r["engines"].get(e, {}).get("available") for r in records)]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(records) + 2), 4.5))
    width = 0.8 / max(len(engines), 1)
    for k, e in enumerate(engines):
        xs, ys, ratios = [], [], []
        for i, r in enumerate(records):
            d = r["engines"].get(e, {})
            if d.get("available"):
                xs.append(i + k * width - 0.4 + width / 2)
                ys.append(d["median_ms"])
                ratios.append(d["ratio_vs_onnxruntime"])
        bars = ax.bar(xs, ys, width, label=LABELS[e])
        for bar, ratio in zip(bars, ratios):
            if ratio is None:
                continue
            ax.annotate(f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([r["model"] for r in records], rotation=15)
    ax.set_ylabel("median latency per image (ms, log scale)")
    r0 = records[0]
    ax.set_title(f"batch 1, {r0['input_shape'][-1]}x{r0['input_shape'][-1]}, {r0['threads']} threads, "
                 f"{r0['machine']['cpu']}; label: ratio to ONNX Runtime", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from tvm_shufflenet.bench.records import save_figure_atomic

    save_figure_atomic(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="zoo model names")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--repeat", type=int, default=100, help="timed runs per engine (default 100; the stock pipeline gets a tenth)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per engine first (default 5)")
    p.add_argument("--rounds", type=int, default=BLOCKS, help=f"alternating rounds the runs are spread over; ratios "
                   f"are paired per round (default {BLOCKS})")
    p.add_argument("--input-size", type=int, help="resolution (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the input (default 0)")
    p.add_argument("--engines", default=None, help=f"comma-separated subset of {','.join(ENGINES + REDUCED_ENGINES)} "
                   "(default: the f32 engines, and with --precision the reduced ones too)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="also run this project's build in this precision and OpenVINO in bf16, and compare outputs with "
                        "PyTorch in that type (default fp32: f32 engines only)")
    p.add_argument("--output", "-o", help="JSON records, rewritten after each model; models already in it are skipped")
    p.add_argument("--plot", help="bar chart PNG")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")


def run(args: argparse.Namespace) -> int:
    default = ENGINES + (REDUCED_ENGINES if args.precision != "fp32" else ())
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip()) if args.engines else default
    unknown = [e for e in engines if e not in ENGINES + REDUCED_ENGINES]
    if unknown:
        print(f"error: unknown engine {unknown[0]!r}; use some of {', '.join(ENGINES + REDUCED_ENGINES)}", file=sys.stderr)
        return 2
    if args.precision == "fp32" and any(e in REDUCED_ENGINES for e in engines):
        print("error: the reduced-precision engines need --precision bf16 or fp16", file=sys.stderr)
        return 2
    from tvm_shufflenet.precision import for_target
    from tvm_shufflenet.targets import resolve

    for_target(args.precision, resolve("host"))  # this machine must have the hardware: fail before measuring
    out = Path(args.output) if args.output else None
    records: list[dict[str, Any]] = json.loads(out.read_text()) if out and out.exists() else []
    done = {(r["model"], r["threads"], tuple(r["input_shape"]), r.get("precision", "fp32")) for r in records}
    from tvm_shufflenet import models
    from tvm_shufflenet.bench.records import write_json_atomic

    for model in args.models:
        models.get(model)  # unknown names fail before any measuring
    for model in args.models:
        size = args.input_size or models.get(model).input_size
        if (model, args.threads, (1, 3, size, size), args.precision) in done:
            print(f"{model}: already in {out}, skipped")
            continue
        rec = compare_model(model, threads=args.threads, repeat=args.repeat, warmup=args.warmup,
                            input_size=args.input_size, seed=args.seed, engines=engines, blocks=args.rounds,
                            precision=args.precision)
        records = [r for r in records if not (r["model"] == model and r["threads"] == args.threads
                                              and r.get("precision", "fp32") == args.precision)] + [rec]
        if out:
            write_json_atomic(out, records)
    shown = [r for r in records if r["model"] in args.models and r["threads"] == args.threads
             and r.get("precision", "fp32") == args.precision]
    print(f"{shown[0]['machine']['cpu']}, {args.threads} threads, batch 1; median per image (ratio to ONNX Runtime, paired per round)")
    print(table(shown, markdown=args.markdown))
    if args.plot:
        plot(shown, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from tvm_shufflenet.errors import UserError

    parser = argparse.ArgumentParser(prog="compare", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
