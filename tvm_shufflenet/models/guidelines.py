"""The benchmark networks of the ShuffleNet V2 paper's four guideline experiments (its Tables 1-4).

Each network is one building block stacked 10 times on a 56x56 input of ``c`` channels, as the paper
describes; the rows of a table differ in structure and hold FLOPs (multiply-adds) equal, by channel counts
chosen here so that they match within 1% (the paper's own counts are 2-5% apart: 22 x 44 = 968 against
32 x 32 = 1024). The paper gives the blocks in words and figures; where it leaves a choice open it is said
at the block:

- G1: two 1x1 convolutions, ``c1 -> c2`` then ``c2 -> c1``, at ratios c1:c2 = 1:1, 1:2, 1:6, 1:12.
- G2: two 1x1 group convolutions ``c -> c`` with g = 1, 2, 4, 8 groups (no shuffle: a pure group-conv cost).
- G3: 1x1 convolutions ``c -> c`` as 1 fragment, 2 or 4 in series, or 2 or 4 parallel branches summed
  (the merge is not stated in the text; a sum keeps the channel count and needs no extra copy).
- G4: the ResNet bottleneck (1x1 ``c -> c/4``, 3x3 ``c/4 -> c/4``, 1x1 ``c/4 -> c``, as in ResNet), with and
  without its ReLUs and its shortcut.

Widths: the paper's ARM columns (G1 ``x1, x2, x4`` scale both channel counts; G3 and G4 name ``c``), moved to
the nearest width at which every row's FLOPs can match within 1% with whole channel counts divisible by the
groups. No BatchNorm (folded at inference) and no biases: the blocks measure convolutions and element-wise
operators only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm.relax.frontend import nn

from .layers import conv2d

__all__ = ["GuidelineNet", "TABLES", "PAPER", "networks", "fit_g1", "fit_g2", "fit_fragments", "TOLERANCE"]

TOLERANCE = 0.01  # largest relative FLOPs difference between rows of one table
_EACH = TOLERANCE / 2  # each row within half of it from the target: any two rows within TOLERANCE
BLOCKS = 10
SIZE = 56

# The paper's measurements: {guideline: {row: {"gpu": [x1, x2, x4], "arm": [x1, x2, x4]}}}; GPU in batches/s
# (batch 8), ARM in images/s (batch 1). Table 2's and 3's CPU columns are the ARM ones.
PAPER: dict[str, dict[str, dict[str, list[float]]]] = {
    "g1": {"1:1": {"gpu": [1480, 723, 232], "arm": [76.2, 21.7, 5.3]},
           "1:2": {"gpu": [1296, 586, 206], "arm": [72.9, 20.5, 5.1]},
           "1:6": {"gpu": [876, 489, 189], "arm": [69.1, 17.9, 4.6]},
           "1:12": {"gpu": [748, 392, 163], "arm": [57.6, 15.1, 4.4]}},
    "g2": {"g=1": {"gpu": [2451, 1289, 437], "arm": [40.0, 10.2, 2.3]},
           "g=2": {"gpu": [1725, 873, 341], "arm": [35.0, 9.5, 2.2]},
           "g=4": {"gpu": [1026, 644, 338], "arm": [32.9, 8.7, 2.1]},
           "g=8": {"gpu": [634, 445, 230], "arm": [27.8, 7.5, 1.8]}},
    "g3": {"1-fragment": {"gpu": [2446, 1274, 434], "arm": [40.2, 10.1, 2.3]},
           "2-fragment-series": {"gpu": [1790, 909, 336], "arm": [38.6, 10.1, 2.2]},
           "4-fragment-series": {"gpu": [752, 745, 349], "arm": [38.4, 10.1, 2.3]},
           "2-fragment-parallel": {"gpu": [1537, 803, 320], "arm": [33.4, 9.1, 2.2]},
           "4-fragment-parallel": {"gpu": [691, 572, 292], "arm": [35.0, 8.4, 2.1]}},
    "g4": {"relu, shortcut": {"gpu": [2427, 2066, 1436], "arm": [56.7, 16.9, 5.0]},
           "relu, no shortcut": {"gpu": [2647, 2256, 1735], "arm": [61.9, 18.8, 5.2]},
           "no relu, shortcut": {"gpu": [2672, 2121, 1458], "arm": [57.3, 18.2, 5.1]},
           "no relu, no shortcut": {"gpu": [2842, 2376, 1782], "arm": [66.3, 20.2, 5.4]}},
}
# The paper's channel counts per column (ARM; GPU in brackets in the docs): the widths we start the fit from.
PAPER_WIDTHS = {"g1": [32, 64, 128], "g2": [64, 128, 256], "g3": [64, 128, 256], "g4": [32, 64, 128]}
WIDTH_LABELS = {"g1": ["x1", "x2", "x4"], "g2": ["x1", "x2", "x4"], "g3": ["c=64", "c=128", "c=256"], "g4": ["c=32", "c=64", "c=128"]}
TABLES = {g: list(rows) for g, rows in PAPER.items()}


@dataclass(frozen=True)
class GuidelineNet:
    """One cell of a guideline table: a row's block at a column's width, stacked ``BLOCKS`` times.

    Attributes:
        guideline: ``g1`` .. ``g4``.
        config: the row (``"1:6"``, ``"g=4"``, ``"2-fragment-series"``, ``"relu, no shortcut"``).
        column: the column index (0, 1, 2) and ``width`` its label (``x2``, ``c=128``).
        channels: the block's channel counts (``c1``/``c2``, ``c``/``groups``, ``c``/``fragments``, ``c``/``mid``).
        input_channels: channels of the 56x56 input.
    """

    guideline: str
    config: str
    column: int
    width: str
    channels: dict[str, Any] = field(default_factory=dict)
    input_channels: int = 0

    @property
    def name(self) -> str:
        return f"{self.guideline}:{self.config}@{self.width}"

    def paper(self, platform: str) -> float:
        """The paper's speed for this cell: ``platform`` is ``gpu`` (batches/s) or ``arm`` (images/s)."""
        return PAPER[self.guideline][self.config][platform][self.column]

    def build(self) -> nn.Module:
        """The network as a ``relax.frontend.nn.Module``."""
        return _Stack([_block(self) for _ in range(BLOCKS)])

    def to_relax(self, batch: int = 1) -> tuple[tvm.IRModule, list[tuple[str, tuple[int, ...]]], tuple[int, ...]]:
        """``(mod with main(x, *params), [(param name, shape)], input shape)``."""
        shape = (batch, self.input_channels, SIZE, SIZE)
        mod, params = self.build().export_tvm({"forward": {"x": nn.spec.Tensor(list(shape), "float32")}})
        mod = tvm.IRModule({"main": mod["forward"].with_attr("global_symbol", "main")})
        return mod, [(n, tuple(int(d) for d in p.shape)) for n, p in params], shape


