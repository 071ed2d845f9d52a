"""ShuffleNet V2 (Ma et al., ECCV 2018), Table 5 of the paper, with torchvision's module and key names."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.frontend import nn

from .layers import BatchNorm2d, MaxPool2d, ReLU, Sequential, channel_shuffle, conv2d, conv_bn_act, spatial_mean
from .registry import ModelEntry, PaperFigures

FAMILY = "shufflenet_v2"


@dataclass(frozen=True)
class ShuffleNetV2Config:
    """Output channels of conv1, stage2, stage3, stage4, conv5 and the unit count of each stage.

    Table 5 of the paper: every stage starts with one stride-2 unit, then ``repeats - 1`` stride-1 units.
    """

    stage_out_channels: tuple[int, int, int, int, int]
    stage_repeats: tuple[int, int, int] = (4, 8, 4)


# width: conv1, stage2, stage3, stage4, conv5       MFLOPs  params(M)   (Table 5)
_TABLE = {
    "x0_5": ((24, 48, 96, 192, 1024), 41, 1.4),
    "x1_0": ((24, 116, 232, 464, 1024), 146, 2.3),
    "x1_5": ((24, 176, 352, 704, 1024), 299, 3.5),
    "x2_0": ((24, 244, 488, 976, 2048), 591, 7.4),
}


class InvertedResidual(nn.Module):
    """A ShuffleNet V2 unit (Fig. 3c for stride 1, Fig. 3d for stride 2)."""

    def __init__(self, inp: int, oup: int, stride: int):
        self.stride = stride
        branch = oup // 2
        if stride == 2:
            self.branch1 = Sequential(
                [
                    conv2d(inp, inp, 3, stride, groups=inp),
                    BatchNorm2d(inp),
                    conv2d(inp, branch, 1),
                    BatchNorm2d(branch),
                    ReLU(),
                ]
            )
        branch_in = inp if stride > 1 else branch
        self.branch2 = Sequential(
            [
                conv2d(branch_in, branch, 1),
                BatchNorm2d(branch),
                ReLU(),
                conv2d(branch, branch, 3, stride, groups=branch),
                BatchNorm2d(branch),
                conv2d(branch, branch, 1),
                BatchNorm2d(branch),
                ReLU(),
            ]
        )

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        if self.stride == 1:
            x1, x2 = nn.op.split(x, 2, axis=1)
            out = nn.op.concat([x1, self.branch2(x2)], dim=1)
        else:
            out = nn.op.concat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """conv1 -> maxpool -> stage2..4 -> conv5 -> global mean -> fc."""

    def __init__(self, config: ShuffleNetV2Config, num_classes: int = 1000):
        c = config.stage_out_channels
        self.conv1 = conv_bn_act(3, c[0], 3, stride=2)
        self.maxpool = MaxPool2d(3, 2, 1)
        stages = []
        inp = c[0]
        for repeats, oup in zip(config.stage_repeats, c[1:4]):
            stages.append(Sequential([InvertedResidual(inp if i == 0 else oup, oup, 2 if i == 0 else 1) for i in range(repeats)]))
            inp = oup
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = conv_bn_act(c[3], c[4], 1)
        self.fc = nn.Linear(c[4], num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        return self.fc(spatial_mean(x))


def _network(config: ShuffleNetV2Config, num_classes: int) -> nn.Module:
    return ShuffleNetV2(config, num_classes)


PRESETS = [
    ModelEntry(
        name=f"shufflenet_v2_{width}",
        family=FAMILY,
        config=ShuffleNetV2Config(channels),
        network=_network,
        paper=PaperFigures(mflops, params, "ShuffleNet V2, Table 5"),
    )
    for width, (channels, mflops, params) in _TABLE.items()
]
