"""Schedule templates, kernel by kernel, against PyTorch; knobs, families and tuning records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tvm
from tvm_shufflenet.schedules import conv2d, dense, pool
from tvm_shufflenet.schedules.conv2d import ChannelMap, ConvSpec, Passthrough, Placement
from tvm_shufflenet.schedules.knobs import DefaultDecider, FixedDecider, SampledDecider, family_of
from tvm_shufflenet.targets import resolve

HOST = resolve("host").tvm_target()
ACTS = {None: lambda v: v, "relu": torch.relu, "relu6": lambda v: v.clamp(0, 6), "hswish": torch.nn.functional.hardswish}


def torch_conv(spec: ConvSpec, x, w, b, res, passes):
    flat = spec.kind == "pointwise"
    xin = torch.from_numpy(x).reshape(spec.n, spec.cin_src, spec.h, spec.w)
    xin = xin[:, (spec.in_map or ChannelMap.identity(spec.cin)).table(spec.cin)]
    wt = torch.from_numpy(w)  # OIHW
    y = torch.nn.functional.conv2d(xin, wt, torch.from_numpy(b[: spec.cout]), spec.stride, spec.pad[0], 1, spec.groups)
    y = ACTS[spec.act](y)
    if res is not None:
        y = y + torch.from_numpy(res).reshape(y.shape)
    y = ACTS[spec.post_act](y)
    pl = spec.placement
    if pl:
        out = torch.zeros(spec.n, pl.total, *y.shape[2:])
        out[:, pl.offset :: pl.stride][:, : spec.cout] = y
        for pt, src in zip(pl.passthrough, passes):
            s = torch.from_numpy(src).reshape(spec.n, pt.channels, *y.shape[2:])
            out[:, pt.offset :: pt.stride][:, : pt.length] = s[:, pt.map.table(pt.length)]
        y = ACTS[pl.act](out)
    if spec.pool:
        y = torch.nn.functional.max_pool2d(y, spec.pool, spec.pool_stride, spec.pool_pad[0])
    return y.numpy().reshape(spec.n, spec.out_channels, -1) if flat else y.numpy()


def run_conv(spec: ConvSpec, target=HOST, decider=None):
    func, cpad, knobs = conv2d.kernel(spec, target, decider or DefaultDecider())
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(0)
    flat = spec.kind == "pointwise"
    sp = (spec.h * spec.w,) if flat else (spec.h, spec.w)
    osp = (spec.h * spec.w,) if flat else (spec.oh, spec.ow)
    x = rng.standard_normal((spec.n, spec.cin_src, *sp)).astype("float32")
    w = rng.standard_normal((spec.cout, spec.cin // spec.groups, spec.kh, spec.kw)).astype("float32")  # OIHW
    b = rng.standard_normal(cpad).astype("float32")
    res = rng.standard_normal((spec.n, spec.cout, *osp)).astype("float32") if spec.residual else None
    passes = [rng.standard_normal((spec.n, p.channels, *osp)).astype("float32")
              for p in (spec.placement.passthrough if spec.placement else ())]
    args = [x, conv2d.pack_weight(spec, w, cpad, family_of(target)), b] + ([res] if res is not None else []) + passes
    out_sp = (spec.out_h, spec.out_w)
    out = tvm.runtime.tensor(np.zeros(conv2d.out_shape(spec) if flat else (spec.n, spec.out_channels, *out_sp), "float32"))
    lib(*[tvm.runtime.tensor(a) for a in args], out)
    want = torch_conv(spec, x, w, b, res, passes)
    return out.numpy().reshape(want.shape), want, knobs


SHUFFLE_PLACEMENT = Placement(116, 2, 1, (Passthrough(2, 0, 58, 116, ChannelMap(58, 1, 0, 0)),))
CASES = {
    "pointwise 58->58 28x28 relu": ConvSpec(1, 58, 58, 28, 28, 58, 1, 1, act="relu"),
    "pointwise reading a slice (split)": ConvSpec(1, 116, 232, 14, 14, 116, 1, 1, act="relu", in_map=ChannelMap(116, 1, 0, 116)),
    "pointwise writing shuffled + passthrough": ConvSpec(1, 58, 58, 28, 28, 58, 1, 1, act="relu", placement=SHUFFLE_PLACEMENT),
    "pointwise 7x7 (ragged vectors)": ConvSpec(1, 232, 232, 7, 7, 232, 1, 1, act="relu"),
    "pointwise group conv (V1, g=3)": ConvSpec(1, 240, 240, 28, 28, 60, 1, 1, groups=3, act="relu"),
    "pointwise group conv of whole-vector groups, reading a shuffle (V1, g=3)": ConvSpec(
        1, 60, 60, 14, 14, 240, 1, 1, groups=3, act="relu", in_map=ChannelMap(3, 20, 1, 0)),
    "pointwise residual + relu": ConvSpec(1, 64, 64, 14, 14, 64, 1, 1, residual=True, post_act="relu"),
    "pointwise hswish": ConvSpec(1, 40, 40, 14, 14, 120, 1, 1, act="hswish"),
    "depthwise 3x3 s1": ConvSpec(1, 58, 58, 28, 28, 58, 3, 3, 1, (1, 1, 1, 1), 58),
    "depthwise 3x3 s2": ConvSpec(1, 58, 58, 56, 56, 58, 3, 3, 2, (1, 1, 1, 1), 58),
    "depthwise reading a shuffle (V1)": ConvSpec(1, 60, 60, 28, 28, 60, 3, 3, 1, (1, 1, 1, 1), 60, in_map=ChannelMap(3, 20, 1, 0)),
    "depthwise 5x5 s2 hswish": ConvSpec(1, 16, 16, 14, 14, 16, 5, 5, 2, (2, 2, 2, 2), 16, act="hswish"),
    "first conv 3x3 s2": ConvSpec(1, 3, 3, 224, 224, 24, 3, 3, 2, (1, 1, 1, 1), act="relu"),
    "first conv 3x3 s2, 16 channels, hswish": ConvSpec(1, 3, 3, 64, 64, 16, 3, 3, 2, (1, 1, 1, 1), act="hswish"),
    "first conv + max pool 3x3 s2 (ShuffleNet's stem)": ConvSpec(1, 3, 3, 64, 64, 24, 3, 3, 2, (1, 1, 1, 1), act="relu",
                                                                pool=3, pool_stride=2, pool_pad=(1, 1, 1, 1)),
    "first conv + max pool, odd map (29 -> 15), no activation": ConvSpec(1, 3, 3, 58, 58, 16, 3, 3, 2, (1, 1, 1, 1),
                                                                        pool=3, pool_stride=2, pool_pad=(1, 1, 1, 1)),
    "dense 3x3 s1 + residual (G4's bottleneck)": ConvSpec(1, 32, 32, 14, 14, 40, 3, 3, 1, (1, 1, 1, 1), act="relu",
                                                         residual=True),
    "group dense 3x3 (g=2, columns)": ConvSpec(1, 16, 16, 14, 14, 24, 3, 3, 1, (1, 1, 1, 1), groups=2, act="relu"),
    "concat + relu (V1 stride 2)": ConvSpec(1, 60, 60, 14, 14, 60, 1, 1, placement=Placement(
        120, 1, 60, (Passthrough(1, 0, 60, 60, ChannelMap(60, 1, 0, 0)),), act="relu")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_template_matches_pytorch(case):
    got, want, knobs = run_conv(CASES[case])
    assert np.abs(got - want).max() <= 1e-4 * np.ptp(want), knobs


def test_group_convs_of_whole_vectors_take_channel_vectors():
    """Each group's 80 output channels are whole vectors: channel tiles inside one group, every tile shape."""
    spec = CASES["pointwise group conv of whole-vector groups, reading a shuffle (V1, g=3)"]
    assert conv2d.default_variant(spec, family_of(HOST)) == "channels"
    # 20 per group: whole 4-lane vectors, so the kernel narrows its vectors to 4 lanes and keeps the variant
    narrow = CASES["pointwise group conv (V1, g=3)"]
    assert conv2d.kernel_family(narrow, family_of(HOST)).vector_lanes == 4
    assert conv2d.default_variant(narrow, conv2d.kernel_family(narrow, family_of(HOST))) == "channels"
    assert conv2d.default_variant(narrow.with_(cout=63), family_of(HOST)) == "pixels"  # 21 per group: no vectors
    for cv in [d for d in (1, 2, 3, 4) if (80 // family_of(HOST).vector_lanes) % d == 0]:
        values = {"pw.axis": "channels", "pw.c_vectors": cv, "pw.k_block": 20, "pw.pixels": [7, 7, 4]}
        got, want, knobs = run_conv(spec, decider=FixedDecider(values))
        assert knobs["pw.axis"] == "channels" and knobs["pw.c_vectors"] == cv
        assert np.abs(got - want).max() <= 1e-4 * np.ptp(want), knobs


# shuffled outputs: two interleaved parts (ShuffleNet V2), reading a shuffled passthrough; three stacked parts
PLACED = {
    "interleaved, shuffled passthrough": ConvSpec(1, 58, 58, 14, 14, 58, 1, 1, act="relu", placement=Placement(
        116, 2, 0, (Passthrough(2, 1, 58, 116, ChannelMap(2, 58, 1, 0)),))),
    "stacked, three parts, relu after": ConvSpec(1, 24, 24, 14, 14, 20, 1, 1, placement=Placement(
        60, 1, 20, (Passthrough(1, 0, 20, 40, ChannelMap(20, 1, 0, 20)), Passthrough(1, 40, 20, 20, ChannelMap(20))),
        act="relu")),
}


@pytest.mark.parametrize("case", list(PLACED))
@pytest.mark.parametrize("values", [{}, {"pw.axis": "pixels", "pw.co_tile": 2, "pw.p_split": [49, 4]},
                                    {"pw.axis": "channels", "pw.c_vectors": 1, "pw.k_block": 4, "pw.pixels": [2, 14, 7]}])
def test_tiled_placements_match_pytorch(case, values):
    """A placed output whose parts tile it (interleaved or stacked) is written per task, part by part, as an
    (N, rows, parts, HW) or (N, parts, rows, HW) view of the same memory."""
    spec = PLACED[case]
    assert conv2d.tiled_placement(spec) == (("interleaved", 2) if "interleaved" in case else ("stacked", 3))
    got, want, knobs = run_conv(spec, decider=FixedDecider(dict(values)))
    assert np.abs(got - want).max() <= 1e-4 * np.ptp(want), knobs
    assert conv2d.tiled_placement(spec.with_(placement=Placement(116, 2, 0, (Passthrough(2, 1, 57, 116, ChannelMap(57)),)))) is None


@pytest.mark.parametrize("values", [
    {"pw.axis": "pixels", "pw.co_tile": 1, "pw.p_split": [98, 8]},
    {"pw.axis": "pixels", "pw.co_tile": 4, "pw.p_split": [7, 112]},  # past 4 vectors: the default split
    {"pw.axis": "pixels", "pw.co_tile": 16, "pw.p_split": [28, 28]},
    {"pw.axis": "channels", "pw.c_vectors": 1, "pw.k_block": 29, "pw.pixels": [4, 28, 7]},
    {"pw.axis": "channels", "pw.c_vectors": 2, "pw.k_block": 58, "pw.pixels": [1, 49, 16]},
    {"pw.axis": "channels", "pw.c_vectors": 4, "pw.k_block": 58, "pw.pixels": [49, 2, 8]},
])
def test_pointwise_knob_values_are_correct(values):
    """Every variant and tile of the pointwise template computes the same conv; invalid values fall back."""
    spec = ConvSpec(1, 58, 58, 28, 28, 60, 1, 1, act="relu")  # 60 rows: padded to whole vectors
    got, want, knobs = run_conv(spec, decider=FixedDecider(dict(values)))
    assert knobs["pw.axis"] == values["pw.axis"]
    for name, v in values.items():
        if name != "pw.p_split" or v[-1] <= 4 * family_of(HOST).vector_lanes:
            assert knobs[name] == v, name
    assert np.abs(got - want).max() <= 1e-4 * np.ptp(want)


@pytest.mark.parametrize("values", [
    {"dense.c_vectors": 1, "dense.cols": 16, "dense.pool_rows": 1},
    {"dense.c_vectors": 3, "dense.cols": 4, "dense.pool_rows": 16},  # one task per channel tile
    {"dense.c_vectors": 1, "dense.cols": 8, "dense.pool_rows": 4},
])
def test_fused_stem_pool_knob_values_are_correct(values):
    """Every row tile of the stem with its max pool (the rows shared by two tasks computed by both) matches."""
    spec = CASES["first conv + max pool 3x3 s2 (ShuffleNet's stem)"]
    fam = conv2d.kernel_family(spec, family_of(HOST))
    values = {**values, "dense.c_vectors": min(values["dense.c_vectors"], 24 // fam.vector_lanes)}
    got, want, knobs = run_conv(spec, decider=FixedDecider({"dense.axis": "channels", **values}))
    assert knobs["dense.pool_rows"] == values["dense.pool_rows"]
    assert np.abs(got - want).max() <= 1e-4 * np.ptp(want), knobs


def test_channel_map_fit():
    assert ChannelMap.fit(list(range(58, 116))) == ChannelMap(58, 1, 0, 58)
    shuffle = [(c % 3) * 20 + c // 3 for c in range(60)]
    assert ChannelMap.fit(shuffle).table(60) == shuffle
    assert ChannelMap.fit([0, 2, 1, 5, 3, 4]) is None  # no (c % m) * a + (c // m) * b + o form


def test_pool_and_dense_templates():
    x = np.random.default_rng(1).standard_normal((1, 24, 112, 112)).astype("float32")
    for spec, ref in [
        (pool.PoolSpec("max", 1, 24, 112, 112, 3, 3, 2, (1, 1, 1, 1)), lambda t: torch.nn.functional.max_pool2d(t, 3, 2, 1)),
        (pool.PoolSpec("avg", 1, 24, 112, 112, 3, 3, 2, (1, 1, 1, 1)), lambda t: torch.nn.functional.avg_pool2d(t, 3, 2, 1)),
        (pool.PoolSpec("global_avg", 1, 24, 112, 112), lambda t: t.mean((2, 3))),
    ]:
        func, _ = pool.kernel(spec, HOST, DefaultDecider())
        lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
        out = tvm.runtime.tensor(np.zeros(spec.out_shape, "float32"))
        lib(tvm.runtime.tensor(x), out)
        want = ref(torch.from_numpy(x)).numpy()
        assert np.abs(out.numpy() - want).max() <= 1e-5, spec.kind
    spec = dense.DenseSpec(1, 1024, 1000)
    func, mp, _ = dense.kernel(spec, HOST, DefaultDecider())
    rng = np.random.default_rng(2)
    xv, w, b = rng.standard_normal((1, 1024)).astype("float32"), rng.standard_normal((1024, 1000)).astype("float32"), rng.standard_normal(1000).astype("float32")
    wp, bp = dense.pack_weight(w, spec, HOST), np.zeros(mp, "float32")
    bp[:1000] = b
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    out = tvm.runtime.tensor(np.zeros((1, 1000), "float32"))
    lib(tvm.runtime.tensor(xv), tvm.runtime.tensor(wp), tvm.runtime.tensor(bp), out)
    want = xv @ w + b
    assert np.abs(out.numpy() - want).max() <= 1e-4 * np.ptp(want)


@pytest.mark.parametrize("target,family,lanes", [
    ("host", None, None), ("x86_64-linux-gnu", "x86", 4), ("rpi4", "arm-neon64", 4), ("rpi4-32", "arm-neon32", 4), ("cuda", "cuda", 1)])
def test_families_and_every_template_builds(target, family, lanes):
    """Every template instantiates and compiles for each family (ARM and CUDA are compiled here, not run)."""
    tgt = resolve(target).tvm_target()
    fam = family_of(tgt)
    if family:
        assert (fam.name, fam.vector_lanes) == (family, lanes)
    for spec in (CASES["pointwise writing shuffled + passthrough"], CASES["depthwise 3x3 s2"], CASES["first conv 3x3 s2"],
                 CASES["first conv + max pool 3x3 s2 (ShuffleNet's stem)"]):
        func, _, knobs = conv2d.kernel(spec, tgt, DefaultDecider())
        assert knobs and tvm.compile(tvm.IRModule({"main": func}), target=tgt) is not None


@pytest.mark.parametrize("case", ["pointwise 58->58 28x28 relu", "interleaved, shuffled passthrough",
                                  "first conv + max pool 3x3 s2 (ShuffleNet's stem)"])
def test_knobs_are_searchable(case):
    """Under a tuner every knob is a sampled decision (a random variable), and the schedule still builds."""
    from tvm.s_tir import Schedule

    spec = {**CASES, **PLACED}[case]
    func, _ = conv2d.workload(spec, HOST)
    for variant in conv2d.variants(spec, family_of(HOST)):
        sch = Schedule(func, seed=7)
        decider = SampledDecider(sch, variant)
        conv2d.schedule(sch, spec, HOST, decider)
        kinds = [i.kind.name for i in sch.trace.insts]
        assert {"SampleCategorical", "SamplePerfectTile"} & set(kinds), variant
        assert [name for name, _, _ in decider.order] and tvm.compile(sch.mod, target=HOST) is not None
    for knob in [*conv2d.KNOBS.values(), *pool.KNOBS.values(), *dense.KNOBS.values()]:
        assert knob.name and knob.kind in ("variant", "choice", "tile") and knob.doc


def test_tuning_log_is_applied(tmp_path, monkeypatch):
    """A record in tuning_logs/<target key>.json changes the kernel it names, and the library says which log."""
    from tvm_shufflenet.build import build, load_source
    from tvm_shufflenet.compiler.graph import Graph
    from tvm_shufflenet.compiler.pipeline import lower
    from tvm_shufflenet.runtime import load

    spec = resolve("host")
    src = load_source("shufflenet_v2_x0_5", input_size=64)
    lowered = lower(src.mod, spec.tvm_target())
    kernels = {str(f.attrs["tvm_shufflenet.kernel"]): json.loads(str(f.attrs["tvm_shufflenet.knobs"]))
               for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc) and "tvm_shufflenet.kernel" in f.attrs.keys()}
    key = next(k for k, v in kernels.items() if k.startswith("conv2d:") and v.get("pw.axis") == "channels"
               and 4 <= json.loads(k.split(":", 1)[1])["cin"] <= 256)
    kspec = json.loads(key.split(":", 1)[1])
    monkeypatch.setenv("TVM_SHUFFLENET_TUNING_LOGS", str(tmp_path))
    record_knobs = {"pw.axis": "channels", "pw.c_vectors": 1, "pw.k_block": kspec["cin"],
                    "pw.pixels": [kspec["h"] * kspec["w"], 1, 1]}
    assert record_knobs != kernels[key]

    def lowered_knobs(records):
        from tvm_shufflenet.compiler.tuning import decider_factory

        tuned = lower(src.mod, spec.tvm_target(), decide=decider_factory({"kernels": {key: records}}))
        return {str(f.attrs["tvm_shufflenet.kernel"]): json.loads(str(f.attrs["tvm_shufflenet.knobs"]))
                for f in tuned.functions.values() if isinstance(f, tvm.tirx.PrimFunc) and "tvm_shufflenet.kernel" in f.attrs.keys()}

    assert lowered_knobs(record_knobs)[key] == record_knobs
    # a record of an older template (a knob it lacks) is not half-applied: the defaults instead
    assert lowered_knobs({"pw.axis": "channels", "pw.c_vectors": 1, "pw.p_tile": 4})[key] == kernels[key]
    (tmp_path / f"{spec.key}.json").write_text(json.dumps({"target_key": spec.key, "kernels": {key: record_knobs}}))
    lib = tmp_path / "tuned.so"
    record = build("shufflenet_v2_x0_5", "host", lib, input_size=64)
    assert record["tuning_log"]["file"] == f"{spec.key}.json" and record["tuning_log"]["how"] == "exact"
    model = load(lib)
    assert model(np.zeros((1, 3, 64, 64), "float32")).shape == (1, 1000)
    del Graph


BLOCKED = {
    "NCHW{B}c pointwise, hswish": ConvSpec(1, 24, 24, 14, 14, 40, 1, 1, act="hswish"),
    "NCHW{B}c pointwise, residual": ConvSpec(1, 48, 48, 7, 7, 16, 1, 1, residual=True),
    "NCHW{B}c pointwise, SE-scaled input, batch 2": ConvSpec(2, 32, 32, 14, 14, 24, 1, 1, in_scale=True),
    "NCHW{B}c depthwise 3x3 s1 relu6": ConvSpec(1, 32, 32, 28, 28, 32, 3, 3, 1, (1, 1, 1, 1), 32, act="relu6"),
    "NCHW{B}c depthwise 3x3 s2": ConvSpec(1, 16, 16, 28, 28, 16, 3, 3, 2, (1, 1, 1, 1), 16, act="relu"),
    "NCHW{B}c depthwise 5x5 s2 hswish": ConvSpec(1, 48, 48, 14, 14, 48, 5, 5, 2, (2, 2, 2, 2), 48, act="hswish"),
    "NCHW{B}c stem (NCHW image in) 3x3 s2 relu6": ConvSpec(1, 3, 3, 56, 56, 32, 3, 3, 2, (1, 1, 1, 1), act="relu6"),
}


def _blocked(a: np.ndarray, b: int) -> np.ndarray:
    n, c, *sp = a.shape
    return np.ascontiguousarray(np.moveaxis(a.reshape(n, c // b, b, *sp), 2, -1))


@pytest.mark.parametrize("case", list(BLOCKED))
@pytest.mark.parametrize("values", [{}, {"pw.c_vectors": 1, "pw.k_block": "B", "pw.pixels": "7 per tile", "dw.cols": 1,
                                        "dense.c_vectors": 2, "dense.cols": 4}])
@pytest.mark.parametrize("size", ["narrowest", "widest"])
def test_blocked_kernels_match_pytorch(case, values, size):
    """NCHW{B}c kernels (MobileNets' convs) against PyTorch on NCHW tensors, blocked here by numpy, for each block
    size of this CPU (AVX-512: 16 and 8) that divides the case's channels."""
    fam = family_of(HOST)
    fits = [b for b in conv2d.block_sizes(fam) if conv2d.blockable(BLOCKED[case].with_(in_scale=False), fam, b)]
    assert fits, "every case has channels of whole 8-lane blocks"
    b = fits[-1] if size == "narrowest" else fits[0]
    if size == "widest" and len(fits) == 1:
        pytest.skip(f"{b} is the only block size for these channels on {fam.name}")
    spec = BLOCKED[case].with_(block=b)
    if "pw.pixels" in values:  # every map here is a multiple of 7 pixels
        values = {**values, "pw.pixels": [spec.h * spec.w // 7, 1, 7], "pw.k_block": b}
    func, _, knobs = conv2d.kernel(spec, HOST, FixedDecider(dict(values)))
    lib = tvm.compile(tvm.IRModule({"main": func}), target=HOST)
    rng = np.random.default_rng(1)
    pw, stem = spec.kind == "pointwise", spec.kind == "dense"
    x = rng.standard_normal((spec.n, spec.cin, spec.h, spec.w)).astype("float32")
    w = rng.standard_normal((spec.cout, spec.cin // spec.groups, spec.kh, spec.kw)).astype("float32")
    bias = rng.standard_normal(spec.cout).astype("float32")
    gate = rng.random((spec.n, spec.cin)).astype("float32") if spec.in_scale else None
    want = torch.nn.functional.conv2d(torch.from_numpy(x if gate is None else x * gate[:, :, None, None]),
                                      torch.from_numpy(w), torch.from_numpy(bias), spec.stride, spec.pad[0], 1,
                                      spec.groups)
    want = ACTS[spec.act](want).numpy()
    res = rng.standard_normal(want.shape).astype("float32") if spec.residual else None
    if res is not None:
        want = want + res
    flat = (lambda a: a.reshape(a.shape[0], a.shape[1], -1, b)) if pw else (lambda a: a)
    wk = conv2d.pack_weight(spec, w, spec.cout, fam)
    args = [x if stem else flat(_blocked(x, b)), wk, bias] + ([flat(_blocked(res, b))] if res is not None else [])
    args += [gate] if gate is not None else []
    out = tvm.runtime.tensor(np.zeros(flat(_blocked(want, b)).shape, "float32"))
    lib(*[tvm.runtime.tensor(a) for a in args], out)
    got = out.numpy().reshape(_blocked(want, b).shape)
    assert np.abs(got - _blocked(want, b)).max() <= 1e-4 * np.ptp(want), knobs
    for name, v in values.items():
        if name in knobs and name not in ("dw.cols", "dense.c_vectors"):  # the case's candidates may lack them
            assert knobs[name] == v, name
