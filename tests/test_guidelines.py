"""The ShuffleNet V2 paper's guideline networks (Tables 1-4) and memory access cost, checked against the paper."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_shufflenet.counting import count
from tvm_shufflenet.models import guidelines as G


def _ops(mod) -> collections.Counter:
    ops = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            ops[expr.op.name] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return ops


@pytest.mark.parametrize("guideline", ["g1", "g2", "g3", "g4"])
def test_rows_of_a_table_have_equal_flops(guideline):
    """FLOPs counted from each graph (not from the fitting code) agree within 1% across a table's rows."""
    nets = G.networks(guideline)
    assert {n.config for n in nets} == set(G.TABLES[guideline]) and len(nets) == 3 * len(G.TABLES[guideline])
    for column in range(3):
        flops = [count(n.to_relax()[0]).macs for n in nets if n.column == column]
        assert (max(flops) - min(flops)) / max(flops) <= 0.01, (guideline, column, flops)
        if column:  # wider columns cost more
            narrower = [count(n.to_relax()[0]).macs for n in nets if n.column == column - 1]
            assert min(flops) > max(narrower)


def test_g1_channels_follow_the_ratios_and_flops_follow_the_paper_formula():
    for net in G.networks("g1"):
        c1, c2 = net.channels["c1"], net.channels["c2"]
        want = int(net.config.split(":")[1])
        assert 0.8 * want <= c2 / c1 <= 1.25 * want, net
        # B = hw c1 c2 per 1x1 conv, two per block, ten blocks
        assert count(net.to_relax()[0]).macs == 10 * 2 * 56 * 56 * c1 * c2


def test_g2_groups_and_g3_fragments_are_built_as_described():
    for net in G.networks("g2"):
        mod, params, shape = net.to_relax()
        assert _ops(mod)["relax.nn.conv2d"] == 20 and net.channels["c"] % net.channels["groups"] == 0
        assert all(s == (net.channels["c"], net.channels["c"] // net.channels["groups"], 1, 1) for _, s in params)
    for net in G.networks("g3"):
        mod, _, _ = net.to_relax()
        ops = _ops(mod)
        n = net.channels["fragments"]
        assert ops["relax.nn.conv2d"] == 10 * n
        assert ops.get("relax.add", 0) == (10 * (n - 1) if net.channels["parallel"] else 0)


def test_g4_variants_differ_only_in_relu_and_shortcut():
    cells = {(n.config, n.column): n for n in G.networks("g4")}
    full = _ops(cells[("relu, shortcut", 1)].to_relax()[0])
    assert full["relax.nn.conv2d"] == 30 and full["relax.nn.relu"] == 30 and full["relax.add"] == 10
    assert _ops(cells[("no relu, no shortcut", 1)].to_relax()[0]).keys() == {"relax.nn.conv2d"}
    assert len({count(n.to_relax()[0]).macs for n in cells.values() if n.column == 1}) == 1


def test_networks_keep_the_56x56_map_and_stack_ten_blocks():
    for guideline in ("g1", "g2", "g3", "g4"):
        net = G.networks(guideline)[0]
        mod, params, shape = net.to_relax(batch=2)
        assert shape == (2, net.input_channels, 56, 56)
        out = mod["main"].ret_ty
        assert tuple(int(d) for d in out.shape.values) == shape
        assert len({n.split(".")[0] for n, _ in params}) == 10  # parameters of ten blocks: "0.", ..., "9."


def test_mac_of_a_1x1_conv_is_the_papers_formula():
    """MAC = hw(c1 + c2) + c1 c2 (the paper's G1), counted from a graph with one convolution."""
    for c1, c2, hw in ((32, 64, 56), (9, 108, 28), (128, 128, 7)):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, c1, hw, hw), "float32"))
        w = relax.Var("w", relax.TensorType((c2, c1, 1, 1), "float32"))
        with bb.function("main", [x, w], attrs={"num_input": 1}):
            with bb.dataflow():
                y = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, w)))
            bb.emit_func_output(y)
        assert count(bb.get()).memory_access == hw * hw * (c1 + c2) + c1 * c2


def test_mac_ranks_g1_rows_as_the_paper_says():
    """At equal FLOPs, MAC grows as c1:c2 moves away from 1:1 (the lower bound of G1)."""
    for column in range(3):
        macs = [count(n.to_relax()[0]).memory_access for n in G.networks("g1") if n.column == column]
        assert macs == sorted(macs) and macs[0] < macs[-1]


