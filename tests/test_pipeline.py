"""The ShuffleNet-aware pipeline, pass by pass: structure before/after, and the whole model still equal to its
PyTorch reference (or ONNX Runtime for ONNX imports) after each pass."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import tvm
from tvm import relax
from tvm_shufflenet import models, reference
from tvm_shufflenet import weights as W
from tvm_shufflenet.build import load_source
from tvm_shufflenet.compiler.fold_batchnorm import fold_batchnorm
from tvm_shufflenet.compiler.fuse_conv import fuse_conv
from tvm_shufflenet.compiler.graph import op_name
from tvm_shufflenet.compiler.lower import apply_templates
from tvm_shufflenet.compiler.pipeline import compile_module, lower
from tvm_shufflenet.compiler.shuffle import fold_channel_shuffle
from tvm_shufflenet.profile import kernel_calls
from tvm_shufflenet.targets import resolve

from conftest import tolerance

HOST = resolve("host").tvm_target()
CHANNEL_OPS = {"relax.concat", "relax.split", "relax.strided_slice", "relax.permute_dims", "relax.reshape"}


def ops(mod) -> collections.Counter:
    found: collections.Counter = collections.Counter()
    relax.analysis.post_order_visit(mod["main"], lambda e: found.update([op_name(e)] if op_name(e) else []))
    return found


def run(mod, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, target=HOST)  # the stock lowering of whatever the pass left
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def pytorch(name: str, size: int, x: np.ndarray) -> np.ndarray:
    entry = models.get(name)
    module = reference.load_weights(reference.build(entry), W.seeded(entry.to_relax(input_size=size), 0))
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def snv2():
    """ShuffleNet V2 x0.5 at 64x64 after each graph pass, with its input and the PyTorch output."""
    src = load_source("shufflenet_v2_x0_5", input_size=64)
    base = relax.transform.FoldConstant()(relax.transform.CanonicalizeBindings()(src.mod))
    x = np.random.default_rng(0).standard_normal(src.input_shape).astype("float32")
    stages = {"base": base}
    stages["bn"] = fold_batchnorm(stages["base"])
    stages["fused"] = fuse_conv(stages["bn"])
    stages["shuffle"] = fold_channel_shuffle(stages["fused"])
    return stages, x, pytorch("shufflenet_v2_x0_5", 64, x)


def test_fold_batchnorm(snv2):
    stages, x, want = snv2
    before, after = ops(stages["base"]), ops(stages["bn"])
    assert before["relax.nn.batch_norm"] == before["relax.nn.conv2d"] == 56
    assert after["relax.nn.batch_norm"] == 0 and after["relax.nn.conv2d"] == 56
    assert np.abs(run(stages["bn"], x) - want).max() <= tolerance(want)


def test_fuse_conv(snv2):
    stages, x, want = snv2
    after = ops(stages["fused"])
    assert after["relax.nn.conv2d"] == 0 and after["relax.nn.relu"] == 0
    assert after["relax.call_tir"] == 56  # one kernel per conv, BN bias and ReLU inside
    assert after["relax.nn.max_pool2d"] == 0  # the first conv's pool runs in its kernel
    assert np.abs(run(stages["fused"], x) - want).max() <= tolerance(want)


def test_fold_channel_shuffle(snv2):
    stages, x, want = snv2
    before, after = ops(stages["fused"]), ops(stages["shuffle"])
    assert before["relax.concat"] == 16 and before["relax.permute_dims"] == 16
    assert not CHANNEL_OPS & set(after), after  # no concat, split, slice or shuffle left
    assert after["relax.call_tir"] == 56  # and no new kernels: the producers write the shuffled outputs
    assert np.abs(run(stages["shuffle"], x) - want).max() <= tolerance(want)


def test_shufflenet_v1_shuffle_vanishes_into_depthwise():
    src = load_source("shufflenet_v1_g3_x0_5", input_size=64)
    mod = fold_channel_shuffle(fuse_conv(fold_batchnorm(relax.transform.FoldConstant()(src.mod))))
    found = ops(mod)
    assert found["relax.permute_dims"] == 0 and found["relax.concat"] == 0 and found["relax.reshape"] == 0
    x = np.random.default_rng(0).standard_normal(src.input_shape).astype("float32")
    want = pytorch("shufflenet_v1_g3_x0_5", 64, x)
    assert np.abs(run(mod, x) - want).max() <= tolerance(want)


def test_apply_templates_multithreaded(snv2):
    stages, x, want = snv2
    lowered = apply_templates(stages["shuffle"], HOST)
    left = ops(lowered)
    assert not {"relax.nn.max_pool2d", "relax.mean", "relax.matmul", "relax.nn.conv2d"} & set(left)
    scheduled = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert scheduled and all("tvm_shufflenet.kernel" in f.attrs.keys() for f in scheduled)
    assert np.abs(run(lowered, x) - want).max() <= tolerance(want)  # 2 threads: tiles must not race


def test_onnx_shufflenet_compiles_like_the_zoo_one(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    entry = models.get("shufflenet_v2_x0_5")
    path = tmp_path / "snv2.onnx"
    reference.export_onnx(entry, W.seeded(entry.to_relax(input_size=64), 0), path, input_size=64)
    onnx_src = load_source(str(path))
    zoo_src = load_source("shufflenet_v2_x0_5", input_size=64)
    onnx_calls = kernel_calls(lower(onnx_src.mod, HOST))
    zoo_calls = kernel_calls(lower(zoo_src.mod, HOST))
    assert len(onnx_calls) == len(zoo_calls)
    assert not [c for c in onnx_calls if c.category == "data_movement"]
    x = np.random.default_rng(0).standard_normal(onnx_src.input_shape).astype("float32")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ex = compile_module(onnx_src.mod, HOST)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert np.abs(got - want).max() <= tolerance(want)


SHUFFLENETS = [n for n in models.names() if n.startswith("shufflenet_v2")] + ["shufflenet_v1_g3_x1_0"]


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_no_data_movement_kernels_at_224(name):
    """The issue's bar: ShuffleNet V2 (every width) and V1 g3 compile with no kernel that only moves channels."""
    calls = kernel_calls(lower(load_source(name).mod, HOST))
    moving = [c.name for c in calls if c.category == "data_movement"]
    assert not moving, moving


