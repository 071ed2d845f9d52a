"""The command line, as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tvm_shufflenet.cli import main


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 35
    assert {"name", "family", "input_size", "mflops", "params_m"} <= set(records[0])
    snv2 = next(r for r in records if r["name"] == "shufflenet_v2_x1_0")
    assert snv2["family"] == "shufflenet_v2" and snv2["input_size"] == 224 and abs(snv2["mflops"] - 146) < 3


def test_compile_run_info(tmp_path, capsys):
    lib = tmp_path / "m.so"
    assert main(["compile", "mobilenet_v3_small", "--target", "host", "-o", str(lib), "--input-size", "96", "--num-classes", "10"]) == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(lib), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--topk", "3", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "latency: median" in out and out.count("class ") >= 3
    assert np.load(tmp_path / "y.npy").shape == (1, 10)
    assert main(["info", str(lib)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 10 and info["elf"]["machine"] == "x86_64"


def test_weights_command_round_trip(tmp_path, capsys):
    npz = tmp_path / "w.npz"
    assert main(["weights", "mobilenet_v1_0_25", "-o", str(npz), "--seed", "7"]) == 0
    lib_a, lib_b = tmp_path / "a.so", tmp_path / "b.so"
    assert main(["compile", "mobilenet_v1_0_25", "-o", str(lib_a), "--weights", str(npz), "--input-size", "64"]) == 0
    assert main(["compile", "mobilenet_v1_0_25", "-o", str(lib_b), "--seed", "7", "--input-size", "64"]) == 0
    from tvm_shufflenet.runtime import load

    x = np.ones((1, 3, 64, 64), np.float32)
    assert np.array_equal(load(lib_a)(x), load(lib_b)(x))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tvm_shufflenet", *args], capture_output=True, text=True, timeout=300)


def test_bad_input_gets_one_line_errors(tmp_path):
    cases = [
        (["compile", "shufflenet_v3", "-o", str(tmp_path / "a.so")], "unknown model 'shufflenet_v3'"),
        (["compile", "mobilenet_v2", "--target", "rpi9", "-o", str(tmp_path / "a.so")], "unknown target 'rpi9'"),
        (["compile", "mobilenet_v2", "-o", str(tmp_path / "a.bin")], "must end in .so"),
        (["run", str(tmp_path / "absent.so")], "does not exist"),
        (["compile", "mobilenet_v2", "--weights", str(tmp_path / "none.pth"), "-o", str(tmp_path / "a.so")], "does not exist"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)


def test_wrong_shape_npy_is_a_clear_error(tmp_path, small_host_lib):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    proc = _cli("run", str(small_host_lib[0]), "--input", str(tmp_path / "x.npy"))
    assert proc.returncode == 2 and "expected input shape (1, 3, 64, 64)" in proc.stderr


def test_demo_end_to_end(tmp_path):
    """The README's main job: compile for this CPU, run, top-5 and latency; cross-compile for a Pi 4."""
    proc = _cli("demo", "--model", "shufflenet_v2_x0_5", "--out", str(tmp_path), "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    assert "latency: median" in proc.stdout and " 5. " in proc.stdout and "ELF 64-bit aarch64" in proc.stdout
