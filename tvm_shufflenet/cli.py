"""The ``tvm-shufflenet`` command line: parses arguments, calls the package's API, prints."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .errors import UserError

_EXIT_USAGE = 2


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))


def cmd_list(args: argparse.Namespace) -> int:
    from . import models
    from .counting import count

    records = []
    for entry in models.REGISTRY.values():
        if args.family and entry.family != args.family:
            continue
        c = count(entry.to_relax(input_size=args.input_size).mod)
        records.append(
            {
                "name": entry.name,
                "family": entry.family,
                "input_size": args.input_size or entry.input_size,
                "mflops": round(c.mflops, 1),
                "params_m": round(c.params_m, 3),
                "mac_m": round(c.mac_m, 2),
                "paper_mflops": entry.paper.mflops if entry.paper else None,
                "paper_params_m": entry.paper.params_m if entry.paper else None,
            }
        )
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    rows = [
        [r["name"], r["family"], r["input_size"], f"{r['mflops']:.1f}", f"{r['params_m']:.2f}", f"{r['mac_m']:.2f}", r["paper_mflops"] or "", r["paper_params_m"] or ""]
        for r in records
    ]
    _print_table(rows, ["model", "family", "input", "MFLOPs", "params (M)", "MAC (M)", "paper MFLOPs", "paper params (M)"])
    print("MAC: memory access cost (ShuffleNet V2 paper, G1): tensor elements read and written per image, weights included")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from .build import build

    started = time.perf_counter()
    record = build(
        args.model,
        args.target,
        args.output,
        weights=args.weights,
        seed=args.seed,
        batch=args.batch,
        input_size=args.input_size,
        num_classes=args.num_classes,
        cuda_arch=args.cuda_arch,
        pipeline=args.pipeline,
        tuning=tuning_choice(args),
        precision=args.precision,
    )
    size = Path(args.output).stat().st_size / 2**20
    print(
        f"{args.output}: {record['model']} for {record['target_key']} ({record['elf_machine']}), {record['precision']}, input "
        f"{tuple(record['input_shape'])}, {record['mflops']:.1f} MFLOPs, {size:.1f} MiB, "
        f"weights {record['weights']['source']}, tuning log {_log_text(record.get('tuning_log'))}, "
        f"built in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _log_text(applied: dict | str | None) -> str:
    if not applied or not isinstance(applied, dict) or applied.get("how") == "none":
        return "none (template defaults)"
    return f"{applied['file']} ({applied['how']}, {applied['kernels']} kernels)"


def tuning_choice(args: argparse.Namespace) -> str:
    """``--tuning-log PATH`` / ``--no-tuning-log`` -> what ``build(tuning=...)`` takes."""
    if getattr(args, "no_tuning_log", False):
        return "none"
    return getattr(args, "tuning_log", None) or "auto"


def add_tuning_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tuning-log", help="apply this tuning log (default: tuning_logs/<target key>.json, else a log of "
                                        "the same template family)")
    g.add_argument("--no-tuning-log", action="store_true", help="build with the templates' default knobs")


def _latency_line(samples: list[float]) -> str:
    a = np.asarray(samples)
    import tvm

    threads = int(tvm.get_global_func("runtime.NumThreads")())
    return (f"latency: median {np.median(a):.3f} ms, mean {a.mean():.3f} ms, min {a.min():.3f} ms over {len(a)} runs, "
            f"{threads} threads")


def _read_npy(path: str) -> np.ndarray:
    from .runtime import InputError

    if not Path(path).is_file():
        raise InputError(f"input {path} does not exist")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:
        why = "pickled objects are not loaded" if "pickle" in str(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
        raise InputError(f"{path} is not a readable .npy array ({why}): save one with numpy.save(path, batch)") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{path} holds several arrays (.npz?): give one NCHW batch saved with numpy.save")
    return x


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import benchmark, load, top_k

    model = load(args.library, device=args.device)
    print(model)
    inp = args.input
    if inp is None:
        x = np.random.default_rng(args.seed).standard_normal(model.input_shape).astype(np.float32)
    elif inp.lower().endswith(".npy"):
        x = _read_npy(inp)
    else:
        from .runtime import preprocess

        x = preprocess(inp, model.metadata["preprocessing"])
    logits = model(x)
    if args.output:
        np.save(args.output, logits)
        print(f"wrote {args.output} {logits.shape}")
    for b in range(logits.shape[0]):
        for rank, (idx, label, prob) in enumerate(top_k(logits[b].astype(np.float64), args.topk, model.labels), 1):
            print(f"  {rank}. {label:<30s} (class {idx:4d})  p={prob:.4f}")
    if args.repeat:
        print(_latency_line(benchmark(model, x, repeat=args.repeat)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .elf import read_metadata

    info, record = read_metadata(args.library)
    record["elf"] = {"machine": info.machine, "bits": info.bits}
    print(json.dumps(record, indent=1, sort_keys=True))
    return 0


def _weights_for(args: argparse.Namespace):
    from . import models, weights

    entry = models.get(args.model)
    rm = entry.to_relax(input_size=args.input_size, num_classes=args.num_classes)
    values = weights.load(args.weights, rm) if args.weights else weights.seeded(rm, args.seed)
    return entry, values


def cmd_export_onnx(args: argparse.Namespace) -> int:
    try:
        from .reference import export_onnx
    except ImportError:
        raise UserError("export-onnx needs PyTorch: pip install torch==2.13.0") from None
    entry, values = _weights_for(args)
    export_onnx(entry, values, args.output, batch=args.batch, input_size=args.input_size, num_classes=args.num_classes, dynamic_batch=args.dynamic_batch)
    print(f"wrote {args.output}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from .weights import save_npz

    _, values = _weights_for(args)
    save_npz(values, args.output)
    print(f"wrote {args.output}: {len(values)} tensors, {sum(v.size for v in values.values()) / 1e6:.3f} M values")
    return 0


def _demo_image(size: int = 320):
    """A deterministic picture (no download): a red disc on a blue-green gradient."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([xx * 0.3, 80 + yy * 0.4, 255 - xx * 0.5], -1).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    ImageDraw.Draw(img).ellipse((size * 0.3, size * 0.3, size * 0.7, size * 0.7), fill=(220, 30, 30))
    return img


