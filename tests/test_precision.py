"""Reduced precision: which targets offer it, the bf16 dot-product kernel, whole networks in bf16 against
PyTorch in bf16 and f32, and fp16 libraries on an emulated ARMv8.2-A board against the host's f32 build."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from tvm_shufflenet import precision as P
from tvm_shufflenet.targets import _cpu_flags, resolve


HAS_BF16 = "avx512_bf16" in _cpu_flags()
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AVX-512 BF16")
HAS_AMX = "amx_bf16" in _cpu_flags()
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX bf16 tiles")


def _dot_target():
    """The host without its AMX tiles (if it has them): the target on which bf16 1x1 convs use vdpbf16ps."""
    import tvm

    t = dict(resolve("host").target)
    t["mattr"] = [a for a in t.get("mattr", []) if "amx" not in a]
    return tvm.target.Target(t)


@pytest.mark.parametrize("name,ok", [("rpi5", True), ("rk3588", True), ("jetson-orin-cpu", True), ("rpi4", False),
                                     ("rpi4-32", False), ("rpi3", False), ("aarch64-linux-gnu", False), ("cuda", True)])
def test_fp16_only_where_the_board_has_armv82_or_cuda(name, ok):
    spec = resolve(name)
    assert ("fp16" in P.supported(spec)) is ok
    if ok:
        prec, built = P.for_target("fp16", spec)
        assert prec.storage == "float16"
        if spec.device == "cpu":  # half arithmetic on the CPU: LLVM needs the feature to emit it
            assert "+fullfp16" in built.target["mattr"] and prec.acc == "float16"
        else:
            assert prec.acc == "float32"
    else:
        with pytest.raises(P.PrecisionError, match="fp16") as err:
            P.for_target("fp16", spec)
        assert "\n" not in str(err.value) and "ARMv8.2" in str(err.value)


def test_bf16_needs_an_avx512_bf16_cpu():
    assert "bf16" in P.supported(resolve('{"kind": "llvm", "mcpu": "znver4"}'))
    assert "bf16" in P.supported(resolve('{"kind": "llvm", "mcpu": "sapphirerapids"}'))
    for name in ("x86_64-linux-gnu", '{"kind": "llvm", "mcpu": "znver3"}', "rpi5", "cuda"):
        with pytest.raises(P.PrecisionError, match="AVX-512 BF16"):
            P.for_target("bf16", resolve(name))
    assert ("bf16" in P.supported(resolve("host"))) is HAS_BF16
    with pytest.raises(P.PrecisionError, match="unknown precision"):
        P.for_target("int8", resolve("host"))


def test_float32_kernels_keep_their_record_keys():
    """The kernels of today find the host's shipped log's records (the Zen 4 log was made before reduced precision
    added spec fields: a float32 spec that stopped naming its dtype once left every float32 record unmatched)."""
    from tvm_shufflenet.compiler.tuning import Records, float32_twin, log_path
    from tvm_shufflenet.precision import for_target
    from tvm_shufflenet.schedules.conv2d import ConvSpec
    from tvm_shufflenet.targets import resolve
    from tvm_shufflenet.tuning.tasks import extract_tasks

    target = resolve("host")
    if not log_path(target.key).exists():  # a family's log serves other CPUs, but their kernels may differ
        pytest.skip(f"no log shipped for {target.key}: its kernels are another CPU's")
    log = json.loads(log_path(target.key).read_text())
    shipped = {**log["measured"], **log["kernels"]}  # measured: every kernel its export timed, tuned or not
    tasks = extract_tasks(["shufflenet_v2_x1_0", "mobilenet_v2"], target, include_fallback=False)
    found = [t.key in shipped for t in tasks]
    assert sum(found) >= 0.9 * len(found), [t.key for t, f in zip(tasks, found) if not f][:3]
    bf = extract_tasks(["mobilenet_v2"], target, include_fallback=False,
                       precision=for_target("bf16", target)[0]) if HAS_BF16 else []
    twins = [t.key in shipped or f"{t.template}:{float32_twin(t.key.split(':', 1)[1])}" in shipped for t in bf]
    assert sum(twins) >= 0.9 * len(twins), [t.key for t, f in zip(bf, twins) if not f][:3]
    # a bf16 kernel without a record of its own takes its float32 twin's knobs
    f32 = ConvSpec(1, 32, 32, 14, 14, 64, 1, 1)
    bf16 = f32.with_(dtype="bfloat16")
    assert json.loads(bf16.to_json())["dtype"] == "bfloat16" and ConvSpec.from_json(bf16.to_json()) == bf16
    records = Records({"kernels": {f"conv2d:{f32.to_json()}": {"pw.c_vectors": 2}}})
    assert type(records("conv2d", bf16.to_json())).__name__ == "FixedDecider"
    assert type(records("conv2d", ConvSpec(1, 32, 32, 7, 7, 64, 1, 1).to_json())).__name__ == "DefaultDecider"


@needs_bf16
@pytest.mark.parametrize("block,knobs", [(16, {}), (16, {"pw.c_vectors": 1, "pw.k_block": 16}),
                                         (16, {"pw.c_vectors": 3, "pw.k_block": 32}), (8, {}), (8, {"pw.c_vectors": 2, "pw.k_block": 8})])
def test_bf16_dot_kernel_against_numpy(block, knobs):
    """The vdpbf16ps micro-kernel: products of bf16 pairs summed in f32, exactly what numpy computes on the
    bf16-rounded operands (to f32 rounding), with bias and ReLU; the instruction is in the code."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import DefaultDecider, FixedDecider, family_of

    target = _dot_target()
    cin, cout, hw = 96, 48, 7
    spec = conv2d.ConvSpec(1, cin, cin, hw, hw, cout, 1, 1, act="relu", dtype="bfloat16", block=block)
    assert conv2d.bf16_dot(spec, conv2d.kernel_family(spec, family_of(target)))
    decider = FixedDecider({"pw.axis": "channels", **knobs}) if knobs else DefaultDecider()
    made = conv2d.kernel(spec, target, decider)
    ex = tvm.compile(tvm.IRModule({"main": made[0]}), target=target)
    assert ex.mod.inspect_source("asm").count("vdpbf16ps") > 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, cin, hw * hw)).astype(ml_dtypes.bfloat16)
    w = (0.1 * rng.standard_normal((cout, cin, 1, 1))).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(cout).astype("float32")
    xb = np.ascontiguousarray(x.reshape(1, cin // block, block, hw * hw).transpose(0, 1, 3, 2))
    out = tvm.runtime.tensor(np.zeros((1, cout // block, hw * hw, block), ml_dtypes.bfloat16))
    ex(tvm.runtime.tensor(xb), tvm.runtime.tensor(conv2d.pack_weight(spec, w, cout, family_of(target))),
       tvm.runtime.tensor(b), out)
    got = out.numpy().astype("float32").transpose(0, 1, 3, 2).reshape(1, cout, -1)
    want = np.maximum(np.einsum("oi,nip->nop", w[:, :, 0, 0].astype("float32"), x.astype("float32")) + b[None, :, None], 0)
    # the only difference: the output's rounding to bf16 (8 bits of mantissa)
    assert np.abs(got - want).max() <= 2 ** -8 * np.abs(want).max() + 1e-6


@needs_bf16
@pytest.mark.parametrize("block", [16, 8])
def test_bf16_dot_gated_kernel_against_numpy(block):
    """An SE-gated NCHW{B}c 1x1 conv (MobileNet V3's projection after squeeze-and-excitation): the gate applied
    to the input in the kernel, then the dot products."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import DefaultDecider, family_of

    target = _dot_target()
    fam = family_of(target)
    cin, cout, hw = 96, 48, 7
    spec = conv2d.ConvSpec(1, cin, cin, hw, hw, cout, 1, 1, dtype="bfloat16", block=block, in_scale=True)
    assert conv2d.bf16_dot(spec, conv2d.kernel_family(spec, fam))
    func = conv2d.kernel(spec, target, DefaultDecider())[0]
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    assert ex.mod.inspect_source("asm").count("vdpbf16ps") > 0
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, cin, hw * hw)).astype(ml_dtypes.bfloat16)
    gate = rng.uniform(0, 1, (1, cin)).astype(ml_dtypes.bfloat16)
    w = (0.1 * rng.standard_normal((cout, cin, 1, 1))).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(cout).astype("float32")
    xb = np.ascontiguousarray(x.reshape(1, cin // block, block, hw * hw).transpose(0, 1, 3, 2))
    out = tvm.runtime.tensor(np.zeros((1, cout // block, hw * hw, block), ml_dtypes.bfloat16))
    ex(tvm.runtime.tensor(xb), tvm.runtime.tensor(conv2d.pack_weight(spec, w, cout, fam)), tvm.runtime.tensor(b),
       tvm.runtime.tensor(gate), out)
    got = out.numpy().astype("float32").transpose(0, 1, 3, 2).reshape(1, cout, -1)
    gated = (x.astype("float32") * gate.astype("float32")[:, :, None]).astype(ml_dtypes.bfloat16).astype("float32")
    want = np.einsum("oi,nip->nop", w[:, :, 0, 0].astype("float32"), gated) + b[None, :, None]
    assert np.abs(got - want).max() <= 2 ** -8 * np.abs(want).max() + 1e-5


@needs_bf16
@pytest.mark.parametrize("block", [16, 8])
@pytest.mark.parametrize("kind", ["pointwise", "depthwise", "depthwise s2", "stem"])
def test_bf16_blocked_stores_round_with_one_instruction(kind, block):
    """NCHW{B}c kernels round their bf16 outputs with ``vcvtneps2bf16`` (not TVM's six-op integer rounding: no
    ``vpsrld`` left in the code) and still compute what numpy does on the bf16 operands: the float32 result
    rounded to nearest even, so at most half a bf16 step off the float32 reference (a truncating conversion is
    a whole step off on about half the outputs)."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import DefaultDecider, family_of

    target = _dot_target()
    fam = family_of(target)
    c, hw = 32, 14
    spec = {"pointwise": conv2d.ConvSpec(1, c, c, hw, hw, c, 1, 1, act="relu6"),
            "depthwise": conv2d.ConvSpec(1, c, c, hw, hw, c, 3, 3, 1, (1, 1, 1, 1), c, act="relu6"),
            "depthwise s2": conv2d.ConvSpec(1, c, c, hw, hw, c, 3, 3, 2, (1, 1, 1, 1), c),
            "stem": conv2d.ConvSpec(1, 3, 3, hw, hw, c, 3, 3, 2, (1, 1, 1, 1), act="relu6",
                                    in_dtype="float32")}[kind].with_(dtype="bfloat16", block=block)
    func = conv2d.kernel(spec, target, DefaultDecider())[0]
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    asm = ex.mod.inspect_source("asm")
    assert "vcvtneps2bf16" in asm and "vpsrld" not in asm
    rng = np.random.default_rng(3)
    stored = "float32" if kind == "stem" else ml_dtypes.bfloat16
    x = rng.standard_normal((1, spec.cin, hw, hw)).astype(stored)
    w = (0.3 * rng.standard_normal((c, spec.cin // spec.groups, spec.kh, spec.kw))).astype(
        ml_dtypes.bfloat16 if kind == "pointwise" else "float32")
    b = rng.standard_normal(c).astype("float32")
    want = torch_conv(x.astype("float32"), w.astype("float32"), b, spec)
    want = np.minimum(np.maximum(want, 0), 6) if spec.act == "relu6" else want
    blocked = lambda a: np.ascontiguousarray(np.moveaxis(a.reshape(a.shape[0], -1, block, *a.shape[2:]), 2, -1))
    flat = (lambda a: a.reshape(a.shape[0], a.shape[1], -1, block)) if kind == "pointwise" else (lambda a: a)
    out = tvm.runtime.tensor(np.zeros(flat(blocked(want)).shape, ml_dtypes.bfloat16))
    ex(tvm.runtime.tensor(x if kind == "stem" else flat(blocked(x))),
       tvm.runtime.tensor(conv2d.pack_weight(spec, w, c, fam)), tvm.runtime.tensor(b), out)
    got = out.numpy().astype("float32").reshape(blocked(want).shape)
    step = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(blocked(want)), 1e-30))) - 7)  # one bf16 step at each value
    assert (np.abs(got - blocked(want)) <= 0.5 * step + 1e-4 * np.abs(want).max()).all()


def torch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, spec) -> np.ndarray:
    import torch

    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), spec.stride,
                                      spec.pad[0], 1, spec.groups).numpy()


