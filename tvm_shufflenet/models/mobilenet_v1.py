"""MobileNet V1 (Howard et al., 2017), Table 1 of the paper, with the width multiplier alpha."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.frontend import nn

from .layers import Sequential, conv_bn_act, spatial_mean
from .registry import ModelEntry, PaperFigures

FAMILY = "mobilenet_v1"

# c, s: output channels and stride of each depthwise-separable block after the 3x3/2, 32-channel stem.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


@dataclass(frozen=True)
class MobileNetV1Config:
    """Width multiplier alpha: every layer has ``int(alpha * c)`` channels."""

    width: float
    stem_channels: int = 32
    blocks: tuple[tuple[int, int], ...] = BLOCKS


# alpha: MFLOPs, params (M)   (Table 6 of the paper, 224x224)
_TABLE = {"0_25": (0.25, 41, 0.5), "0_5": (0.5, 149, 1.3), "0_75": (0.75, 325, 2.6), "1_0": (1.0, 569, 4.2)}


class MobileNetV1(nn.Module):
    """``features`` (stem, then 13 blocks of 3x3 depthwise + 1x1 pointwise, each with BN and ReLU) -> mean -> fc."""

    def __init__(self, config: MobileNetV1Config, num_classes: int = 1000):
        ch = lambda c: max(8, int(c * config.width))  # noqa: E731
        inp = ch(config.stem_channels)
        layers = [conv_bn_act(3, inp, 3, stride=2)]
        for c, s in config.blocks:
            dw = conv_bn_act(inp, inp, 3, stride=s, groups=inp)
            pw = conv_bn_act(inp, ch(c), 1)
            layers.append(Sequential([*dw.modules, *pw.modules]))
            inp = ch(c)
        self.features = Sequential(layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.fc(spatial_mean(self.features(x)))


def _network(config: MobileNetV1Config, num_classes: int) -> nn.Module:
    return MobileNetV1(config, num_classes)


PRESETS = [
    ModelEntry(
        name=f"mobilenet_v1_{suffix}",
        family=FAMILY,
        config=MobileNetV1Config(width),
        network=_network,
        paper=PaperFigures(mflops, params, "MobileNet V1, Table 6"),
    )
    for suffix, (width, mflops, params) in _TABLE.items()
]
