"""The zoo against the papers' tables and torchvision's published parameter counts."""

from __future__ import annotations

import pytest

from tvm_shufflenet import models
from tvm_shufflenet.counting import count

# Independent of this code: torchvision's model documentation (``num_params`` of each weights enum).
TORCHVISION_NUM_PARAMS = {
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
}

# The list of paper figures (MFLOPs, params in M), typed in from the papers, not from the code.
PAPER = {
    "shufflenet_v2_x0_5": (41, 1.4),
    "shufflenet_v2_x1_0": (146, 2.3),
    "shufflenet_v2_x1_5": (299, 3.5),
    "shufflenet_v2_x2_0": (591, 7.4),
    "shufflenet_v1_g1_x1_0": (143, None),
    "shufflenet_v1_g2_x1_0": (140, None),
    "shufflenet_v1_g3_x1_0": (137, None),
    "shufflenet_v1_g4_x1_0": (133, None),
    "shufflenet_v1_g8_x1_0": (137, None),
    "mobilenet_v1_1_0": (569, 4.2),
    "mobilenet_v1_0_75": (325, 2.6),
    "mobilenet_v1_0_5": (149, 1.3),
    "mobilenet_v1_0_25": (41, 0.5),
    "mobilenet_v2": (300, 3.4),
    "mobilenet_v3_large": (219, 5.4),
    "mobilenet_v3_small": (56, 2.5),
}

# The papers print parameters to 0.1M, so a count passes when it is within 2% or rounds to the printed figure
# (ShuffleNet V2 0.5x has 1.367M, printed 1.4M; MobileNet V1 0.25 has 0.470M, printed 0.5M). MobileNet V2 does
# neither: the network of the paper's own Table 2 has 3.505M parameters (torchvision; TF-slim lists 3.47M),
# the paper prints 3.4M. Its exact count is held against torchvision below; the paper check is a strict xfail.
_MOBILENET_V2_PAPER = "MobileNet V2's paper prints 3.4M; its Table 2 network has 3.505M (torchvision 3,504,872)"


def test_zoo_has_the_35_models():
    names = models.names()
    assert len(names) == 35 and len(set(names)) == 35
    assert sum(n.startswith("shufflenet_v1_g") for n in names) == 20
    for n in ["shufflenet_v2_x0_5", "shufflenet_v2_x2_0", "shufflenet_v1_g8_x0_5", "mobilenet_v1_0_25", "mobilenet_v2_1_4", "mobilenet_v3_small"]:
        assert n in names


@pytest.mark.parametrize("name", sorted(PAPER))
def test_multiply_adds_match_paper(name):
    c = count(models.get(name).to_relax().mod)
    assert c.mflops == pytest.approx(PAPER[name][0], rel=0.02)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=_MOBILENET_V2_PAPER)) if n == "mobilenet_v2" else n
        for n in sorted(n for n, (_, p) in PAPER.items() if p is not None)
    ],
)
def test_params_match_paper(name):
    params_m = count(models.get(name).to_relax().mod).params_m
    paper = PAPER[name][1]
    assert params_m == pytest.approx(paper, rel=0.02) or round(params_m, 1) == paper


@pytest.mark.parametrize("name", sorted(TORCHVISION_NUM_PARAMS))
def test_params_equal_torchvision_exactly(name):
    assert count(models.get(name).to_relax().mod).params == TORCHVISION_NUM_PARAMS[name]


def test_shufflenet_v1_table1_channels():
    # Table 1 of the ShuffleNet V1 paper, Stage 2/3/4 output channels for g = 1, 2, 3, 4, 8 at 1x.
    table = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
    for g, channels in table.items():
        cfg = models.get(f"shufflenet_v1_g{g}_x1_0").config
        assert cfg.groups == g and cfg.stage_out_channels == channels and cfg.stem_channels == 24


def test_shufflenet_v1_first_pointwise_is_not_grouped():
    mod = models.get("shufflenet_v1_g3_x1_0").to_relax().mod
    groups = []

    def visit(e):
        import tvm

        if hasattr(e, "op") and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.nn.conv2d":
            groups.append(int(e.attrs.groups))

    from tvm import relax

    relax.analysis.post_order_visit(mod["main"].body, visit)
    # stem conv (1), Stage 2 unit 1: pointwise (1, not 3), depthwise (60), pointwise (3); later units start grouped.
    assert groups[:4] == [1, 1, 60, 3]
    assert groups[4] == 3


def test_complexity_scales_with_resolution_and_classes():
    e = models.get("mobilenet_v1_1_0")
    full, double = count(e.to_relax().mod), count(e.to_relax(input_size=448).mod)
    fc = 1024 * 1000  # the classifier's cost does not depend on the resolution; every conv's is quadratic in it
    assert double.macs - fc == 4 * (full.macs - fc)
    assert count(e.to_relax(num_classes=10).mod).params == full.params - 1024 * 990 - 990


def test_batch_is_per_image_in_counts():
    e = models.get("shufflenet_v2_x0_5")
    assert count(e.to_relax(batch=4, input_size=96).mod).macs == count(e.to_relax(input_size=96).mod).macs


def test_unknown_model_suggests_names():
    with pytest.raises(models.UnknownModelError, match="did you mean .*shufflenet_v2_x1_0"):
        models.get("shufflenet_v2_x1")