def test_kernel_count_30_percent_below_stock():
    mod = load_source("shufflenet_v2_x1_0").mod
    ours = kernel_calls(lower(mod, HOST, "shufflenet"))
    stock = kernel_calls(lower(mod, HOST, "stock"))
    assert len(ours) <= 0.7 * len(stock), (len(ours), len(stock))


def test_squeeze_excitation_convs_use_the_gemv_template():
    """1x1 convs on 1x1 maps (MobileNet V3's SE blocks) are matrix-vector products: the classifier's template."""
    calls = kernel_calls(lower(load_source("mobilenet_v3_small", input_size=64).mod, HOST))
    se = [c for c in calls if c.name.startswith("se_dense")]
    assert len(se) == 18  # 9 SE blocks, two 1x1 convs each
    assert not [c for c in calls if c.category == "dense_conv" and c.args[0][0][2:] == (1, 1)]


# lowering only (nothing runs), so both x86 families are checked on any machine
FAMILY_TARGETS = {"avx2": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"},
                  "avx512": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"}}


@pytest.mark.parametrize("isa", list(FAMILY_TARGETS))
@pytest.mark.parametrize("name", ["mobilenet_v1_1_0", "mobilenet_v2", "mobilenet_v3_small"])
def test_mobilenets_run_channel_blocked(name, isa):
    """MobileNets run NCHW{B}c from their first conv (which reads the NCHW image and writes NCHW{B}c) to the
    pool: no layout kernel, every conv blocked, SE scales folded into the conv after them (no multiply over a
    feature map); ShuffleNets have none (checked by test_no_data_movement_kernels_at_224). On AVX-512,
    MobileNet V1 (channels all multiples of 16) runs NCHW16c throughout; V2 and V3, whose early stages have 24
    or 40 channels, run NCHW8c there and NCHW16c after one re-blocking kernel."""
    target = tvm.target.Target(FAMILY_TARGETS[isa])
    calls = kernel_calls(lower(load_source(name, input_size=64).mod, target))
    layout = [c.name for c in calls if c.category == "data_movement"]
    assert calls[0].category == "dense_conv" and calls[0].name.endswith("c"), calls[0].name  # the stem, blocked
    blocks = [int(c.name.rsplit("_nchw", 1)[1][:-1]) for c in calls if "_nchw" in c.name and "conv" in c.name]
    if isa == "avx2" or name == "mobilenet_v1_1_0":
        assert not layout and set(blocks) == {16 if isa == "avx512" else 8}, (layout, set(blocks))
    else:  # the narrow block up to one cut, the wide one after it
        assert len(layout) == 1 and layout[0].startswith("nchw8c_to_nchw16c_"), layout
        cut = blocks.index(16)
        assert cut > 0 and set(blocks[:cut]) == {8} and set(blocks[cut:]) == {16}, blocks
    convs = [c for c in calls if c.category in ("pointwise_conv", "depthwise_conv")]
    assert convs and all("_nchw" in c.name for c in convs), [c.name for c in convs if "_nchw" not in c.name]
    scaled = [c.name for c in calls if "multiply" in c.name and c.args[-1][0][2:] != (1, 1) and len(c.args[-1][0]) == 4]
    assert not scaled, scaled


def test_reblocked_region_matches_pytorch(monkeypatch):
    """A region that changes its block size (NCHW8c, then NCHW16c after a re-blocking kernel: MobileNet V2 on
    AVX-512) computes what PyTorch does. Forced on any x86 CPU by offering 16- and 8-channel blocks (16-lane
    vectors are legal everywhere; LLVM splits them on AVX2)."""
    from tvm_shufflenet.schedules import conv2d

    monkeypatch.setattr(conv2d, "block_sizes", lambda fam: [16, 8])
    src = load_source("mobilenet_v2", input_size=64)
    lowered = lower(src.mod, HOST)
    assert any(c.name.startswith("nchw8c_to_nchw16c") for c in kernel_calls(lowered))
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype("float32")
    ex = compile_module(src.mod, HOST, "shufflenet")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = pytorch("mobilenet_v2", 64, x)
    assert np.abs(got - want).max() <= tolerance(want)


def test_stem_max_pool_fuses_and_its_output_is_never_placed():
    """A conv's max pool joins its kernel; a concat of that pooled map is written by the other producer (or kept),
    never by the pooled kernel, whose output is the pooled map as is."""
    rng = np.random.default_rng(3)
    w1, w2 = (rng.standard_normal((8, 3, 3, 3)).astype("float32") for _ in range(2))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 32, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), strides=2, padding=1)))
            a = bb.emit(relax.op.nn.max_pool2d(a, 3, 2, 1))
            b = bb.emit(relax.op.nn.conv2d(x, relax.const(w2), strides=4, padding=1))
            out = bb.emit_output(bb.emit(relax.op.concat([a, b], axis=1)))
        bb.emit_func_output(out)
    mod = bb.get()
    fused = fuse_conv(mod)
    assert ops(fused)["relax.nn.max_pool2d"] == 0
    xv = rng.standard_normal((1, 3, 32, 32)).astype("float32")
    t = torch.from_numpy(xv)
    ya = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(t, torch.from_numpy(w1), None, 2, 1)), 3, 2, 1)
    yb = torch.nn.functional.conv2d(t, torch.from_numpy(w2), None, 4, 1)
    want = torch.cat([ya, yb], 1).numpy()
    got = run(apply_templates(fold_channel_shuffle(fused), HOST), xv)
    assert np.abs(got - want).max() <= tolerance(want)