@needs_bf16
@pytest.mark.parametrize("cin,cout,hw,shuffled,groups,knobs", [
    (58, 58, 14, True, 1, {}), (116, 116, 7, False, 1, {}), (24, 40, 9, False, 1, {}), (96, 96, 14, False, 3, {}),
    # the pixel-vector form (maps of whole 16-pixel vectors): defaults, a shuffled read with padded rows, and
    # tiles of a few rows by several vectors inside a group of 40 rows (ShuffleNet V1 g3's 28x28 convs)
    (60, 240, 28, False, 3, {}), (58, 58, 28, True, 1, {"pw.axis": "pixels"}),
    (24, 60, 56, False, 1, {"pw.axis": "pixels", "pw.co_tile": 4, "pw.p_split": [7, 7, 4]}),
    (120, 120, 28, False, 3, {"pw.axis": "pixels", "pw.co_tile": 5, "pw.p_split": [1, 49, 1]}),
    (60, 240, 28, False, 3, {"pw.axis": "channels"})])
def test_bf16_dot_nchw_kernel_against_numpy(cin, cout, hw, shuffled, groups, knobs):
    """The NCHW form (ShuffleNet's 1x1 convs): input rows paired in the kernel, read through a channel map (the
    second half of a shuffled 2*cin tensor) when ``shuffled``; padded output rows never stored; a group conv
    (ShuffleNet V1 g3) pairs each group's rows. Channel vectors (``channels``), or on maps of whole 16-pixel
    vectors pixel vectors (``pixels``, their default there)."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import DefaultDecider, FixedDecider, family_of

    target = _dot_target()
    fam = family_of(target)
    in_map = conv2d.ChannelMap(cin, 2, 0, 1) if shuffled else None  # channel c reads source channel 2c + 1
    src = 2 * cin if shuffled else cin
    spec = conv2d.ConvSpec(1, cin, src, hw, hw, cout, 1, 1, groups=groups, act="relu", in_map=in_map, dtype="bfloat16")
    assert conv2d.bf16_dot(spec, conv2d.kernel_family(spec, fam))
    func, cpad, made = conv2d.kernel(spec, target, FixedDecider(knobs) if knobs else DefaultDecider())
    assert made["pw.axis"] == knobs.get("pw.axis", "pixels" if hw * hw % 16 == 0 else "channels")
    assert all(made[k] == v for k, v in knobs.items())
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    asm = ex.mod.inspect_source("asm")
    assert asm.count("vdpbf16ps") > 0
    if made["pw.axis"] == "pixels":  # accumulators are rows of pixels: stored as they are, no gather
        assert "vgather" not in asm
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, src, hw * hw)).astype(ml_dtypes.bfloat16)
    w = (0.1 * rng.standard_normal((cout, cin // groups, 1, 1))).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(cout).astype("float32")
    out = tvm.runtime.tensor(np.zeros((1, cout, hw * hw), ml_dtypes.bfloat16))
    ex(tvm.runtime.tensor(x), tvm.runtime.tensor(conv2d.pack_weight(spec, w, cpad, fam)),
       tvm.runtime.tensor(conv2d.pad_rows(b, cpad)), out)
    xs = x.astype("float32")[:, 1::2] if shuffled else x.astype("float32")
    cin_g, cout_g = cin // groups, cout // groups
    want = np.concatenate([np.einsum("oi,nip->nop", w[g * cout_g:(g + 1) * cout_g, :, 0, 0].astype("float32"),
                                     xs[:, g * cin_g:(g + 1) * cin_g]) for g in range(groups)], axis=1)
    want = np.maximum(want + b[None, :, None], 0)
    assert np.abs(out.numpy().astype("float32") - want).max() <= 2 ** -8 * np.abs(want).max() + 1e-6


def _amx_case(layout: str, cin: int, cout: int, hw: int, shuffled: bool = False, groups: int = 1):
    """A bf16 1x1 conv of ``layout`` (``blocked``: NCHW16c, ``blocked8``: NCHW8c, ``nchw``) and numpy's answer
    on the bf16 operands."""
    import ml_dtypes

    from tvm_shufflenet.schedules import conv2d

    block = {"blocked": 16, "blocked8": 8}.get(layout, 0)
    in_map = conv2d.ChannelMap(cin, 2, 0, 1) if shuffled else None
    src = 2 * cin if shuffled else cin
    spec = conv2d.ConvSpec(1, cin, src, hw, hw, cout, 1, 1, groups=groups, act="relu", in_map=in_map,
                           dtype="bfloat16", block=block)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, src, hw * hw)).astype(ml_dtypes.bfloat16)
    w = (0.1 * rng.standard_normal((cout, cin // groups, 1, 1))).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(cout).astype("float32")
    xs = x.astype("float32")[:, 1::2] if shuffled else x.astype("float32")
    cin_g, cout_g = cin // groups, cout // groups
    want = np.concatenate([np.einsum("oi,nip->nop", w[g * cout_g:(g + 1) * cout_g, :, 0, 0].astype("float32"),
                                     xs[:, g * cin_g:(g + 1) * cin_g]) for g in range(groups)], axis=1)
    want = np.maximum(want + b[None, :, None], 0)
    return spec, x, w, b, want


SAPPHIRE_RAPIDS = '{"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"}'


@pytest.mark.parametrize("layout,cin,cout,hw,variants", [
    ("blocked", 144, 32, 56, ["amx2x2", "amx1x2", "amx2x1", "amx1x1"]),
    ("blocked", 96, 48, 14, ["amx2x1", "amx1x3", "amx1x1"]),  # 14 rows a tile: 196 = 14 x 14
    ("nchw", 58, 58, 28, ["amx2x1", "amx1x1"]),  # 58 input channels: two 32-channel steps, the rest zero
    ("nchw", 232, 464, 7, ["amx2x1", "amx3x1", "amx1x1"])])
def test_amx_kernels_on_an_amx_target(layout, cin, cout, hw, variants):
    """On a CPU with AMX tiles a bf16 1x1 conv offers the tile variants only (each a design space), and its code is
    tile multiplies after a tile configuration; a CPU without them keeps vdpbf16ps. Compiled, not run: any x86
    machine checks this."""
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import DefaultDecider, family_of

    spec = _amx_case(layout, cin, cout, hw)[0]
    target = resolve(SAPPHIRE_RAPIDS).tvm_target()
    fam = conv2d.kernel_family(spec, family_of(target))
    assert fam.amx and conv2d.variants(spec, fam) == variants
    asm = tvm.compile(tvm.IRModule({"main": conv2d.kernel(spec, target, DefaultDecider())[0]}),
                      target=target).mod.inspect_source("asm")
    assert asm.count("tdpbf16ps") > 0 and "ldtilecfg" in asm and "vdpbf16ps" not in asm
    assert "memset" not in asm  # the reduction's init is a no-op: the tiles start at zero
    znver4 = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})
    assert not family_of(znver4).amx and "channels" in conv2d.variants(spec, conv2d.kernel_family(spec, family_of(znver4)))


@needs_amx
@pytest.mark.parametrize("layout,cin,cout,hw,shuffled,groups,variant", [
    ("blocked", 144, 32, 56, False, 1, "amx2x2"), ("blocked", 96, 48, 14, False, 1, "amx1x3"),
    ("blocked", 160, 96, 7, False, 1, "amx1x2"), ("blocked8", 40, 120, 28, False, 1, "amx2x1"),
    ("blocked8", 184, 72, 14, False, 1, "amx1x1"), ("nchw", 58, 58, 28, True, 1, "amx2x1"),
    ("nchw", 116, 116, 14, True, 1, "amx2x2"), ("nchw", 232, 464, 7, False, 1, "amx3x1"),
    ("nchw", 24, 40, 9, False, 1, "amx1x1"), ("nchw", 240, 60, 28, True, 3, "amx2x1"),
    ("nchw", 120, 480, 14, False, 3, "amx2x2"),
    ("nchw", 1088, 1024, 7, False, 1, "amx2x1c4")])  # 2.2 MB of weight: a quarter of the channels a task
def test_amx_kernel_against_numpy(layout, cin, cout, hw, shuffled, groups, variant):
    """The AMX tile kernels on this CPU: the conv of bf16 operands summed in f32, as numpy sums them, up to the
    output's rounding to bf16. Blocked kernels pad pixels to whole tile pairs and channels to whole tiles (NCHW8c:
    72 -> 80); an NCHW kernel reads through a channel map (the shuffle), pads its 32-channel steps with zeros and
    never stores rows past Cout; a group conv (ShuffleNet V1 g3's 20-channel groups: tiles of 10 rows) pairs each
    group's input."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.schedules import conv2d
    from tvm_shufflenet.schedules.knobs import FixedDecider, family_of

    target = resolve("host").tvm_target()
    spec, x, w, b, want = _amx_case(layout, cin, cout, hw, shuffled, groups)
    fam = family_of(target)
    func, cpad, knobs = conv2d.kernel(spec, target, FixedDecider({"pw.axis": variant}))
    assert knobs["pw.axis"] == variant
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    wt = tvm.runtime.tensor(conv2d.pack_weight(spec, w, cpad, fam))
    if spec.block:
        bl = spec.block
        xb = np.ascontiguousarray(x.reshape(1, cin // bl, bl, hw * hw).transpose(0, 1, 3, 2))
        out = tvm.runtime.tensor(np.zeros((1, cout // bl, hw * hw, bl), ml_dtypes.bfloat16))
        ex(tvm.runtime.tensor(xb), wt, tvm.runtime.tensor(b), out)
        got = out.numpy().astype("float32").transpose(0, 1, 3, 2).reshape(1, cout, -1)
    else:
        out = tvm.runtime.tensor(np.zeros((1, cout, hw * hw), ml_dtypes.bfloat16))
        ex(tvm.runtime.tensor(x), wt, tvm.runtime.tensor(conv2d.pad_rows(b, cpad)), out)
        got = out.numpy().astype("float32")
    assert np.abs(got - want).max() <= 2 ** -8 * np.abs(want).max() + 1e-6


@needs_bf16
@pytest.mark.parametrize("model", ["shufflenet_v2_x0_5", "mobilenet_v2", "mobilenet_v3_small"])
def test_bf16_network_against_pytorch(model):
    """A bf16 build against PyTorch running the same network in bf16 and in f32: float32 in and out, its error
    within the bf16 error PyTorch itself makes (2x, plus rounding), top-1 as PyTorch f32 on most inputs."""
    import tvm
    from tvm import relax

    from tvm_shufflenet.benchmarks.precision import torch_outputs
    from tvm_shufflenet import models
    from tvm_shufflenet import weights as weights_mod
    from tvm_shufflenet.build import compile_source, load_source

    size = 64
    src = load_source(model, input_size=size)
    ex = compile_source(src, resolve("host"), precision="bf16")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 3, size, size)).astype("float32") for _ in range(3)]
    outs = [vm["main"](tvm.runtime.tensor(x)).numpy() for x in xs]
    assert all(o.dtype == np.float32 for o in outs)
    w = weights_mod.seeded(models.get(model).to_relax(input_size=size), 0)
    ref = torch_outputs(model, w, xs, "float32")
    same = torch_outputs(model, w, xs, "bfloat16")
    for o, r, s in zip(outs, ref, same):
        span = float(np.ptp(r))
        err, torch_err = np.abs(o - r).max() / span, np.abs(s - r).max() / span
        assert err < 3e-2 and err <= 2 * torch_err + 4e-3, (err, torch_err)
        assert np.abs(o - s).max() / span < 4e-2


@pytest.mark.parametrize("features", ["float32", "bfloat16"])
def test_bf16_classifier_reads_float16_weights_and_writes_float32_logits(features):
    """The classifier of a bf16 network: float32 features (the global pool writes them unrounded; bf16 ones from
    a hidden layer), float16 weights, float32 logits (against numpy on the same rounded operands), and the pass
    gives the pool and the classifier those types."""
    import ml_dtypes
    import tvm

    from tvm_shufflenet.build import load_source
    from tvm_shufflenet.compiler.pipeline import lower
    from tvm_shufflenet.schedules import DefaultDecider
    from tvm_shufflenet.schedules import dense

    host = resolve("host").tvm_target()
    spec = dense.DenseSpec(1, 256, 100, dtype=features, out_dtype="" if features == "float32" else "float32",
                           weight_dtype="float16")
    func, mp, _ = dense.kernel(spec, host, DefaultDecider())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 256)).astype(ml_dtypes.bfloat16 if features == "bfloat16" else np.float32)
    w = (rng.standard_normal((256, 100)) * 0.05).astype(np.float16)
    b = rng.standard_normal(mp).astype("float32")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=host)
    out = tvm.runtime.tensor(np.zeros((1, 100), "float32"))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(dense.pack_weight(w, spec, host)), tvm.runtime.tensor(b), out)
    want = x.astype(np.float64) @ w.astype(np.float64) + b[:100]
    assert out.numpy().dtype == np.float32
    assert np.abs(out.numpy() - want).max() <= 1e-5 * np.ptp(want)  # bf16 logits would be ~4e-3 off
    src = load_source("shufflenet_v2_x0_5", input_size=64)
    text = lower(src.mod, host, precision=P.Precision("bf16", "bfloat16", "float32")).script(show_meta=False)
    assert '\\"weight_dtype\\": \\"float16\\"' in text
    # the pool before it writes float32 (one kernel: no cast after it), the classifier reads float32 features
    pool = next(line for line in text.splitlines() if "def global_avg_pool" in line)
    assert '"bfloat16"), out: T.Buffer((1, 1024), "float32")' in pool
    assert "astype" not in text.split("def main")[-1]


