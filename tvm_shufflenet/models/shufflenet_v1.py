"""ShuffleNet V1 (Zhang et al., CVPR 2018), Table 1 of the paper.

Unit (Fig. 2): 1x1 group conv -> BN -> ReLU -> channel shuffle -> 3x3 depthwise conv (stride s) -> BN ->
1x1 group conv -> BN; stride 1 adds the input, stride 2 concatenates a 3x3/2 average-pooled input; then ReLU.
The bottleneck is a quarter of the unit's output channels, and Stage 2's first pointwise layer is not a group
conv (its input has only 24 channels).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.frontend import nn

from .layers import AvgPool2d, MaxPool2d, Sequential, channel_shuffle, conv_bn_act, make_divisible, spatial_mean
from .registry import ModelEntry, PaperFigures

FAMILY = "shufflenet_v1"


@dataclass(frozen=True)
class ShuffleNetV1Config:
    """Groups ``g``, the stem's channels, the output channels of Stages 2-4 and their unit counts."""

    groups: int
    stem_channels: int
    stage_out_channels: tuple[int, int, int]
    stage_repeats: tuple[int, int, int] = (4, 8, 4)


# g: Stage 2, 3, 4 output channels at 1x (Table 1)      MFLOPs at 1x (Table 1)
_TABLE = {
    1: ((144, 288, 576), 143),
    2: ((200, 400, 800), 140),
    3: ((240, 480, 960), 137),
    4: ((272, 544, 1088), 133),
    8: ((384, 768, 1536), 137),
}
_WIDTHS = {"x0_5": 0.5, "x1_0": 1.0, "x1_5": 1.5, "x2_0": 2.0}


def config_for(groups: int, width: float) -> ShuffleNetV1Config:
    """"ShuffleNet s x" scales every layer's filters by s (Sec. 4.1.1).

    Stage widths are rounded to a multiple of ``4 g`` so the bottleneck (a quarter) splits into ``g`` groups;
    the stem to a multiple of ``g``. At 1x this is exactly Table 1.
    """
    stages = tuple(make_divisible(c * width, 4 * groups) for c in _TABLE[groups][0])
    return ShuffleNetV1Config(groups, make_divisible(24 * width, groups, min_value=8), stages)  # type: ignore[arg-type]


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit (Fig. 2b for stride 1, Fig. 2c for stride 2)."""

    def __init__(self, inp: int, oup: int, stride: int, groups: int, first_group: bool):
        self.stride, self.groups = stride, groups
        mid = oup // 4
        branch_out = oup - inp if stride == 2 else oup
        self.gconv1 = conv_bn_act(inp, mid, 1, groups=1 if first_group else groups, act="relu")
        self.dwconv = conv_bn_act(mid, mid, 3, stride=stride, groups=mid, act=None)
        self.gconv2 = conv_bn_act(mid, branch_out, 1, groups=groups, act=None)
        if stride == 2:
            self.shortcut = AvgPool2d(3, 2, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = self.gconv1(x)
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.gconv2(self.dwconv(y))
        if self.stride == 2:
            out = nn.op.concat([self.shortcut(x), y], dim=1)
        else:
            out = nn.op.add(x, y)
        return nn.op.relu(out)


class ShuffleNetV1(nn.Module):
    """conv1 (3x3/2) -> maxpool (3x3/2) -> Stage 2..4 -> global mean -> fc."""

    def __init__(self, config: ShuffleNetV1Config, num_classes: int = 1000):
        self.conv1 = conv_bn_act(3, config.stem_channels, 3, stride=2)
        self.maxpool = MaxPool2d(3, 2, 1)
        stages = []
        inp = config.stem_channels
        for s, (repeats, oup) in enumerate(zip(config.stage_repeats, config.stage_out_channels)):
            units = []
            for i in range(repeats):
                units.append(ShuffleUnit(inp, oup, 2 if i == 0 else 1, config.groups, first_group=s == 0 and i == 0))
                inp = oup
            stages.append(Sequential(units))
        self.stage2, self.stage3, self.stage4 = stages
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(spatial_mean(x))


def _network(config: ShuffleNetV1Config, num_classes: int) -> nn.Module:
    return ShuffleNetV1(config, num_classes)


PRESETS = [
    ModelEntry(
        name=f"shufflenet_v1_g{g}_{wname}",
        family=FAMILY,
        config=config_for(g, width),
        network=_network,
        paper=PaperFigures(mflops, None, "ShuffleNet V1, Table 1") if width == 1.0 else None,
    )
    for g, (_, mflops) in _TABLE.items()
    for wname, width in _WIDTHS.items()
]