def cmd_demo(args: argparse.Namespace) -> int:
    from .build import build
    from .elf import read_metadata
    from .runtime import benchmark, load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] compile {args.model} for this CPU (--target host)")
    host_lib = out / f"{args.model}_host.so"
    rec = build(args.model, "host", host_lib, weights=args.weights)
    print(f"      {host_lib} ({rec['target_key']}, {rec['mflops']:.1f} MFLOPs, tuning log {_log_text(rec.get('tuning_log'))}, "
          f"built in {rec['build_seconds']} s)")
    print("[2/3] load it with the TVM runtime and classify a generated picture")
    model = load(host_lib)
    image = out / "demo.png"
    _demo_image().save(image)
    for rank, (idx, label, prob) in enumerate(model.predict(image, topk=5), 1):
        print(f"      {rank}. {label:<30s} (class {idx:4d})  p={prob:.4f}")
    if not args.weights:
        print("      (seeded weights: the classes are arbitrary; pass --weights a torchvision .pth for real ones)")
    print(f"      {_latency_line(benchmark(model, repeat=args.repeat))}")
    print(f"[3/3] cross-compile {args.model} for a Raspberry Pi 4 (--target {args.board})")
    board_lib = out / f"{args.model}_{args.board}.so"
    rec = build(args.model, args.board, board_lib, weights=args.weights)
    info, _ = read_metadata(board_lib)
    print(f"      {board_lib}: ELF {info.bits}-bit {info.machine}, {board_lib.stat().st_size / 2**20:.1f} MiB, built in {rec['build_seconds']} s")
    return 0


def cmd_tracker(args: argparse.Namespace) -> int:
    import json as _json
    import os
    import signal
    import subprocess

    from .rpc.emulate import cache_root, pid_alive

    state = cache_root() / "trackers" / f"tracker-{args.port}.json"
    if args.action == "stop":
        if not state.exists():
            print(f"no tracker started here on port {args.port}")
            return 1
        pid = _json.loads(state.read_text())["pid"]
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the whole group: TVM serves from a child process
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.1)
            if not pid_alive(pid):
                break
        state.unlink()
        print(f"stopped the tracker on port {args.port}")
        return 0
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", args.host, "--port", str(args.port), "--port-end", str(args.port + 1)]
    if not args.background:
        print(f"RPC tracker on {args.host}:{args.port} (Ctrl-C stops it); boards join with:")
        print(f"  python -m tvm.exec.rpc_server --tracker THIS_HOST:{args.port} --key KEY")
        return subprocess.call(cmd)
    state.parent.mkdir(parents=True, exist_ok=True)
    log = state.with_suffix(".log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    from .rpc.board import BoardError, tracker_boards

    deadline = time.monotonic() + 20
    while True:
        try:
            tracker_boards(("127.0.0.1", args.port))
            break
        except BoardError:
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"error: the tracker did not start (log {log})", file=sys.stderr)
                return 1
            time.sleep(0.3)
    state.write_text(_json.dumps({"pid": proc.pid, "host": args.host, "port": args.port}))
    print(f"RPC tracker on {args.host}:{args.port} (pid {proc.pid}); stop it with `tvm-shufflenet tracker stop --port {args.port}`")
    return 0