def test_fp16_aarch64_library_uses_half_arithmetic(tmp_path):
    """An fp16 rpi5 library computes with 8-lane half-precision NEON FMAs (``fmla v.8h``), its metadata says fp16."""
    if not shutil.which("aarch64-linux-gnu-gcc"):
        pytest.skip("no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu)")
    from tvm_shufflenet.build import build
    from tvm_shufflenet.elf import read_metadata

    lib = tmp_path / "m.so"
    record = build("mobilenet_v3_small", "rpi5", lib, input_size=64, precision="fp16")
    assert record["precision"] == "fp16" and record["compute_dtype"] == "float16"
    assert "+fullfp16" in record["target"]["target"]["mattr"]
    assert read_metadata(lib)[1]["precision"] == "fp16"
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:
        dis = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
        assert ".8h" in dis and "fmla" in dis


def test_cli_refuses_a_precision_the_target_lacks(tmp_path):
    from tvm_shufflenet.cli import main

    for target, precision in (("rpi4", "fp16"), ("rpi5", "bf16")):
        assert main(["compile", "shufflenet_v2_x0_5", "-t", target, "--precision", precision, "-o", str(tmp_path / "x.so")]) == 2
    assert not (tmp_path / "x.so").exists()


FP16_MODELS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "mobilenet_v2",
               "mobilenet_v3_large", "mobilenet_v3_small"]


