"""PyTorch reference implementations of every zoo network (needs ``torch``).

They are the independent oracle for the Relax models (tests compare outputs on the same weights) and the
route to ONNX (``export-onnx``). Module structure and ``state_dict`` keys follow torchvision for ShuffleNet V2
and MobileNet V2/V3, so torchvision checkpoints load into both these and the Relax models.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from .models import ModelEntry
from .models.layers import make_divisible

__all__ = ["build", "load_weights", "export_onnx"]


def _cba(cin, cout, k, stride=1, groups=1, act="relu", eps=1e-5) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}
    if act is not None:
        layers.append(acts[act]())
    return nn.Sequential(*layers)


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _SNV2Unit(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, bias=False),
                nn.BatchNorm2d(bf),
                nn.ReLU(),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False),
            nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()
        c = cfg.stage_out_channels
        self.conv1 = _cba(3, c[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = c[0]
        for name, reps, oup in zip(("stage2", "stage3", "stage4"), cfg.stage_repeats, c[1:4]):
            seq = [_SNV2Unit(inp, oup, 2)] + [_SNV2Unit(oup, oup, 1) for _ in range(reps - 1)]
            setattr(self, name, nn.Sequential(*seq))
            inp = oup
        self.conv5 = _cba(inp, c[4], 1)
        self.fc = nn.Linear(c[4], num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.conv5(x).mean([2, 3]))


class _SNV1Unit(nn.Module):
    def __init__(self, inp, oup, stride, groups, first_group):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = oup // 4
        self.gconv1 = _cba(inp, mid, 1, groups=1 if first_group else groups)
        self.dwconv = _cba(mid, mid, 3, stride, groups=mid, act=None)
        self.gconv2 = _cba(mid, oup - inp if stride == 2 else oup, 1, groups=groups, act=None)
        if stride == 2:
            self.shortcut = nn.AvgPool2d(3, 2, 1)

    def forward(self, x):
        y = self.gconv1(x)
        if self.groups > 1:
            y = _shuffle(y, self.groups)
        y = self.gconv2(self.dwconv(y))
        out = torch.cat((self.shortcut(x), y), 1) if self.stride == 2 else x + y
        return torch.relu(out)


class ShuffleNetV1(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()
        self.conv1 = _cba(3, cfg.stem_channels, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = cfg.stem_channels
        for s, (name, reps, oup) in enumerate(zip(("stage2", "stage3", "stage4"), cfg.stage_repeats, cfg.stage_out_channels)):
            units = []
            for i in range(reps):
                units.append(_SNV1Unit(inp, oup, 2 if i == 0 else 1, cfg.groups, s == 0 and i == 0))
                inp = oup
            setattr(self, name, nn.Sequential(*units))
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(x.mean([2, 3]))


class MobileNetV1(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()

        def ch(c):
            return max(8, int(c * cfg.width))

        inp = ch(cfg.stem_channels)
        layers = [_cba(3, inp, 3, 2)]
        for c, s in cfg.blocks:
            layers.append(nn.Sequential(*_cba(inp, inp, 3, s, groups=inp), *_cba(inp, ch(c), 1)))
            inp = ch(c)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean([2, 3]))


class _MBV2Unit(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = int(round(inp * t))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_cba(inp, hidden, 1, act="relu6")] if t != 1 else []
        layers += [_cba(hidden, hidden, 3, stride, hidden, "relu6"), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()
        inp = make_divisible(cfg.stem_channels * cfg.width, 8)
        last = make_divisible(cfg.last_channels * max(1.0, cfg.width), 8)
        layers = [_cba(3, inp, 3, 2, act="relu6")]
        for t, c, n, s in cfg.settings:
            oup = make_divisible(c * cfg.width, 8)
            for i in range(n):
                layers.append(_MBV2Unit(inp, oup, s if i == 0 else 1, t))
                inp = oup
        layers.append(_cba(inp, last, 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean([2, 3]))


class _SE(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class _MBV3Unit(nn.Module):
    def __init__(self, inp, k, exp, oup, se, act, stride):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_cba(inp, exp, 1, act=act, eps=1e-3)] if exp != inp else []
        layers.append(_cba(exp, exp, k, stride, exp, act, 1e-3))
        if se:
            layers.append(_SE(exp, make_divisible(exp // 4, 8)))
        layers.append(_cba(exp, oup, 1, act=None, eps=1e-3))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()
        inp = cfg.stem_channels
        layers = [_cba(3, inp, 3, 2, act="hswish", eps=1e-3)]
        for k, exp, c, se, act, s in cfg.bnecks:
            layers.append(_MBV3Unit(inp, k, exp, c, se, act, s))
            inp = c
        layers.append(_cba(inp, 6 * inp, 1, act="hswish", eps=1e-3))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * inp, cfg.last_channels), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(cfg.last_channels, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_FAMILIES = {
    "shufflenet_v1": ShuffleNetV1,
    "shufflenet_v2": ShuffleNetV2,
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3": MobileNetV3,
}


def build(entry: ModelEntry, num_classes: int = 1000) -> nn.Module:
    """The PyTorch network for a zoo entry, in eval mode with uninitialised (PyTorch default) weights."""
    return _FAMILIES[entry.family](entry.config, num_classes).eval()


def load_weights(module: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy numpy weights (PyTorch key names) into ``module``; every parameter and buffer must be given."""
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}
    own = module.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
    module.load_state_dict(state, strict=True)
    return module


def export_onnx(entry: ModelEntry, weights: Mapping[str, np.ndarray], path, batch: int = 1, input_size: int | None = None, num_classes: int = 1000, dynamic_batch: bool = False) -> None:
    """Write ``entry`` with ``weights`` to ONNX (opset 17) through the PyTorch reference module."""
    import warnings

    size = input_size or entry.input_size
    module = load_weights(build(entry, num_classes), weights)
    x = torch.zeros(batch, 3, size, size)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; it needs no onnxscript
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17, dynamic_axes=axes, dynamo=False)
