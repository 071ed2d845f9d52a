"""The model registry: one typed entry per network, presets kept as data in each family's module."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

import tvm
from tvm.relax.frontend import nn

from ..errors import UserError

__all__ = ["PaperFigures", "ModelEntry", "UnknownModelError", "RelaxModel"]


class UnknownModelError(UserError, KeyError):
    """A model name that the zoo does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class PaperFigures:
    """Complexity a paper's table reports for one network at 224x224, 1000 classes.

    ``mflops`` are millions of multiply-adds (the papers' "FLOPs"), ``params_m`` millions of parameters; both
    are printed in the papers to a fixed precision (``*_digits`` decimals), which the checks honour.
    """

    mflops: float
    params_m: float | None
    source: str
    params_digits: int = 1


@dataclass(frozen=True)
class RelaxModel:
    """A network exported to Relax: ``mod["main"](x, *params)`` with params named as in PyTorch."""

    mod: tvm.IRModule
    param_names: list[str]
    param_shapes: list[tuple[int, ...]]
    input_shape: tuple[int, int, int, int]
    num_classes: int


@dataclass(frozen=True)
class ModelEntry:
    """One network of the zoo.

    Attributes:
        name: registry name, torchvision's where it has the network (``shufflenet_v2_x1_0``).
        family: ``shufflenet_v1``, ``shufflenet_v2``, ``mobilenet_v1``, ``mobilenet_v2`` or ``mobilenet_v3``.
        config: the family's config dataclass (its stage table and width).
        network: ``network(config, num_classes)`` returns the Relax ``nn.Module``.
        paper: the figures the paper reports, when it reports them.
        input_size: the resolution the paper reports at.
    """

    name: str
    family: str
    config: Any
    network: Callable[[Any, int], nn.Module] = field(repr=False)
    paper: PaperFigures | None = None
    input_size: int = 224

    def build(self, num_classes: int = 1000) -> nn.Module:
        """The network as a ``relax.frontend.nn.Module`` (parameters not yet bound)."""
        return self.network(self.config, num_classes)

    def to_relax(self, batch: int = 1, input_size: int | None = None, num_classes: int = 1000) -> RelaxModel:
        """Export to an IRModule whose ``main(x, *params)`` takes an NCHW float32 batch.

        ``input_size`` is the resolution multiplier of the papers (any size the strides divide works).
        """
        size = input_size or self.input_size
        if batch < 1 or size < 32:
            raise ValueError(f"{self.name}: batch must be >= 1 and input size >= 32 (got {batch}, {size})")
        shape = (batch, 3, size, size)
        module = self.build(num_classes)
        mod, params = module.export_tvm({"forward": {"x": nn.spec.Tensor(list(shape), "float32")}})
        func = mod["forward"].with_attr("global_symbol", "main")
        mod = tvm.IRModule({"main": func})
        return RelaxModel(
            mod=mod,
            param_names=[name for name, _ in params],
            param_shapes=[tuple(int(d) for d in p.shape) for _, p in params],
            input_shape=shape,
            num_classes=num_classes,
        )


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown model {name!r}: {hint}run `tvm-shufflenet list` for the {len(known)} models"


