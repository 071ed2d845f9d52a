"""The zoo: ShuffleNet V1/V2 and MobileNet V1/V2/V3 written in Relax (``relax.frontend.nn``).

``get(name)`` returns a :class:`ModelEntry`; ``entry.to_relax(batch, input_size, num_classes)`` exports it.
Models import nothing of the compiler, tuner or RPC code.
"""

from __future__ import annotations

from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, shufflenet_v1, shufflenet_v2
from .registry import ModelEntry, PaperFigures, RelaxModel, UnknownModelError, suggest

__all__ = ["ModelEntry", "PaperFigures", "RelaxModel", "UnknownModelError", "REGISTRY", "FAMILIES", "get", "names"]

FAMILIES = ("shufflenet_v1", "shufflenet_v2", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3")

REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for module in (shufflenet_v2, shufflenet_v1, mobilenet_v1, mobilenet_v2, mobilenet_v3)
    for entry in module.PRESETS
}


def names() -> list[str]:
    """Every registered model name, in registry order."""
    return list(REGISTRY)


def get(name: str) -> ModelEntry:
    """The entry called ``name``; :class:`UnknownModelError` names close matches otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownModelError(suggest(name, names())) from None
