"""Compile a zoo model or an ONNX file for a target and export a self-describing shared library.

Steps (each a function below): 1. load the source as Relax with its weights bound; 2. compile with TVM;
3. export with the target's (cross) compiler, a metadata record placed in an ELF section; 4. seal the file
with its SHA-256. The library holds the weights, so it runs with nothing but the TVM runtime.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from . import __version__, elf, models
from . import weights as weights_mod
from .counting import count
from .errors import UserError
from .precision import for_target
from .targets import TargetSpec, resolve

__all__ = ["BuildError", "Source", "load_source", "compile_source", "export", "build", "build_source", "default_preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BuildError(UserError, ValueError):
    """A build that cannot proceed (bad output path, unsupported input)."""


@dataclass
class Source:
    """A network ready to compile: ``mod["main"](x)`` with weights bound, and what the metadata records."""

    mod: Any
    name: str
    family: str
    input_shape: tuple[int, ...]
    num_classes: int
    weights_source: str
    weights_sha256: str | None


def default_preprocessing(size: int) -> dict[str, Any]:
    """ImageNet evaluation transform: resize the short side to 256/224 of the crop, centre crop, normalise."""
    return {
        "resize": int(round(size * 256 / 224)),
        "crop": size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "scale": 1 / 255,
        "color": "RGB",
        "layout": "NCHW",
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_source(
    source: str,
    *,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    batch: int = 1,
    input_size: int | None = None,
    num_classes: int = 1000,
) -> Source:
    """Step 1: a zoo name or an ``.onnx`` path, as Relax with weights bound as constants."""
    import tvm
    from tvm import relax

    if str(source).lower().endswith(".onnx"):
        from .frontends import from_onnx

        if weights is not None:
            raise BuildError("an ONNX file carries its own weights; drop --weights")
        size = input_size
        mod, shape = from_onnx(source, None if size is None else (batch, 3, size, size), batch=batch)
        out = mod["main"].ret_ty
        classes = int(out.shape.values[-1]) if getattr(out, "shape", None) is not None else num_classes
        return Source(mod, Path(source).stem, "onnx", shape, classes, str(source), _sha256(Path(source)))

    entry = models.get(source)
    rm = entry.to_relax(batch=batch, input_size=input_size, num_classes=num_classes)
    if weights is None:
        values, wsrc, wsha = weights_mod.seeded(rm, seed), f"seeded:{seed}", None
    else:
        values, wsrc, wsha = weights_mod.load(weights, rm), str(weights), _sha256(Path(weights))
    func = rm.mod["main"]
    bound = {var.name: tvm.runtime.tensor(values[name]) for var, name in zip(func.params[1:], rm.param_names)}
    mod = relax.transform.BindParams("main", bound)(rm.mod)
    return Source(mod, entry.name, entry.family, rm.input_shape, num_classes, wsrc, wsha)


def compile_source(src: Source, spec: TargetSpec, pipeline: str = "shufflenet", tuning_log: dict | None = None,
                   precision: str = "fp32"):
    """Step 2: compile to a Relax VM executable for ``spec`` with the ``shufflenet`` (default) or ``stock``
    pipeline; ``tuning_log`` (see :mod:`compiler.tuning`) overrides the templates' default knobs; ``precision``
    (``fp32``, ``bf16``, ``fp16``: :mod:`tvm_shufflenet.precision`) is what weights and activations are stored in."""
    from .compiler.pipeline import PIPELINES, compile_module
    from .compiler.tuning import decider_factory

    if pipeline not in PIPELINES:
        raise BuildError(f"unknown pipeline {pipeline!r}; use one of: {', '.join(PIPELINES)}")
    prec, spec = for_target(precision, spec)
    if prec.reduced and pipeline != "shufflenet":
        raise BuildError(f"--precision {precision} needs the shufflenet pipeline (the stock one is float32 only)")
    return compile_module(src.mod, spec.tvm_target(), pipeline, decider_factory(tuning_log), prec)


def applied_log(spec: TargetSpec, tuning: str | os.PathLike | None = "auto"):
    """The tuning log a build for ``spec`` applies (:func:`compiler.tuning.find_log`)."""
    from .compiler.tuning import find_log
    from .schedules.knobs import family_of

    return find_log(spec.key, family_of(spec.tvm_target()).name, tuning)


def export(executable, spec: TargetSpec, output: Path, record: dict[str, Any]) -> str:
    """Steps 3 and 4: link the library (cross compiling when needed) with ``record`` embedded; seal it.

    Written to a temporary name first, so a failed export never leaves a half-written library at ``output``.
    """
    from tvm.support import cc

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tvm_shufflenet_") as tmp:
        meta_c = Path(tmp) / "tvm_shufflenet_metadata.c"
        meta_c.write_text(elf.metadata_c_source(record))
        # A new compiler function per export: cross_compiler's closure accumulates options across calls.
        fcompile = cc.cross_compiler(spec.cross_compiler or "gcc", add_files=[str(meta_c)])
        staging = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            executable.export_library(str(staging), fcompile=fcompile, workspace_dir=tmp)
            digest = elf.seal(staging)
            staging.replace(output)
        finally:
            staging.unlink(missing_ok=True)
    return digest


def build(
    source: str,
    target: str | TargetSpec,
    output: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    batch: int = 1,
    input_size: int | None = None,
    num_classes: int = 1000,
    cuda_arch: str | None = None,
    pipeline: str = "shufflenet",
    tuning: str | os.PathLike = "auto",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Compile ``source`` (zoo name or ``.onnx``) for ``target`` into the library ``output`` (``.so``).

    ``pipeline``: ``shufflenet`` (this project's passes and schedule templates) or ``stock`` (``tvm.compile``'s
    default, for comparison). ``tuning``: ``auto`` applies ``tuning_logs/<target key>.json``, else a log of the
    same template family; ``none`` builds with the templates' defaults; a path applies that log. ``precision``:
    ``fp32``, ``bf16`` or ``fp16`` where the target has the hardware (:mod:`tvm_shufflenet.precision`), inputs
    and outputs float32 whatever it is. Returns the metadata record embedded in the library (``tuning_log`` says
    which log was applied and how).
    """
    output = Path(output)
    if output.suffix != ".so":
        raise BuildError(f"output {output} must end in .so (a shared library)")
    spec = resolve(target, cuda_arch) if isinstance(target, str) else target
    spec.check_toolchain()  # fail before minutes of compiling, not after
    for_target(precision, spec)
    started = time.perf_counter()
    src = load_source(source, weights=weights, seed=seed, batch=batch, input_size=input_size, num_classes=num_classes)
    return build_source(src, spec, output, pipeline=pipeline, tuning=tuning, started=started, precision=precision)


