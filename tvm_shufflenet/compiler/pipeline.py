"""The project's Relax compile pipeline, and the stock one for comparison.

``shufflenet`` (the default): fold BatchNorm, fuse conv chains, fold channel shuffles, instantiate the
schedule templates for the target, then TVM's own legalization and fusion for whatever is left (with a
plain CPU schedule, or dlight on CUDA), then TVM's lowering to the VM. ``stock``: what ``tvm.compile`` does
by default. Both are split in two halves: :func:`lower` (to kernels: the IR the profiler reads) and
:func:`build_lowered` (memory planning and VM code generation).
"""

from __future__ import annotations

from typing import Any

from .fallback import ScheduleFallback
from .fold_batchnorm import FoldBatchNorm
from .fuse_conv import FuseConv
from .lower import ApplyTemplates, DeciderFactory
from .pad_channels import PadChannels
from .precision import ReducePrecision
from .reshape import CollapseReshapes
from .shuffle import FoldChannelShuffle

__all__ = ["PIPELINES", "graph_passes", "pad_multiple", "lower", "build_lowered", "compile_module"]

PIPELINES = ("shufflenet", "stock")


def _backend(target: Any) -> Any:
    from tvm.relax import backend

    # The backend's own stage lists (tvm.relax.pipeline's dispatchers miss some stages in 0.27).
    return backend.cuda.pipeline if target.kind.name == "cuda" else backend.cpu_generic.pipeline


def graph_passes() -> list[Any]:
    """The target-independent graph rewrites, in order."""
    from tvm import relax

    return [relax.transform.CanonicalizeBindings(), relax.transform.FoldConstant(), FoldBatchNorm(), FuseConv(),
            FoldChannelShuffle()]


def pad_multiple(target: Any, precision: Any) -> int | None:
    """The channel multiple :class:`PadChannels` pads to on ``target`` in ``precision``, or None for no padding.

    Reduced precision on ISAs with two channel blocks (AVX-512: 16 and 8 lanes) only. There a region whose
    channels are multiples of 8 but not 16 ran 8-lane blocks, and in bf16 its dot products were half as wide:
    padding MobileNet V2's 24-channel tensors to 32 made its bf16 build 3.5% faster (paired, in one process)
    for a third more multiply-adds in the convs at those tensors. Float32 keeps its channels, so the shipped
    float32 records keep naming its kernels."""
    from ..schedules.conv2d import block_sizes
    from ..schedules.knobs import family_of

    if precision is None or not precision.reduced:
        return None
    sizes = block_sizes(family_of(target))
    return sizes[0] if len(sizes) > 1 else None


def lower(mod: Any, target: Any, pipeline: str = "shufflenet", decide: DeciderFactory | None = None,
          fallback: bool = True, precision: Any = None) -> Any:
    """``mod`` lowered to ``R.call_tir`` of scheduled kernels (before memory planning) by ``pipeline``.

    ``fallback=False`` leaves the kernels no template covers unscheduled (what the tuner searches);
    ``precision`` (a :class:`~tvm_shufflenet.precision.Precision`, default fp32) the stored and computed types."""
    import tvm

    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    reduced = precision is not None and precision.reduced
    if reduced and pipeline == "stock":
        raise ValueError("the stock pipeline is float32 only: use the shufflenet pipeline for bf16/fp16")
    rp = _backend(target)
    if pipeline == "stock":
        passes = rp.library_dispatch_passes(target) + rp.legalize_passes(target)
    else:
        passes = (
            graph_passes()
            + ([PadChannels(pad)] if (pad := pad_multiple(target, precision)) else [])
            + ([ReducePrecision(precision.storage, precision.acc)] if reduced else [])
            + [ApplyTemplates(target, decide), CollapseReshapes()]
            + rp.library_dispatch_passes(target)
            + rp.legalize_passes(target)
            + ([ScheduleFallback(target, decide)] if fallback and target.kind.name != "cuda" else [])
        )
    with target:
        return tvm.transform.Sequential(passes)(mod)


def build_lowered(lowered: Any, target: Any) -> Any:
    """VM executable of a module from :func:`lower`."""
    import tvm

    rp = _backend(target)

    @tvm.transform.module_pass(opt_level=0, name="TVMShuffleNetFinalize")
    def _finish(mod: Any, _ctx: Any) -> Any:
        with target:
            return tvm.transform.Sequential(rp.dataflow_lower_passes(target) + rp.finalize_passes(target))(mod)

    return tvm.compile(lowered, target=target, relax_pipeline=_finish)


def compile_module(mod: Any, target: Any, pipeline: str = "shufflenet", decide: DeciderFactory | None = None,
                   precision: Any = None) -> Any:
    """Compile a Relax module to a VM executable with the named pipeline (and precision)."""
    return build_lowered(lower(mod, target, pipeline, decide, precision=precision), target)