class _Stack(nn.ModuleList):
    def forward(self, x: nn.Tensor) -> nn.Tensor:  # pylint: disable=arguments-differ
        for block in self:
            x = block(x)
        return x


class _G1(nn.Module):
    def __init__(self, c1: int, c2: int):
        self.conv1 = conv2d(c1, c2, 1)
        self.conv2 = conv2d(c2, c1, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.conv2(self.conv1(x))


class _G2(nn.Module):
    def __init__(self, c: int, groups: int):
        self.conv1 = conv2d(c, c, 1, groups=groups)
        self.conv2 = conv2d(c, c, 1, groups=groups)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.conv2(self.conv1(x))


class _G3(nn.Module):
    def __init__(self, c: int, fragments: int, parallel: bool):
        self.parallel = parallel
        self.convs = nn.ModuleList([conv2d(c, c, 1) for _ in range(fragments)])

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        if not self.parallel:
            for conv in self.convs:
                x = conv(x)
            return x
        out = self.convs[0](x)
        for conv in list(self.convs)[1:]:
            out = nn.op.add(out, conv(x))
        return out


class _G4(nn.Module):
    def __init__(self, c: int, mid: int, relu: bool, shortcut: bool):
        self.relu, self.shortcut = relu, shortcut
        self.conv1 = conv2d(c, mid, 1)
        self.conv2 = conv2d(mid, mid, 3)
        self.conv3 = conv2d(mid, c, 1)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        act = nn.op.relu if self.relu else (lambda t: t)
        y = self.conv3(act(self.conv2(act(self.conv1(x)))))
        if self.shortcut:
            y = nn.op.add(y, x)
        return act(y)


def _block(net: GuidelineNet) -> nn.Module:
    ch = net.channels
    if net.guideline == "g1":
        return _G1(ch["c1"], ch["c2"])
    if net.guideline == "g2":
        return _G2(ch["c"], ch["groups"])
    if net.guideline == "g3":
        return _G3(ch["c"], ch["fragments"], ch["parallel"])
    return _G4(ch["c"], ch["mid"], ch["relu"], ch["shortcut"])


# --- channel counts at equal FLOPs -------------------------------------------------------------------------

def fit_g1(c: int, ratio: int) -> tuple[int, int]:
    """``(c1, c2)`` with ``c1 * c2`` within 0.5% of ``c * c`` and ``c2 / c1`` as close to ``ratio`` as that allows."""
    target = c * c
    best = None
    for c1 in range(1, c + 1):
        c2 = round(target / c1)
        if c2 < c1 or abs(c1 * c2 - target) > _EACH * target:
            continue
        key = (abs(math.log(c2 / c1 / ratio)), abs(c1 * c2 - target))
        best = min(best, (key, (c1, c2))) if best else (key, (c1, c2))
    assert best is not None  # c1 = c2 = c always fits
    return best[1]


def fit_g2(base: int, groups: tuple[int, ...] = (1, 2, 4, 8)) -> tuple[int, dict[int, int]]:
    """The width ``c0`` nearest ``base`` where every ``g`` has a ``c`` (divisible by g) with ``c^2/g`` within 0.5%
    of ``c0^2``; returns ``(c0, {g: c})``."""
    for c0 in sorted(range(max(8, base * 3 // 4), base * 5 // 4 + 1), key=lambda v: (abs(v - base), v)):
        target, widths = c0 * c0, {}
        for g in groups:
            c = g * round(c0 * math.sqrt(g) / g)
            if c > 0 and abs(c * c / g - target) <= _EACH * target:
                widths[g] = c
        if len(widths) == len(groups):
            return c0, widths
    raise ValueError(f"no width near {base} fits every group count within 0.5%")


def fit_fragments(base: int, counts: tuple[int, ...] = (1, 2, 4)) -> tuple[int, dict[int, int]]:
    """The width ``c0`` nearest ``base`` where ``n`` convolutions ``c -> c`` match one ``c0 -> c0`` within 0.5%."""
    for c0 in sorted(range(max(8, base * 3 // 4), base * 5 // 4 + 1), key=lambda v: (abs(v - base), v)):
        target, widths = c0 * c0, {}
        for n in counts:
            c = round(c0 / math.sqrt(n))
            if abs(n * c * c - target) <= _EACH * target:
                widths[n] = c
        if len(widths) == len(counts):
            return c0, widths
    raise ValueError(f"no width near {base} fits every fragment count within 0.5%")


def networks(guideline: str) -> list[GuidelineNet]:
    """Every cell of a guideline's table, row by row, each row at the table's three widths."""
    out = []
    for col, base in enumerate(PAPER_WIDTHS[guideline]):
        label = WIDTH_LABELS[guideline][col]
        if guideline == "g1":
            for row in TABLES["g1"]:
                c1, c2 = fit_g1(base, int(row.split(":")[1]))
                out.append(GuidelineNet("g1", row, col, label, {"c1": c1, "c2": c2}, c1))
        elif guideline == "g2":
            _, widths = fit_g2(base)
            for row in TABLES["g2"]:
                g = int(row.split("=")[1])
                out.append(GuidelineNet("g2", row, col, label, {"c": widths[g], "groups": g}, widths[g]))
        elif guideline == "g3":
            c0, widths = fit_fragments(base)
            label = f"c={c0}"
            for row in TABLES["g3"]:
                n = int(row.split("-")[0])
                out.append(GuidelineNet("g3", row, col, label, {"c": widths[n], "fragments": n, "parallel": row.endswith("parallel")}, widths[n]))
        elif guideline == "g4":
            for row in TABLES["g4"]:
                relu, shortcut = not row.startswith("no relu"), not row.endswith("no shortcut")
                out.append(GuidelineNet("g4", row, col, label, {"c": base, "mid": base // 4, "relu": relu, "shortcut": shortcut}, base))
        else:
            raise ValueError(f"unknown guideline {guideline!r}: g1, g2, g3 or g4")
    return sorted(out, key=lambda n: (TABLES[guideline].index(n.config), n.column))