def test_zoo_models_report_mac(capsys):
    import json

    from tvm_shufflenet.cli import main

    assert main(["list", "--json", "--family", "shufflenet_v2"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    # wider networks move more data; a 1x1 conv's share alone bounds it from below
    macs = [records[f"shufflenet_v2_x{w}"]["mac_m"] for w in ("0_5", "1_0", "1_5", "2_0")]
    assert macs == sorted(macs) and macs[0] > 1
    assert np.isfinite(macs).all()


def test_verdict_follows_the_paper_claim():
    from tvm_shufflenet.guidelines import verdict

    def rows(speeds):
        return [{"config": c, "width": "x1", "measured": v, "paper": G.PAPER["g1"][c]["arm"][0]} for c, v in speeds.items()]

    good = verdict("g1", rows({"1:1": 100, "1:2": 90, "1:6": 80, "1:12": 70}))
    assert good["holds"] is True and good["factor"] == [round(100 / 70, 3)] and good["paper_factor"] == [round(76.2 / 57.6, 3)]
    assert verdict("g1", rows({"1:1": 100, "1:2": 120, "1:6": 80, "1:12": 70}))["holds"] is False
    assert verdict("g1", rows({"1:1": 100, "1:2": 101, "1:6": 80, "1:12": 70}))["holds"] is True  # a 1% tie is noise
    assert verdict("g1", rows({"1:1": 100, "1:2": 90}))["holds"] is None  # not every row measured


def test_guidelines_end_to_end_on_the_host(tmp_path, capsys):
    from tvm_shufflenet.cli import main

    out, charts = tmp_path / "g.json", tmp_path / "charts"
    args = ["guidelines", "g4", "--widths", "1", "--repeat", "2", "--json", str(out), "--plot", str(charts),
            "--build-dir", str(tmp_path / "b")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "G4: without ReLU and shortcut fastest" in printed and "paper c=32" in printed
    result = json.loads(out.read_text())
    assert result["emulated"] is False and result["batch"] == 1
    rows = result["guidelines"]["g4"]["rows"]
    assert sorted(r["config"] for r in rows) == sorted(G.TABLES["g4"])
    for r in rows:
        assert r["measured"] > 0 and r["unit"] == "images/s" and r["paper"] == G.PAPER["g4"][r["config"]]["arm"][0]
        assert r["max_abs_err"] < 1e-3 and r["mflops"] > 30
    assert isinstance(result["guidelines"]["g4"]["holds"], bool)
    assert (charts / "g4.png").stat().st_size > 1000 and "## G4" in (charts / "index.md").read_text()
    before = out.read_text()
    assert main(args) == 0  # a rerun resumes: nothing measured again
    assert json.loads(out.read_text())["guidelines"]["g4"]["rows"] == json.loads(before)["guidelines"]["g4"]["rows"]


def test_a_wrong_output_is_a_failure_not_a_speed(tmp_path, monkeypatch, capsys):
    from tvm_shufflenet import guidelines as gl
    from tvm_shufflenet.cli import main

    monkeypatch.setattr(gl, "torch_reference", lambda net, w, x: np.zeros((1, net.input_channels, 56, 56), np.float32) + np.arange(56, dtype=np.float32))
    assert main(["guidelines", "g4", "--widths", "1", "--repeat", "1", "--build-dir", str(tmp_path / "b")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "differs from PyTorch" in err[0]


def test_flops_vs_speed_rank_correlation_and_wrong_pairs():
    from tvm_shufflenet.bench.report import flops_vs_speed

    rows = [{"model": m, "mflops": f, "median_ms": t} for m, f, t in
            (("a", 40, 2.0), ("b", 145, 5.0), ("c", 300, 6.0), ("d", 140, 9.0))]
    fs = flops_vs_speed(rows)
    # ranks: flops a<d<b<c, latency a<b<c<d -> rho = 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*(0+1+1+4)/60 = 0.4
    assert fs["spearman"] == 0.4
    assert {(p["fewer_flops"], p["but_slower_than"]) for p in fs["wrong_pairs"]} == {("d", "b"), ("d", "c")}
    assert flops_vs_speed(rows[:2])["spearman"] is None


def test_consecutive_pointwise_convs_leave_no_copy_between_them():
    """Two 1x1 convs in a row: the views around each kernel collapse (a fused reshape pair was a copy kernel)."""
    from tvm_shufflenet.compiler.lower import channel_blocking
    from tvm_shufflenet.compiler.pipeline import lower
    from tvm_shufflenet.targets import resolve

    for guideline in ("g1", "g2", "g3"):
        net = G.networks(guideline)[0]
        mod, params, _ = net.to_relax()
        bound = {v.name: tvm.runtime.tensor(np.ones(s, np.float32)) for v, (_, s) in zip(mod["main"].params[1:], params)}
        with channel_blocking(False):  # as `guidelines` builds them
            low = lower(relax.transform.BindParams("main", bound)(mod), resolve("host").tvm_target())
        calls = []

        def visit(expr, calls=calls):
            if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
                calls.append(expr.args[0].name_hint)

        relax.analysis.post_order_visit(low["main"].body, visit)
        copies = [c for c in calls if "reshape" in c]
        assert len(copies) == 2 and len(calls) == 2 + 10 * (2 if guideline != "g3" else 1), calls  # in, out, convs
