"""Accuracy of reduced-precision builds: a model in bf16 or fp16 against PyTorch in the same type and in f32.

For each model: the f32 build and the reduced build (``--precision``) run a fixed set of inputs (seeded normal
images; seeded weights, or ``--weights``); PyTorch runs the same network in f32 and in the reduced type (weights
and input cast, as an fp16/bf16 deployment stores them). Reported per model: the largest output error relative
to the f32 output range (reduced build vs PyTorch f32, vs PyTorch in the same type, vs this project's f32 build),
and top-1 agreement with f32 over the inputs. A library on a board (``--target rpi5 --rpc ...``) is run there
and compared the same way. Results go to JSON (rewritten after every model, resumed on rerun).

Run ``tvm-shufflenet precision --help`` or ``python benchmarks/precision.py --help``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

INPUTS = 8  # images per model: enough for top-1 agreement to mean something, few enough for qemu


def torch_outputs(model: str, weights: dict[str, np.ndarray], xs: list[np.ndarray], dtype: str) -> list[np.ndarray]:
    """PyTorch's logits for ``xs`` with the network, weights and input in ``dtype`` (float32, bfloat16, float16)."""
    import torch

    from tvm_shufflenet import models, reference

    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    module = reference.load_weights(reference.build(models.get(model)), weights).eval().to(tdt)
    with torch.inference_mode():
        return [module(torch.from_numpy(x).to(tdt)).float().numpy() for x in xs]


def _errors(out: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return max(float(np.abs(o - r).max() / max(float(np.ptp(r)), 1e-12)) for o, r in zip(out, ref))


def _top1(out: list[np.ndarray], ref: list[np.ndarray]) -> float:
    return float(np.mean([int(o.argmax()) == int(r.argmax()) for o, r in zip(out, ref)]))


def measure(model: str, precision: str, *, target: str = "host", input_size: int | None = None, seed: int = 0,
            inputs: int = INPUTS, build_dir: Path = Path("build/precision"), address: Any = None) -> dict[str, Any]:
    """One model's accuracy record (see the module docstring)."""
    from tvm_shufflenet import models
    from tvm_shufflenet import weights as weights_mod
    from tvm_shufflenet.build import build
    from tvm_shufflenet.precision import for_target
    from tvm_shufflenet.targets import resolve

    spec = resolve(target)
    prec, _ = for_target(precision, spec)  # a precision the target lacks fails before any building
    entry = models.get(model)
    size = input_size or entry.input_size
    w = weights_mod.seeded(entry.to_relax(input_size=input_size), seed)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((1, 3, size, size)).astype("float32") for _ in range(inputs)]
    outs = {}
    for p in ("fp32", precision):
        lib = build_dir / spec.key / f"{model}_{size}_seed{seed}_{p}.so"
        build(model, spec, lib, seed=seed, input_size=input_size, precision=p)
        outs[p] = _run(lib, xs, address)
    ref32 = torch_outputs(model, w, xs, "float32")
    same = torch_outputs(model, w, xs, prec.storage)
    red = outs[precision]
    return {
        "model": model, "precision": precision, "stored": prec.storage, "computed": prec.acc,
        "target_key": spec.key, "input_shape": [1, 3, size, size], "inputs": inputs, "weights": f"seeded:{seed}",
        "where": "host" if address is None else f"rpc {address}",
        "err_vs_pytorch_f32": _errors(red, ref32),
        "err_vs_pytorch_same_dtype": _errors(red, same),
        "err_vs_tvm_f32": _errors(red, outs["fp32"]),
        "err_pytorch_same_dtype_vs_f32": _errors(same, ref32),
        "err_tvm_f32_vs_pytorch_f32": _errors(outs["fp32"], ref32),
        "top1_agreement_vs_f32": _top1(red, ref32),
        "top1_pytorch_same_dtype_vs_f32": _top1(same, ref32),
        "errors": "max over inputs of max |a - b| / (max - min of b)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _run(lib: Path, xs: list[np.ndarray], address: Any) -> list[np.ndarray]:
    if address is None:
        from tvm_shufflenet.runtime import load

        model = load(lib)
        return [model(x) for x in xs]
    from tvm_shufflenet.rpc.board import connect, release, run_outputs

    session = connect(address)
    try:
        return run_outputs(session, lib, xs)
    finally:
        release(session)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="zoo model names")
    p.add_argument("--precision", required=True, choices=["bf16", "fp16"], help="the reduced precision to check")
    p.add_argument("--target", "-t", default="host", help="host (bf16 on AVX-512 BF16 CPUs), or rpi5/rk3588/... with --rpc")
    p.add_argument("--rpc", help="HOST:PORT of a board's RPC server (libraries run there)")
    p.add_argument("--input-size", type=int, help="resolution (default 224)")
    p.add_argument("--inputs", type=int, default=INPUTS, help=f"fixed seeded inputs per model (default {INPUTS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs (default 0)")
    p.add_argument("--build-dir", default="build/precision", help="where libraries are built")
    p.add_argument("--output", "-o", help="JSON records, rewritten after each model; models already in it are skipped")


def run(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from tvm_shufflenet import models
    from tvm_shufflenet.bench.records import write_json_atomic

    for model in args.models:
        models.get(model)
    out = Path(args.output) if args.output else None
    records: list[dict[str, Any]] = json.loads(out.read_text()) if out and out.exists() else []
    address = None
    if args.rpc:
        from tvm_shufflenet.rpc.board import BoardAddress

        address = BoardAddress.parse(rpc=args.rpc)
    for model in tqdm(args.models, desc="precision", unit="model", disable=None):
        key = (model, args.precision, args.target, args.input_size)
        if any((r["model"], r["precision"], r.get("target"), r.get("input_size")) == key for r in records):
            continue
        rec = measure(model, args.precision, target=args.target, input_size=args.input_size, seed=args.seed,
                      inputs=args.inputs, build_dir=Path(args.build_dir), address=address)
        rec.update(target=args.target, input_size=args.input_size)
        records.append(rec)
        if out:
            write_json_atomic(out, records)
    header = ["model", "vs PyTorch f32", "vs PyTorch same type", "PyTorch same type vs f32", "top-1 = f32"]
    print(f"{args.precision} on {args.target}: largest output error / f32 output range over {args.inputs} inputs")
    rows = [[r["model"], f"{r['err_vs_pytorch_f32']:.2e}", f"{r['err_vs_pytorch_same_dtype']:.2e}",
             f"{r['err_pytorch_same_dtype_vs_f32']:.2e}", f"{r['top1_agreement_vs_f32']:.2f}"]
            for r in records if r["precision"] == args.precision and r["model"] in args.models]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(wd) for h, wd in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(row, widths)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="precision", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
