"""Tuning: templates as MetaSchedule spaces, traces read back as knobs, logs found and applied, resumable runs.

The short tunes here are machinery checks on small inputs (few trials: the timings mean nothing); the outputs
are always checked against PyTorch or the untuned kernel, never against numbers the tuner produced.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import tvm
from tvm.s_tir import Schedule
from tvm_shufflenet import models, reference
from tvm_shufflenet import weights as weights_mod
from tvm_shufflenet.cli import main
from tvm_shufflenet.compiler.tuning import find_log
from tvm_shufflenet.errors import UserError
from tvm_shufflenet.schedules import FixedDecider, SampledDecider, template
from tvm_shufflenet.schedules.conv2d import ConvSpec
from tvm_shufflenet.targets import resolve
from tvm_shufflenet.tuning.space import KnobMutator, trace_knobs
from tvm_shufflenet.tuning.tasks import extract_tasks

HOST = resolve("host")
SPECS = {
    "pointwise 14x14": ConvSpec(1, 116, 116, 14, 14, 116, 1, 1, act="relu"),
    "depthwise": ConvSpec(1, 58, 58, 28, 28, 58, 3, 3, 1, (1, 1, 1, 1), 58),
    "first conv": ConvSpec(1, 3, 3, 32, 32, 24, 3, 3, 2, (1, 1, 1, 1), act="relu"),
}


@pytest.mark.parametrize("case", list(SPECS))
def test_a_sampled_trace_reads_back_as_the_same_schedule(case):
    """Random design-space samples, decoded to knob values, rebuild exactly the schedule that was sampled."""
    tpl, spec = template("conv2d"), SPECS[case]
    target = HOST.tvm_target()
    for seed in range(4):
        for variant in tpl.variants(spec, target):
            sch = Schedule(tpl.workload(spec, target), seed=seed + 1)
            tpl.schedule(sch, spec, target, SampledDecider(sch, variant))
            knobs = trace_knobs(sch.trace, "conv2d", spec.to_json(), target)
            again = Schedule(tpl.workload(spec, target))
            tpl.schedule(again, spec, target, FixedDecider(knobs))
            tvm.ir.assert_structural_equal(sch.mod["main"], again.mod["main"])


def test_knob_mutator_moves_one_categorical_decision():
    spec = SPECS["pointwise 14x14"]
    tpl, target = template("conv2d"), HOST.tvm_target()
    sch = Schedule(tpl.workload(spec, target), seed=2)
    tpl.schedule(sch, spec, target, SampledDecider(sch, "channels"))
    mutated = KnobMutator(3).apply(sch.trace)
    before = {str(i.outputs[0]): int(sch.trace.decisions[i]) for i in sch.trace.insts if i.kind.name == "SampleCategorical"}
    after = {str(i.outputs[0]): int(mutated.decisions[i]) for i in mutated.insts if i.kind.name == "SampleCategorical"}
    assert sum(before[k] != after[k] for k in before) == 1


def test_tasks_are_deduplicated_and_weighted():
    one = extract_tasks(["shufflenet_v2_x0_5"], HOST, input_size=64)
    two = extract_tasks(["shufflenet_v2_x0_5", "shufflenet_v2_x0_5"], HOST, input_size=64)
    assert [t.key for t in one] == [t.key for t in two]
    assert [2 * t.weight for t in one] == [t.weight for t in two]
    assert sum(t.weight for t in one) == 58  # every kernel call of the network (see test_profile)
    assert len({t.key for t in one}) == len(one)
    se = extract_tasks(["mobilenet_v3_small"], HOST, input_size=64)
    assert any(t.template is None and t.flops > 0 for t in se)  # hard-sigmoid gates: the generic space's kernels


def _log(path, key, family, kernels):
    path.write_text(json.dumps({"target_key": key, "family": family, "kernels": kernels}))


def test_find_log_exact_family_explicit_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_SHUFFLENET_TUNING_LOGS", str(tmp_path))
    assert find_log("x86_64-foo", "x86-avx2").how == "none"
    _log(tmp_path / "x86_64-other.json", "x86_64-other", "x86-avx2", {})
    applied = find_log("x86_64-foo", "x86-avx2")
    assert applied.how == "family" and applied.name == "x86_64-other.json"
    assert find_log("x86_64-foo", "x86-avx512").how == "none"  # another ISA's knobs never apply
    _log(tmp_path / "x86_64-foo.json", "x86_64-foo", "x86-avx2", {})
    assert find_log("x86_64-foo", "x86-avx2").how == "exact"
    assert find_log("x86_64-foo", "x86-avx2", "none").how == "none"
    assert find_log("x86_64-foo", "x86-avx2", str(tmp_path / "x86_64-other.json")).how == "explicit"
    (tmp_path / "x86_64-foo.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        find_log("x86_64-foo", "x86-avx2")
    with pytest.raises(UserError, match="does not exist"):
        find_log("x86_64-foo", "x86-avx2", str(tmp_path / "missing.json"))


def test_short_tune_writes_a_log_that_compile_applies(tmp_path, monkeypatch, capsys):
    """Two kernels tuned on this machine; compile applies the log, says so, and still matches PyTorch."""
    monkeypatch.setenv("TVM_SHUFFLENET_TUNING_LOGS", str(tmp_path / "logs"))
    work, log = tmp_path / "work", tmp_path / "logs" / f"{HOST.key}.json"
    args = ["tune", "shufflenet_v2_x0_5", "--input-size", "64", "--trials", "8", "--per-iter", "4", "--max-kernels", "2",
            "--threads", "2", "--work-dir", str(work)]
    # records of kernels this run does not touch: one of today's template (kept), one of an older pointwise
    # template (knobs it no longer has: dropped, so the log says what builds)
    old_spec, kept_spec = (ConvSpec(1, 116, 116, 14, 14, 116, 1, 1, act=a) for a in ("relu", None))
    old_key, kept_key = f"conv2d:{old_spec.to_json()}", f"conv2d:{kept_spec.to_json()}"
    kept = {"pw.axis": "pixels", "pw.co_tile": 4, "pw.p_split": [14, 14]}
    log.parent.mkdir(parents=True)
    _log(log, HOST.key, "x86-avx2", {old_key: {"pw.axis": "channels", "pw.c_vectors": 1, "pw.p_tile": 4}, kept_key: kept})
    assert main(args) == 0
    data = json.loads(log.read_text())
    assert old_key not in data["kernels"] and data["kernels"][kept_key] == kept
    assert data["target_key"] == HOST.key and data["made_by"]["command"].startswith("tvm-shufflenet tune shufflenet_v2_x0_5")
    assert data["made_by"]["trials"] == 8 and data["made_by"]["tvm_version"] == tvm.__version__
    assert len(data["measured"]) == 2 and all(v["applied"] in ("tuned", "default") for v in data["measured"].values())
    capsys.readouterr()
    lib = tmp_path / "tuned.so"
    assert main(["compile", "shufflenet_v2_x0_5", "--input-size", "64", "-o", str(lib)]) == 0
    assert f"{HOST.key}.json (exact" in capsys.readouterr().out
    from tvm_shufflenet.elf import read_metadata
    from tvm_shufflenet.runtime import load

    _, meta = read_metadata(lib)
    assert meta["tuning_log"]["how"] == "exact" and meta["tuning_log"]["file"] == f"{HOST.key}.json"
    entry = models.get("shufflenet_v2_x0_5")
    w = weights_mod.seeded(entry.to_relax(input_size=64), 0)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype("float32")
    with torch.no_grad():
        want = reference.load_weights(reference.build(entry), w).eval()(torch.from_numpy(x)).numpy()
    got = load(lib)(x)
    assert np.abs(got - want).max() <= 1e-4 * np.ptp(want)
    assert main(["compile", "shufflenet_v2_x0_5", "--input-size", "64", "-o", str(lib), "--no-tuning-log"]) == 0
    assert read_metadata(lib)[1]["tuning_log"]["how"] == "none"
    # the run's convergence curve: from the untuned kernels' sum down to the tuned one
    assert main(["convergence", f"templates={work}", "--plot", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json")]) == 0
    curve = json.loads((tmp_path / "c.json").read_text())["templates"]
    assert len(curve["estimate_ms"]) == len(curve["trials"]) >= 8 and (tmp_path / "c.png").stat().st_size > 1000
    assert curve["final_ms"] <= curve["untuned_ms"] and all(b <= a for a, b in zip(curve["estimate_ms"], curve["estimate_ms"][1:]))


def test_an_interrupted_tune_resumes_without_measuring_again(tmp_path):
    """The database is the run's memory: a rerun counts what it holds against the budget, measures only the rest.

    (MetaSchedule's search forgets across processes which candidates it measured, so after a restart it may
    pick one again: that costs a trial of the remaining budget, never more.)"""
    from tvm_shufflenet.tuning import TuneConfig, tune
    from tvm_shufflenet.tuning.tuner import open_database

    cfg = TuneConfig(["shufflenet_v2_x0_5"], trials=4, input_size=64, per_iter=4, max_kernels=1, threads=2,
                     work_dir=tmp_path, export=False)
    first = tune(cfg, echo=lambda _s: None)
    n = len(open_database(tmp_path).get_all_tuning_records())
    assert first.trials_run == n >= 4
    again = tune(cfg, echo=lambda _s: None)  # the same command after a stop: nothing left to measure
    assert again.trials_run == 0 and len(open_database(tmp_path).get_all_tuning_records()) == n
    cfg.trials = n + 4
    more = tune(cfg, echo=lambda _s: None)
    records = open_database(tmp_path).get_all_tuning_records()
    assert len(records) == n + more.trials_run and 0 < more.trials_run <= 8  # only the rest of the budget


def test_tune_rejects_bad_input(capsys):
    assert main(["tune", "shufflenet_v2_x0_5", "--space", "generic", "--trials", "0"]) == 2
    assert "--trials" in capsys.readouterr().err
    assert main(["tune", "shufflenet_v2_x0_5", "--target", "rpi4"]) == 2
    assert "--rpc-tracker" in capsys.readouterr().err
    assert main(["tune", "no_such_model", "--trials", "4"]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_random_knob_values_match_pytorch():
    """Whatever the tuner picks is correct: random decoded knob values against PyTorch's conv."""
    from test_schedules import run_conv

    rng = random.Random(0)
    target = HOST.tvm_target()
    for case, spec in SPECS.items():
        tpl = template("conv2d")
        for seed in range(3):
            variant = rng.choice(tpl.variants(spec, target))
            sch = Schedule(tpl.workload(spec, target), seed=seed + 1)
            tpl.schedule(sch, spec, target, SampledDecider(sch, variant))
            knobs = trace_knobs(sch.trace, "conv2d", spec.to_json(), target)
            got, want, _ = run_conv(spec, decider=FixedDecider(knobs))
            assert np.abs(got - want).max() <= 1e-4 * np.ptp(want), (case, knobs)


def test_a_stored_trace_schedules_a_kernel_without_template():
    """Kernels no template covers are tuned in MetaSchedule's generic space: their trace in a log is applied."""
    from tvm.s_tir import Schedule as Sch

    from tvm_shufflenet.compiler.fallback import schedule_one
    from tvm_shufflenet.compiler.tuning import Records, fallback_key

    (task,) = [t for t in extract_tasks(["mobilenet_v3_small"], HOST, input_size=64) if t.template is None][:1]
    func = task.workload
    sch = Sch(func)
    block = sch.get_child_blocks(sch.get_sblock(func.body.block.name_hint))[-1]
    loops = sch.get_loops(block)
    sch.parallel(loops[0])
    records = Records({"traces": {fallback_key(func): tvm.ir.save_json(sch.trace.as_json())}})
    tuned = schedule_one(func, HOST.tvm_target(), records)
    assert "T.parallel" in tuned.script()
    tvm.ir.assert_structural_equal(tuned.without_attr("tirx.is_scheduled"), sch.mod["main"])
