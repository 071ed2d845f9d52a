"""The compile pipeline: graph passes (BatchNorm folding, conv fusion, channel-shuffle folding), schedule
template instantiation, and TVM's lowering. :func:`pipeline.compile_module` is the entry point."""

from .pipeline import PIPELINES, build_lowered, compile_module, graph_passes, lower

__all__ = ["PIPELINES", "build_lowered", "compile_module", "graph_passes", "lower"]