@pytest.mark.board
@pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="qemu-user-static is not installed")
@pytest.mark.skipif(not shutil.which("aarch64-linux-gnu-gcc"), reason="no aarch64 cross compiler")
def test_fp16_libraries_on_an_emulated_armv82_board(tmp_path):
    """fp16 rpi5 libraries of every ShuffleNet V2 width and MobileNet V2/V3 run on an emulated Cortex-A76 and
    match the host's f32 build within 1e-2 of its output range (64x64 inputs: machinery and numerics; qemu
    timings mean nothing)."""
    import socket

    from tvm_shufflenet.build import build
    from tvm_shufflenet.rpc import emulate
    from tvm_shufflenet.rpc.board import BoardAddress, connect, release, run_outputs
    from tvm_shufflenet.runtime import load

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = f"test-a76-{port}"
    emulate.start(key, tracker=None, port=port, cpu="cortex-a76")
    try:
        session = connect(BoardAddress.parse(rpc=f"127.0.0.1:{port}"))
        x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype("float32")
        for model in FP16_MODELS:
            host_lib, arm_lib = tmp_path / f"{model}_f32.so", tmp_path / f"{model}_fp16.so"
            build(model, "host", host_lib, input_size=64)
            build(model, "rpi5", arm_lib, input_size=64, precision="fp16")
            want = load(host_lib)(x)
            got = run_outputs(session, arm_lib, [x])[0]
            assert got.dtype == np.float32
            assert np.abs(got - want).max() <= 1e-2 * float(np.ptp(want)), model
        release(session)
    finally:
        emulate.stop(key)