def _graph(name: str, size: int = 64):
    from tvm_shufflenet.compiler.pipeline import graph_passes

    return tvm.transform.Sequential(graph_passes())(load_source(name, input_size=size).mod)


def _couts(mod, bindings) -> list[int]:
    from tvm_shufflenet.compiler.fuse_conv import conv_call
    from tvm_shufflenet.compiler.graph import Graph

    g = Graph(mod["main"])
    return sorted(conv_call(mod, g.bindings[i].value).cout for i in bindings)


@pytest.mark.parametrize("name,want", [("mobilenet_v2", [24, 24]), ("mobilenet_v3_large", [24, 24, 40, 40, 40]),
                                       ("mobilenet_v3_small", [24, 24, 40, 40, 40]), ("shufflenet_v2_x1_0", []),
                                       ("shufflenet_v1_g3_x1_0", [])])
def test_pad_channels_pads_only_tensors_that_1x1_convs_read(name, want):
    """The block outputs of 24 and 40 channels (read by the next block's 1x1 expansion and its residual add) are
    padded to 32 and 48; expansions (read by depthwise convs) and ShuffleNets' branch convs (read by depthwise
    convs, or placed into a concat) are not: a depthwise conv would compute on the zero channels."""
    from tvm_shufflenet.compiler.pad_channels import padded_tensors

    assert _couts(_graph(name), padded_tensors(_graph(name), 16)) == want