def cmd_boards(args: argparse.Namespace) -> int:
    from .rpc.board import parse_hostport, tracker_boards
    from .rpc.emulate import running

    rows = tracker_boards(parse_hostport(args.tracker, 9190))
    emulated = {b.key for b in running()}
    for r in rows:
        r["busy"] = r["total"] - r["free"]
        r["emulated"] = r["key"] in emulated
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no boards registered at {args.tracker}")
        return 0
    _print_table(
        [[r["key"] + (" (emulated)" if r["emulated"] else ""), r["total"], r["free"], r["busy"], r["pending"], " ".join(r["servers"])] for r in rows],
        ["key", "boards", "free", "busy", "pending", "servers"],
    )
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from .rpc import emulate

    if args.action == "stop":
        n = emulate.stop(args.key)
        print(f"stopped {n} emulated board(s)" + (f" under key {args.key!r}" if args.key else ""))
        return 0
    if not args.key:
        raise UserError("board emulate needs --key: the key it serves (and registers) under")
    board = emulate.start(args.key, tracker=args.tracker, arch=args.arch, cpu=args.cpu, port=args.port)
    where = f"registered at {args.tracker} under key {args.key!r}" if args.tracker else f"at 127.0.0.1:{board.port}"
    print(f"emulated {args.arch} ({args.cpu}) board {where}, pid {board.pid}; timings are qemu's, not ARM's")
    print(f"stop it with `tvm-shufflenet board stop --key {args.key}`")
    return 0


def _board_address(args: argparse.Namespace):
    """The board of ``--rpc-tracker``/``--rpc-key``/``--rpc``, or ``None`` for this machine."""
    if not (args.rpc_tracker or args.rpc):
        return None
    from .rpc.board import BoardAddress

    return BoardAddress.parse(args.rpc_tracker, args.rpc_key, args.rpc)