@needs_bf16
def test_bench_checks_a_bf16_library_against_the_f32_build(tmp_path):
    """`bench --precision bf16`: the library is bf16, its output check is against the f32 build (a reduced
    tolerance), and the record says which precision it measured."""
    from tvm_shufflenet.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "mobilenet_v3_small", "--precision", "bf16", "--input-size", "64", "--repeat", "3",
                 "--build-dir", str(tmp_path / "b"), "-o", str(out)]) == 0
    (rec,) = json.loads(out.read_text())  # a JSON array of records
    assert rec["precision"] == "bf16" and rec["output_check"] == "pass"
    assert 1e-5 < rec["output_max_abs_err"]  # compared with the f32 build, not with itself


def test_amx_intrinsics_registered_from_a_database_text():
    """A tuning database's traces name the AMX intrinsics they tensorize with, and MetaSchedule parses them when it
    opens the database, before any template has registered one: every name in the records is registered first
    (a resumed `tune` once failed with "TensorIntrin ... is not registered")."""
    from tvm.s_tir import TensorIntrin

    from tvm_shufflenet.schedules import amx

    geos = [amx.Geometry("nchw", 10, 14, 32, 2, 1, 2, r=6, c=1, rpg=3),
            amx.Geometry("blocked8", 16, 16, 32, 1, 2, 3, c=4)]
    text = '[["0", ["sch.tensorize(\\"' + geos[0].name + '\\")"]], "' + geos[1].name + '", "' + geos[0].name + '"]'
    assert amx.register_named(text) == 2
    for geo in geos:
        assert TensorIntrin.get(geo.name) is not None