def test_pad_channels_only_in_reduced_precision_on_two_block_isas():
    from tvm_shufflenet.compiler.pipeline import pad_multiple
    from tvm_shufflenet.precision import Precision

    bf16, fp16 = Precision("bf16", "bfloat16", "float32"), Precision("fp16", "float16", "float16")
    avx512, avx2 = (tvm.target.Target(FAMILY_TARGETS[k]) for k in ("avx512", "avx2"))
    assert pad_multiple(avx512, bf16) == 16
    assert pad_multiple(avx512, None) is None  # float32 keeps its kernels (and the shipped records' keys)
    assert pad_multiple(avx2, bf16) is None
    assert pad_multiple(resolve("rpi5").tvm_target(), fp16) is None
    calls = kernel_calls(lower(load_source("mobilenet_v2", input_size=64).mod, avx512, precision=bf16))  # lowering only
    assert not [c.name for c in calls if c.category == "data_movement"]
    assert {c.name.rsplit("_nchw", 1)[1] for c in calls if "_nchw" in c.name} == {"16c"}


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_padded_mobilenets_match_pytorch(name, monkeypatch):
    """Padded, MobileNet V2 runs 16-channel blocks from the stem to the pool (no 8-lane region, no re-blocking
    kernel), and both compute what PyTorch does (V3: hswish, SE and residuals on padded tensors). Forced in
    float32 on any x86 CPU (16- and 8-channel blocks offered, as on AVX-512; bf16 on AVX-512 BF16 pads so)."""
    from tvm_shufflenet.compiler import pipeline
    from tvm_shufflenet.schedules import conv2d

    monkeypatch.setattr(conv2d, "block_sizes", lambda fam: [16, 8])
    monkeypatch.setattr(pipeline, "pad_multiple", lambda target, precision: 16)
    src = load_source(name, input_size=64)
    calls = kernel_calls(lower(src.mod, HOST))
    blocks = {int(c.name.rsplit("_nchw", 1)[1][:-1]) for c in calls if "_nchw" in c.name and "conv" in c.name}
    if name == "mobilenet_v2":
        assert not [c.name for c in calls if c.category == "data_movement"] and blocks == {16}, blocks
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype("float32")
    got = relax.VirtualMachine(compile_module(src.mod, HOST), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = pytorch(name, 64, x)
    assert got.shape == want.shape and np.abs(got - want).max() <= tolerance(want)