def build_source(src: Source, spec: TargetSpec, output: str | os.PathLike, *, pipeline: str = "shufflenet",
                 tuning: str | os.PathLike = "auto", started: float | None = None,
                 precision: str = "fp32") -> dict[str, Any]:
    """Steps 2-4 of :func:`build` for a :class:`Source` made elsewhere (ONNX, zoo, a benchmark network)."""
    import tvm

    output = Path(output)
    started = time.perf_counter() if started is None else started
    spec.check_toolchain()
    complexity = count(src.mod)
    applied = applied_log(spec, tuning if pipeline == "shufflenet" else "none")
    prec, built_for = for_target(precision, spec)
    executable = compile_source(src, spec, pipeline, applied.log, precision)
    size = src.input_shape[-1]
    out_ty = src.mod["main"].ret_ty
    out_shape = [int(d) for d in out_ty.shape.values] if getattr(out_ty, "shape", None) is not None else [src.input_shape[0], src.num_classes]
    record: dict[str, Any] = {
        "format": 1,
        "model": src.name,
        "family": src.family,
        "input_name": "x",
        "input_shape": list(src.input_shape),
        "input_dtype": "float32",
        "precision": prec.name,  # what weights and activations are stored in; inputs and outputs stay float32
        "compute_dtype": prec.acc,
        "output_shape": out_shape,
        "num_classes": src.num_classes,
        "preprocessing": default_preprocessing(size),
        "target": built_for.to_json(),
        "target_key": spec.key,
        "elf_machine": spec.elf_machine,
        "pipeline": pipeline,
        "tuning_log": applied.to_json(),
        "weights": {"source": src.weights_source, "sha256": src.weights_sha256},
        "mflops": round(complexity.mflops, 3),
        "params": complexity.params,
        "tvm_version": tvm.__version__,
        "tvm_shufflenet_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record["library_sha256"] = export(executable, spec, output, record)
    record["build_seconds"] = round(time.perf_counter() - started, 2)
    return record

