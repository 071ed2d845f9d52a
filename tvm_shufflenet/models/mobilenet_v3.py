"""MobileNet V3 (Howard et al., ICCV 2019), Tables 1 and 2 of the paper, with torchvision's module and key names."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.frontend import nn

from .layers import (
    Dropout,
    Hardswish,
    Sequential,
    conv2d,
    conv_bn_act,
    global_avg_pool,
    hardsigmoid,
    make_divisible,
    spatial_mean,
)
from .registry import ModelEntry, PaperFigures

FAMILY = "mobilenet_v3"

_EPS = 1e-3  # torchvision's MobileNetV3 BatchNorm epsilon

# k, exp, c, se, nl, s: kernel, expansion size, output channels, squeeze-excite, non-linearity, stride.
LARGE: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)
SMALL: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


@dataclass(frozen=True)
class MobileNetV3Config:
    """The bneck table, then a 1x1 conv to ``6 x`` the last bneck's channels, pooling, and a hidden fc layer."""

    bnecks: tuple[tuple[int, int, int, bool, str, int], ...]
    last_channels: int
    stem_channels: int = 16


class SqueezeExcitation(nn.Module):
    """Global pool -> 1x1 conv (ReLU) -> 1x1 conv (hard-sigmoid) -> scale the input channels."""

    def __init__(self, channels: int, squeeze: int):
        self.fc1 = conv2d(channels, squeeze, 1, bias=True)
        self.fc2 = conv2d(squeeze, channels, 1, bias=True)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        scale = hardsigmoid(self.fc2(nn.op.relu(self.fc1(global_avg_pool(x)))))
        return nn.op.multiply(x, scale)


class InvertedResidual(nn.Module):
    """A bneck: optional 1x1 expansion, k x k depthwise, optional SE, linear 1x1 projection, residual."""

    def __init__(self, inp: int, kernel: int, exp: int, oup: int, se: bool, act: str, stride: int):
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if exp != inp:
            layers.append(conv_bn_act(inp, exp, 1, act=act, eps=_EPS))
        layers.append(conv_bn_act(exp, exp, kernel, stride, groups=exp, act=act, eps=_EPS))
        if se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4, 8)))
        layers.append(conv_bn_act(exp, oup, 1, act=None, eps=_EPS))
        self.block = Sequential(layers)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = self.block(x)
        return nn.op.add(x, y) if self.use_res_connect else y


class MobileNetV3(nn.Module):
    """``features`` (stem, bnecks, last 1x1 conv) -> mean -> ``classifier`` (fc, h-swish, dropout, fc)."""

    def __init__(self, config: MobileNetV3Config, num_classes: int = 1000):
        inp = config.stem_channels
        layers: list[nn.Module] = [conv_bn_act(3, inp, 3, stride=2, act="hswish", eps=_EPS)]
        for k, exp, c, se, act, s in config.bnecks:
            layers.append(InvertedResidual(inp, k, exp, c, se, act, s))
            inp = c
        layers.append(conv_bn_act(inp, 6 * inp, 1, act="hswish", eps=_EPS))
        self.features = Sequential(layers)
        self.classifier = Sequential(
            [nn.Linear(6 * inp, config.last_channels), Hardswish(), Dropout(), nn.Linear(config.last_channels, num_classes)]
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.classifier(spatial_mean(self.features(x)))


def _network(config: MobileNetV3Config, num_classes: int) -> nn.Module:
    return MobileNetV3(config, num_classes)


PRESETS = [
    ModelEntry(
        name="mobilenet_v3_large",
        family=FAMILY,
        config=MobileNetV3Config(LARGE, 1280),
        network=_network,
        paper=PaperFigures(219, 5.4, "MobileNet V3, Table 3"),
    ),
    ModelEntry(
        name="mobilenet_v3_small",
        family=FAMILY,
        config=MobileNetV3Config(SMALL, 1024),
        network=_network,
        paper=PaperFigures(56, 2.5, "MobileNet V3, Table 4"),
    ),
]
