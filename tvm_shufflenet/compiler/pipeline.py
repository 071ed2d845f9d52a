"""The project's Relax compile pipeline, and the stock one for comparison.

``shufflenet`` (the default): fold BatchNorm, fuse conv chains, fold channel shuffles, instantiate the
schedule templates for the target, then TVM's own legalization and fusion for whatever is left (with a
plain CPU schedule, or dlight on CUDA), then TVM's lowering to the VM. ``stock``: ``tvm.compile``'s default.
"""

from __future__ import annotations

from typing import Any

from .fallback import ScheduleFallback
from .fold_batchnorm import FoldBatchNorm
from .fuse_conv import FuseConv
from .lower import ApplyTemplates, DeciderFactory
from .shuffle import FoldChannelShuffle

__all__ = ["PIPELINES", "graph_passes", "relax_pipeline", "compile_module"]

PIPELINES = ("shufflenet", "stock")

PASS_CONFIG: dict = {}


def graph_passes() -> list[Any]:
    """The target-independent graph rewrites, in order."""
    from tvm import relax

    return [relax.transform.CanonicalizeBindings(), relax.transform.FoldConstant(), FoldBatchNorm(), FuseConv(),
            FoldChannelShuffle()]


def relax_pipeline(target: Any, decide: DeciderFactory | None = None) -> Any:
    """The full ``shufflenet`` pipeline for ``target`` as one module pass."""
    import tvm
    from tvm.relax import backend

    # The backend's own stage lists (tvm.relax.pipeline's dispatchers miss some stages in 0.27).
    rp = backend.cuda.pipeline if target.kind.name == "cuda" else backend.cpu_generic.pipeline

    @tvm.transform.module_pass(opt_level=0, name="TVMShuffleNetPipeline")
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            stock_legalize = rp.legalize_passes(target)
            passes = (
                graph_passes()
                + [ApplyTemplates(target, decide)]
                + rp.library_dispatch_passes(target)
                + stock_legalize
                + ([] if target.kind.name == "cuda" else [ScheduleFallback(target)])
                + rp.dataflow_lower_passes(target)
                + rp.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_module(mod: Any, target: Any, pipeline: str = "shufflenet", decide: DeciderFactory | None = None) -> Any:
    """Compile a Relax module to a VM executable with the named pipeline."""
    import tvm

    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    if pipeline == "stock":
        return tvm.compile(mod, target=target)
    with tvm.transform.PassContext(opt_level=3, config=PASS_CONFIG):
        return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, decide))
