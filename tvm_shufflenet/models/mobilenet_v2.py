"""MobileNet V2 (Sandler et al., CVPR 2018), Table 2 of the paper, with torchvision's module and key names."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.frontend import nn

from .layers import BatchNorm2d, Dropout, Sequential, conv2d, conv_bn_act, make_divisible, spatial_mean
from .registry import ModelEntry, PaperFigures

FAMILY = "mobilenet_v2"

# t, c, n, s: expansion factor, output channels, repeats, stride of the first repeat (Table 2).
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetV2Config:
    """Width multiplier; channels are rounded to multiples of 8 and the last layer never shrinks below 1280."""

    width: float = 1.0
    stem_channels: int = 32
    last_channels: int = 1280
    settings: tuple[tuple[int, int, int, int], ...] = SETTINGS


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1 projection; residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(inp, hidden, 1, act="relu6"))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act="relu6"), conv2d(hidden, oup, 1), BatchNorm2d(oup)]
        self.conv = Sequential(layers)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = self.conv(x)
        return nn.op.add(x, y) if self.use_res_connect else y


class MobileNetV2(nn.Module):
    """``features`` (stem, 17 inverted residuals, 1x1 to 1280) -> mean -> ``classifier`` (dropout, fc)."""

    def __init__(self, config: MobileNetV2Config, num_classes: int = 1000):
        w = config.width
        inp = make_divisible(config.stem_channels * w, 8)
        last = make_divisible(config.last_channels * max(1.0, w), 8)
        layers: list[nn.Module] = [conv_bn_act(3, inp, 3, stride=2, act="relu6")]
        for t, c, n, s in config.settings:
            oup = make_divisible(c * w, 8)
            for i in range(n):
                layers.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        layers.append(conv_bn_act(inp, last, 1, act="relu6"))
        self.features = Sequential(layers)
        self.classifier = Sequential([Dropout(), nn.Linear(last, num_classes)])

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.classifier(spatial_mean(self.features(x)))


def _network(config: MobileNetV2Config, num_classes: int) -> nn.Module:
    return MobileNetV2(config, num_classes)


# suffix: width, paper figures (the paper's Table 4 reports the 1.0 network: 300M multiply-adds, 3.4M params)
_WIDTHS = {"": 1.0, "_0_35": 0.35, "_0_5": 0.5, "_0_75": 0.75, "_1_4": 1.4}

PRESETS = [
    ModelEntry(
        name=f"mobilenet_v2{suffix}",
        family=FAMILY,
        config=MobileNetV2Config(width),
        network=_network,
        paper=PaperFigures(300, 3.4, "MobileNet V2, Table 4") if width == 1.0 else None,
    )
    for suffix, width in _WIDTHS.items()
]
