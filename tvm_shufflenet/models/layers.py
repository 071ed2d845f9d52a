"""Building blocks that ``relax.frontend.nn`` lacks: BatchNorm, pooling, hard activations, channel shuffle.

Module attribute names follow PyTorch/torchvision (``Sequential`` children are ``"0"``, ``"1"``, ...), so a
parameter's dotted name here is the key of the same tensor in a torchvision ``state_dict``.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend import nn

__all__ = [
    "Sequential",
    "BatchNorm2d",
    "ReLU",
    "ReLU6",
    "Hardswish",
    "Hardsigmoid",
    "Identity",
    "Dropout",
    "MaxPool2d",
    "AvgPool2d",
    "conv2d",
    "conv_bn_act",
    "channel_shuffle",
    "global_avg_pool",
    "spatial_mean",
    "hardswish",
    "hardsigmoid",
    "make_divisible",
]


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% below it (torchvision's rule)."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _wrap(expr: relax.Expr, name: str) -> nn.Tensor:
    return nn.op.wrap_nested(expr, name)


def hardsigmoid(x: nn.Tensor) -> nn.Tensor:
    """``relu6(x + 3) / 6`` (PyTorch's ``Hardsigmoid``)."""
    return nn.op.divide(nn.op.relu6(nn.op.add(x, _scalar(3.0, x))), _scalar(6.0, x))


def hardswish(x: nn.Tensor) -> nn.Tensor:
    """``x * relu6(x + 3) / 6`` (PyTorch's ``Hardswish``)."""
    return nn.op.multiply(x, hardsigmoid(x))


def _scalar(value: float, like: nn.Tensor) -> nn.Tensor:
    return _wrap(relax.const(value, like.dtype), "const")


def channel_shuffle(x: nn.Tensor, groups: int) -> nn.Tensor:
    """The ShuffleNet channel shuffle: view channels as ``(groups, C/groups)``, transpose, flatten.

    Written as reshape -> permute_dims -> reshape, the same pattern ONNX exports of ShuffleNet contain, so
    one pipeline rewrite recognises both.
    """
    n, c, h, w = x.shape
    x = nn.op.reshape(x, (n, groups, c // groups, h, w))
    x = nn.op.permute_dims(x, (0, 2, 1, 3, 4))
    return nn.op.reshape(x, (n, c, h, w))


def spatial_mean(x: nn.Tensor) -> nn.Tensor:
    """Mean over H and W: ``(N, C, H, W) -> (N, C)``."""
    return _wrap(relax.op.mean(x._expr, axis=[2, 3]), "mean")


def global_avg_pool(x: nn.Tensor) -> nn.Tensor:
    """Mean over H and W, keeping ``(N, C, 1, 1)``."""
    return _wrap(relax.op.nn.adaptive_avg_pool2d(x._expr, (1, 1)), "global_avg_pool")


class Sequential(nn.ModuleList):
    """Modules applied in order; children are named ``"0"``, ``"1"``, ... as in ``torch.nn.Sequential``."""

    def forward(self, x: nn.Tensor) -> nn.Tensor:  # pylint: disable=arguments-differ
        for module in self.modules:
            x = module(x)
        return x


class BatchNorm2d(nn.Module):
    """Inference-mode batch normalisation over axis 1 with ``weight``, ``bias``, ``running_mean``, ``running_var``."""

    def __init__(self, channels: int, eps: float = 1e-5):
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter((channels,), "float32")
        self.bias = nn.Parameter((channels,), "float32")
        self.running_mean = nn.Parameter((channels,), "float32")
        self.running_var = nn.Parameter((channels,), "float32")

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = relax.op.nn.batch_norm(
            x._expr,
            self.weight._expr,
            self.bias._expr,
            self.running_mean._expr,
            self.running_var._expr,
            axis=1,
            epsilon=self.eps,
            training=False,
        )
        return _wrap(relax.TupleGetItem(out, 0), "batch_norm")


class _Stateless(nn.Module):
    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.fn(x)


class ReLU(_Stateless):
    """Elementwise ``max(x, 0)``."""

    fn = staticmethod(nn.op.relu)


class ReLU6(_Stateless):
    """Elementwise ``min(max(x, 0), 6)``."""

    fn = staticmethod(nn.op.relu6)


class Hardswish(_Stateless):
    """Elementwise ``x * relu6(x + 3) / 6``."""

    fn = staticmethod(hardswish)


class Hardsigmoid(_Stateless):
    """Elementwise ``relu6(x + 3) / 6``."""

    fn = staticmethod(hardsigmoid)


class Identity(_Stateless):
    """Returns its input (an inference-time ``Dropout``)."""

    fn = staticmethod(lambda x: x)


Dropout = Identity


class MaxPool2d(nn.Module):
    """Max pooling, NCHW, padding on all four sides."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        k, s, p = self.kernel_size, self.stride, self.padding
        return _wrap(relax.op.nn.max_pool2d(x._expr, (k, k), (s, s), (p, p, p, p)), "max_pool2d")


class AvgPool2d(nn.Module):
    """Average pooling, NCHW; padded positions count in the divisor, as ``torch.nn.AvgPool2d`` does by default."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        k, s, p = self.kernel_size, self.stride, self.padding
        expr = relax.op.nn.avg_pool2d(x._expr, (k, k), (s, s), (p, p, p, p), count_include_pad=True)
        return _wrap(expr, "avg_pool2d")


_ACTIVATIONS = {"relu": ReLU, "relu6": ReLU6, "hswish": Hardswish, None: None}


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2D:
    """A square convolution with 'same' padding for odd kernels."""
    return nn.Conv2D(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=bias)


def conv_bn_act(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: str | None = "relu",
    eps: float = 1e-5,
) -> Sequential:
    """``Sequential(conv, BatchNorm[, activation])``: torchvision's ``Conv2dNormActivation`` key layout."""
    layers: list[nn.Module] = [conv2d(cin, cout, kernel, stride, groups), BatchNorm2d(cout, eps)]
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; use one of relu, relu6, hswish or None")
    if act is not None:
        layers.append(_ACTIVATIONS[act]())
    return Sequential(layers)