def add_board_options(p: argparse.ArgumentParser, tracker_help: str) -> None:
    """``--rpc-tracker``, ``--rpc-key`` and ``--rpc``: where a board is (see :func:`_board_address`)."""
    p.add_argument("--rpc-tracker", help=tracker_help)
    p.add_argument("--rpc-key", help="the boards' key at the tracker (with --rpc: the server's --key, if it was started with one)")
    p.add_argument("--rpc", help="HOST:PORT of one RPC server (no tracker)")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import BenchConfig, bench
    from .targets import resolve

    address = _board_address(args)
    board_arch = args.board_arch or (resolve(args.target).elf_machine if args.target else None)
    if address is None and args.target is None:
        args.target = "host"
    cfg = BenchConfig(
        repeat=args.repeat,
        number=args.number,
        min_repeat_ms=args.min_repeat_ms,
        warmup=args.warmup,
        threads=args.threads,
        wait_timeout=args.wait_timeout,
        input_size=args.input_size,
        weights=args.weights,
        build_dir=Path(args.build_dir),
        board_arch=board_arch if address else None,
        pipeline=args.pipeline,
        precision=args.precision,
        tuning=tuning_choice(args),
    )
    records, failures = bench(args.items, args.target, address, cfg, args.output)
    if records:
        rows = []
        for r in sorted(records, key=lambda r: r["mflops"]):
            emu = "*" if r["emulated"] else ""
            rows.append([r["model"], r["board"] + emu] + [("-" if r.get(k) is None else f"{r[k]:.2f}") for k in ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "images_per_s")] + [f"{r['mflops']:.1f}", "-" if r.get("gflops") is None else f"{r['gflops']:.2f}", r["threads"], r["output_check"]])
        _print_table(rows, ["model", "board", "median ms", "mean ms", "std ms", "min ms", "max ms", "images/s", "MFLOPs", "GFLOP/s", "threads", "check"])
        if any(r["emulated"] for r in records):
            print("* emulated board: qemu's timings, which say nothing about ARM speed")
    if args.output:
        print(f"records in {args.output}")
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return max((getattr(f, "exit_code", 1) for f in failures), default=0)


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import profile

    address = _board_address(args)
    result = profile(args.model, args.target, pipeline=args.pipeline, input_size=args.input_size, weights=args.weights,
                     address=address, repeat=args.repeat, threads=args.threads, progress=True, tuning=tuning_choice(args),
                     precision=args.precision)
    where = "" if address is None else f" on {address}"
    timed = result.timed_total_ms or result.total_ms
    print(f"{result.model} on {result.target}{where} ({result.pipeline} pipeline, {result.threads} threads): "
          f"{result.total_ms:.3f} ms per image, {sum(k['calls'] for k in result.kernels)} kernel calls, "
          f"kernels timed {result.method}" + (f" (network {timed:.3f} ms meanwhile)" if result.method == "in-network" else ""))
    rows = [[r["category"], str(r["kernels"]), str(r["calls"]), f"{r['time_ms']:.3f}", f"{100 * r['share']:.1f}%"]
            for r in result.by_category()]
    between = timed - sum(k["time_ms"] for k in result.kernels)
    rows.append(["(between kernels)", "", "", f"{between:.3f}", f"{100 * between / max(timed, 1e-9):.1f}%"])
    _print_table(rows, ["category", "kernels", "calls", "ms", "share"])
    if args.kernels:
        print()
        krows = [[k["name"], k["category"], str(k["calls"]), f"{k['time_ms']:.4f}"]
                 for k in sorted(result.kernels, key=lambda k: -k["time_ms"])]
        _print_table(krows, ["kernel", "category", "calls", "ms"])
    if args.json:
        from .bench.records import write_json_atomic

        write_json_atomic(Path(args.json), result.to_json())
        print(f"wrote {args.json}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import TuneConfig, tune

    cfg = TuneConfig(models=args.models, target=args.target, trials=args.trials, space=args.space,
                     work_dir=Path(args.work_dir) if args.work_dir else None, threads=args.threads,
                     rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key, rpc=args.rpc, input_size=args.input_size,
                     per_iter=args.per_iter, seed=args.seed, log=Path(args.log) if args.log else None,
                     export=not args.no_export, max_kernels=args.max_kernels, command="tvm-shufflenet " + " ".join(args.argv),
                     precision=args.precision)
    result = tune(cfg)
    if result.history:
        from .bench.records import write_json_atomic

        write_json_atomic(result.work_dir / "history.json", {
            "models": args.models, "target_key": result.target_key, "space": args.space,
            "history": [{"trials": n, "seconds": round(t, 2), "model_estimate_ms": round(ms, 4)} for n, t, ms in result.history]})
    print(f"{result.trials_run} trials in {result.seconds / 60:.1f} min; database and logs in {result.work_dir}"
          + (f"; tuning log {result.log}" if result.log else ""))
    return 0


def cmd_convergence(args: argparse.Namespace) -> int:
    from .benchmarks import convergence

    return convergence.run(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from .benchmarks import compare

    return compare.run(args)


def cmd_guidelines(args: argparse.Namespace) -> int:
    from . import guidelines as gl

    address = _board_address(args)
    which = ["g1", "g2", "g3", "g4"] if args.which == "all" else [args.which]
    if args.batch < 1 or args.repeat < 1:
        raise UserError("--batch and --repeat must be at least 1")
    cfg = gl.GuidelineConfig(which, target=args.target, address=address, batch=args.batch, repeat=args.repeat,
                             threads=args.threads, build_dir=Path(args.build_dir), tuning=tuning_choice(args),
                             json_out=Path(args.json) if args.json else None, cuda_arch=args.cuda_arch,
                             widths=args.widths)
    result = gl.run(cfg)
    print(f"{result['target']} on {result['board']}" + (" (emulated: qemu speed, not ARM's)" if result["emulated"] else "")
          + f", batch {result['batch']}, 10 blocks at 56x56")
    for g, section in result["guidelines"].items():
        print()
        print(gl.table(g, section))
    if args.plot:
        gl.plot(result, Path(args.plot))
        index = gl.report(result, Path(args.plot), "tvm-shufflenet " + " ".join(args.argv))
        print(f"\ncharts and {index} written")
    if args.json:
        print(f"results in {args.json}")
    return 0


def cmd_precision(args: argparse.Namespace) -> int:
    from .benchmarks import precision

    return precision.run(args)


def cmd_concurrency(args: argparse.Namespace) -> int:
    from .benchmarks import concurrency

    return concurrency.run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .bench.records import load_records
    from .bench.report import write_report

    records = load_records(args.results)
    if not records:
        raise UserError("no records in the given files: pass JSON files written by `bench -o`")
    index = write_report(records, args.output)
    print(f"wrote {index} ({len(records)} records)")
    return 0


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights: .npz or a PyTorch .pth state_dict (torchvision names); default: seeded")
    p.add_argument("--seed", type=int, default=0, help="seed of the default weights (default 0)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--input-size", type=int, help="input resolution (default: the paper's, 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tvm-shufflenet``."""
    parser = argparse.ArgumentParser(prog="tvm-shufflenet", description="ShuffleNet/MobileNet model zoo compiled with Apache TVM.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the models with their MFLOPs, parameters and memory access cost (counted from the graph)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--family", help="only this family (shufflenet_v1, shufflenet_v2, mobilenet_v1, mobilenet_v2, mobilenet_v3)")
    p.add_argument("--input-size", type=int, help="count at this resolution (default 224)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("compile", help="compile a zoo model or an .onnx file into a shared library")
    p.add_argument("model", help="a model name (see `list`) or a path to an .onnx file")
    p.add_argument("--target", "-t", default="host", help="host, x86_64-linux-gnu, aarch64-linux-gnu, arm-linux-gnueabihf, a board (rpi4, rpi5, rk3588, jetson-orin-cpu, ...), cuda, or TVM target JSON (default host)")
    p.add_argument("--cuda-arch", help="CUDA SM arch for --target cuda, e.g. sm_80, sm_90 (default sm_80)")
    p.add_argument("--output", "-o", required=True, help="the library to write (.so)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="what weights and activations are stored in: fp32 (default), bf16 (x86 with AVX-512 BF16), fp16 (ARMv8.2-A boards: rpi5, rk3588, jetson-orin-cpu; CUDA); inputs and outputs stay float32")
    p.add_argument("--pipeline", choices=["shufflenet", "stock"], default="shufflenet",
                   help="shufflenet: this project's passes and schedule templates (default); stock: tvm.compile's default")
    add_tuning_options(p)
    _add_build_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled library on an image or a .npy batch")
    p.add_argument("library", help="a .so built by `compile`")
    p.add_argument("--input", "-i", help="an image (resized, cropped and normalised per the library) or a .npy NCHW float32 batch; default: random")
    p.add_argument("--output", "-o", help="save the logits to this .npy")
    p.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    p.add_argument("--repeat", type=int, default=0, help="also time this many runs and print the latency")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: what the library was built for)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("info", help="print the metadata record embedded in a library")
    p.add_argument("library")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export-onnx", help="write a zoo model to ONNX (through its PyTorch reference; needs torch)")
    p.add_argument("model")
    p.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension symbolic")
    _add_build_options(p)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("weights", help="write a model's weights (seeded, or converted from --weights) to .npz")
    p.add_argument("model")
    p.add_argument("--output", "-o", required=True, help="the .npz file to write")
    _add_build_options(p)
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("tracker", help="start or stop TVM's RPC tracker (the scheduler of a board farm)")
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=9190, help="port (default 9190)")
    p.add_argument("--background", action="store_true", help="detach, and return once it answers")
    p.set_defaults(func=cmd_tracker)

    p = sub.add_parser("boards", help="the boards registered at a tracker: keys, free and busy")
    p.add_argument("--tracker", required=True, help="HOST:PORT of the tracker")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("board", help="start or stop an emulated ARM board (qemu) serving TVM RPC")
    p.add_argument("action", choices=["emulate", "stop"])
    p.add_argument("--key", help="the tracker key to register under")
    p.add_argument("--tracker", help="HOST:PORT of the tracker to register with (default: none, serve directly)")
    p.add_argument("--arch", default="aarch64", help="aarch64 (default; 32-bit ARM has no TVM wheels to emulate)")
    p.add_argument("--cpu", default="cortex-a72", help="qemu CPU model (default cortex-a72)")
    p.add_argument("--port", type=int, default=9090, help="the server's port (default 9090)")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("bench", help="time models or libraries locally or on boards over RPC, checking outputs")
    p.add_argument("items", nargs="+", help="model names (compiled for --target) or built .so libraries")
    p.add_argument("--target", "-t", help="target to compile model names for (default host; rpi4 etc. for boards)")
    add_board_options(p, "HOST:PORT of the tracker")
    p.add_argument("--board-arch", help="the board's machine (aarch64, arm, x86_64) when --target does not say it")
    p.add_argument("--repeat", type=int, default=50, help="timed samples (default 50)")
    p.add_argument("--number", type=int, default=1, help="runs averaged per sample (default 1)")
    p.add_argument("--min-repeat-ms", type=int, default=0, help="grow --number until a sample lasts this long")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--threads", type=int, help="threads of the board's runtime (default: its own choice, recorded)")
    p.add_argument("--wait-timeout", type=float, default=120, help="seconds to wait for a free board (default 120)")
    p.add_argument("--input-size", type=int, help="resolution of compiled models (default 224)")
    p.add_argument("--weights", help="weights file for compiled models (default seeded)")
    p.add_argument("--build-dir", default="build/bench", help="where compiled libraries are cached")
    p.add_argument("--pipeline", choices=["shufflenet", "stock"], default="shufflenet", help="compile pipeline for model names (default shufflenet)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="model names: what weights and activations are stored in: fp32 (default), bf16 (x86 with AVX-512 BF16), fp16 (ARMv8.2-A boards: rpi5, rk3588, jetson-orin-cpu; CUDA); inputs and outputs stay float32")
    add_tuning_options(p)
    p.add_argument("--output", "-o", help="JSON records, rewritten after each model; an existing file is resumed")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="auto-tune the kernels of models for a target with MetaSchedule (locally or on "
                                    "boards over RPC) and write tuning_logs/<target key>.json",
                       description="Tune the schedule templates' knobs of every kernel of the given models (deduplicated, "
                                   "weighted by calls) with MetaSchedule: evolutionary search, XGBoost cost model. The "
                                   "database in --work-dir is written as measurements arrive: rerun the same command to "
                                   "resume. The best decision per kernel, checked against the untuned kernel, goes to "
                                   "the target's tuning log, which compile/bench/profile/compare apply automatically.")
    p.add_argument("models", nargs="+", help="zoo model names")
    p.add_argument("--target", "-t", default="host", help="host, or a board preset / triple with --rpc-tracker or --rpc (default host)")
    p.add_argument("--trials", type=int, default=512, help="measurements in all, over every kernel (default 512)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="the precision the kernels are tuned in (records are per precision): fp32 (default), bf16 (x86 with AVX-512 BF16), fp16 (ARMv8.2-A boards: rpi5, rk3588, jetson-orin-cpu; CUDA); inputs and outputs stay float32")
    p.add_argument("--space", choices=["templates", "generic"], default="templates",
                   help="templates: the knobs of schedules/ (default); generic: MetaSchedule's own space")
    p.add_argument("--work-dir", help="database and logs (default build/tune/<target key>); rerun to resume")
    p.add_argument("--threads", type=int, help="threads the kernels run with when measured (default: every CPU here)")
    add_board_options(p, "HOST:PORT of a tracker: measure on its boards (every board under the key, in parallel)")
    p.add_argument("--input-size", type=int, help="resolution the kernels are tuned for (default 224)")
    p.add_argument("--max-kernels", type=int, help="tune only the N heaviest kernels (calls x FLOPs)")
    p.add_argument("--per-iter", type=int, default=16, help="candidates measured per kernel per round (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search")
    p.add_argument("--log", help="tuning log to write (default tuning_logs/<target key>.json; merged with what is there)")
    p.add_argument("--no-export", action="store_true", help="only search; write no tuning log")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("profile", help="per-kernel time of a compiled model, grouped by category (conv kinds, pooling, data movement, ...)")
    p.add_argument("model", help="a model name or an .onnx file")
    p.add_argument("--target", "-t", default="host", help="target to compile for (default host; a board preset with --rpc-*)")
    p.add_argument("--pipeline", choices=["shufflenet", "stock"], default="shufflenet", help="compile pipeline (default shufflenet)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="what weights and activations are stored in: fp32 (default), bf16 (x86 with AVX-512 BF16), fp16 (ARMv8.2-A boards: rpi5, rk3588, jetson-orin-cpu; CUDA); inputs and outputs stay float32")
    add_tuning_options(p)
    p.add_argument("--input-size", type=int, help="input resolution (default 224)")
    p.add_argument("--weights", help="weights file (default seeded)")
    p.add_argument("--repeat", type=int, default=5, help="timed samples per kernel (default 5, each at least 20 ms)")
    p.add_argument("--threads", type=int, help="CPU threads for kernels (default: every CPU here; on a board: its runtime's choice), printed")
    add_board_options(p, "HOST:PORT of a tracker: profile on a board")
    p.add_argument("--kernels", action="store_true", help="also print every kernel, slowest first")
    p.add_argument("--json", help="write {model, target, total_ms, kernels: [{name, category, calls, time_ms}]} here")
    p.set_defaults(func=cmd_profile)

    from .benchmarks import compare as _compare
    from .benchmarks import concurrency as _concurrency
    from .benchmarks import convergence as _convergence
    from .benchmarks import precision as _precision

    for name, module, func, help_text in (
        ("compare", _compare, cmd_compare, "this project vs stock TVM, ONNX Runtime, OpenVINO and PyTorch on this machine, side by side (benchmarks/compare.py)"),
        ("convergence", _convergence, cmd_convergence, "whole-model latency estimate against trials and minutes of tuning runs (plot)"),
        ("precision", _precision, cmd_precision, "accuracy of bf16/fp16 builds against PyTorch in the same type and f32 (benchmarks/precision.py)"),
        ("concurrency", _concurrency, cmd_concurrency, "throughput of one loaded model called from 1, 2, 4... threads (benchmarks/concurrency.py)"),
    ):
        p = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(func=func)

    p = sub.add_parser("guidelines", help="the ShuffleNet V2 paper's guideline experiments G1-G4 (Tables 1-4), measured on a target",
                       description="Build each benchmark network of the paper's Tables 1-4 (10 blocks at 56x56, FLOPs equal "
                                   "across a table's rows within 1%%), compile it with the project's pipeline, check it against "
                                   "PyTorch, time it on this CPU, a board or a GPU, and print the tables beside the paper's "
                                   "numbers with a verdict per guideline.")
    p.add_argument("which", nargs="?", default="all", choices=["g1", "g2", "g3", "g4", "all"], help="which guideline (default all)")
    p.add_argument("--target", "-t", default="host", help="host, cuda, or a board preset with --rpc-* (default host)")
    p.add_argument("--cuda-arch", help="SM arch with --target cuda")
    add_board_options(p, "HOST:PORT of a tracker: measure on a board")
    p.add_argument("--batch", type=int, default=1, help="batch size (the paper: 1 on ARM, 8 on GPU; default 1)")
    p.add_argument("--repeat", type=int, default=10, help="timed samples per network, each at least 50 ms (default 10)")
    p.add_argument("--widths", type=int, default=3, choices=[1, 2, 3], help="measure the first N of each table's three widths (default 3)")
    p.add_argument("--threads", type=int, help="CPU threads (default: every CPU here; on a board its runtime's choice)")
    p.add_argument("--build-dir", default="build/guidelines", help="where compiled networks are cached")
    add_tuning_options(p)
    p.add_argument("--json", help="write results here, after every table column; an existing file is resumed")
    p.add_argument("--plot", help="folder for one chart per guideline and index.md")
    p.set_defaults(func=cmd_guidelines)

    p = sub.add_parser("report", help="tables and latency-vs-MFLOPs plots from bench records")
    p.add_argument("results", nargs="+", help="JSON files written by bench -o")
    p.add_argument("--output", "-o", default="report", help="folder for index.md, results.csv and plots (default report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="end to end: compile for this CPU, classify a picture, time it; cross-compile for a Pi 4")
    p.add_argument("--model", default="shufflenet_v2_x1_0", help="the model (default shufflenet_v2_x1_0)")
    p.add_argument("--board", default="rpi4", help="the board to cross-compile for (default rpi4)")
    p.add_argument("--weights", help="weights file (.npz or torchvision .pth); default: seeded")
    p.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--out", default="build/demo", help="where the libraries go (default build/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tvm-shufflenet``: every error is one line; exit 2 for bad input, 1 for a failure."""
    args = make_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a tuning log records the command that made it
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, UserError):
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            print(f"error: cannot use{name}: {exc.strerror or _one_line(exc)}", file=sys.stderr)
            return _EXIT_USAGE
        print(f"error: {args.command} failed ({type(exc).__name__}: {_one_line(exc)}); rerun with --debug for the traceback",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
