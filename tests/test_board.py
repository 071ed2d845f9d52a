"""Integration: a tracker, an emulated aarch64 board (qemu), and the benchmarker against it.

Needs ``qemu-user-static`` and network access to this machine's Debian mirror and PyPI the first time (the
board image is cached in ``~/.cache/tvm_shufflenet``). ``.ci/install`` provides qemu.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from tvm_shufflenet.cli import main
from tvm_shufflenet.rpc import emulate
from tvm_shufflenet.rpc.board import BoardAddress, BoardError, connect, tracker_boards

pytestmark = [
    pytest.mark.board,
    pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="qemu-user-static is not installed (apt-get install qemu-user-static)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def farm():
    from tvm.rpc.tracker import Tracker

    port = _free_port()
    tracker = Tracker("127.0.0.1", port=port, port_end=port + 1, silent=True)
    key = f"emu-test-{tracker.port}"
    board = emulate.start(key, tracker=f"127.0.0.1:{tracker.port}", port=_free_port())
    yield tracker, key, board
    emulate.stop(key)
    tracker.terminate()
    for log in (emulate.cache_root() / "run").glob(f"{key}*.log"):  # this run's boards (-solo, -tune too)
        log.unlink()


def test_boards_lists_the_emulated_board(farm, capsys):
    tracker, key, _ = farm
    (row,) = [r for r in tracker_boards(("127.0.0.1", tracker.port)) if r["key"] == key]
    assert row["total"] == 1 and row["free"] == 1
    assert main(["boards", "--tracker", f"127.0.0.1:{tracker.port}"]) == 0
    assert f"{key} (emulated)" in capsys.readouterr().out


def test_bench_on_the_emulated_board(farm, tmp_path, capsys):
    tracker, key, _ = farm
    out = tmp_path / "emu.json"
    args = ["bench", "shufflenet_v2_x0_5", "mobilenet_v2", "--target", "rpi4", "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", key, "--repeat", "3", "--input-size", "96", "--build-dir", str(tmp_path / "b"), "-o", str(out)]
    assert main(args) == 0
    records = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(records) == {"shufflenet_v2_x0_5", "mobilenet_v2"}
    for r in records.values():
        assert r["emulated"] is True and r["output_check"] == "pass" and r["output_max_abs_err"] < 1e-3
        assert r["target_key"] == "rpi4-cortex-a72" and len(r["repeats_ms"]) == 3 and r["median_ms"] > 0 and r["threads"] >= 1
    printed = capsys.readouterr().out
    assert "emulated board" in printed
    assert main(args) == 0
    assert "already measured" in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(tmp_path / "report")]) == 0
    assert "emulated" in (tmp_path / "report" / "index.md").read_text()


def test_bench_a_library_on_a_server_without_tracker(farm, tmp_path):
    _, key, tracked = farm
    lib = tmp_path / "m.so"
    assert main(["compile", "mobilenet_v1_0_25", "--target", "aarch64-linux-gnu", "-o", str(lib), "--input-size", "64"]) == 0
    # a tracker's board only serves sessions the tracker hands out: the error says how to reach it
    assert main(["bench", str(lib), "--rpc", f"127.0.0.1:{tracked.port}"]) == 2
    solo = emulate.start(f"{key}-solo", tracker=None, port=_free_port())
    try:
        out = tmp_path / "d.json"
        assert main(["bench", str(lib), "--rpc", f"127.0.0.1:{solo.port}", "--repeat", "2", "-o", str(out), "--build-dir", str(tmp_path / "b")]) == 0
        (rec,) = json.loads(out.read_text())
        assert rec["output_check"] == "pass" and rec["emulated"] is True and rec["board"] == f"127.0.0.1:{solo.port}"
    finally:
        emulate.stop(f"{key}-solo")


def test_x86_library_is_refused_before_upload(farm, tmp_path, capsys):
    tracker, key, _ = farm
    lib = tmp_path / "x86.so"
    assert main(["compile", "mobilenet_v1_0_25", "--target", "x86_64-linux-gnu", "-o", str(lib), "--input-size", "64"]) == 0
    code = main(["bench", str(lib), "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", key, "--board-arch", "aarch64"])
    assert code == 2 and "refused before upload" in capsys.readouterr().err


def test_busy_board_times_out_with_a_clear_error(farm):
    tracker, key, _ = farm
    address = BoardAddress.parse(f"127.0.0.1:{tracker.port}", key)
    held = connect(address)
    try:
        with pytest.raises(BoardError, match="stayed busy for 3 s"):
            connect(address, wait_timeout=3)
    finally:
        del held
    assert connect(address, wait_timeout=60) is not None


def test_unknown_key(farm):
    tracker, _, _ = farm
    with pytest.raises(BoardError, match="no board is registered under key 'rk3588'"):
        connect(BoardAddress.parse(f"127.0.0.1:{tracker.port}", "rk3588"))


def test_two_boards_under_one_key_share_the_work(farm, tmp_path):
    tracker, key, _ = farm
    second = emulate.start(key, tracker=f"127.0.0.1:{tracker.port}", port=_free_port())
    try:
        (row,) = [r for r in tracker_boards(("127.0.0.1", tracker.port)) if r["key"] == key]
        assert row["total"] == 2
        from tvm_shufflenet.bench.runner import BenchConfig, bench

        cfg = BenchConfig(repeat=2, input_size=64, build_dir=tmp_path / "b", board_arch="aarch64")
        address = BoardAddress.parse(f"127.0.0.1:{tracker.port}", key)
        done, failures = bench(["mobilenet_v1_0_25", "shufflenet_v1_g3_x0_5", "mobilenet_v3_small"], "rpi4", address, cfg, str(tmp_path / "r.json"))
        assert not failures and sorted(r["model"] for r in done) == ["mobilenet_v1_0_25", "mobilenet_v3_small", "shufflenet_v1_g3_x0_5"]
        assert all(r["output_check"] == "pass" for r in done)
    finally:
        import os
        import signal

        os.killpg(second.pid, signal.SIGTERM)


def test_profile_on_the_emulated_board(farm, tmp_path, capsys):
    """The per-kernel profile works over RPC: kernels timed on the board, categories as on the host."""
    tracker, key, _ = farm
    out = tmp_path / "prof.json"
    args = ["profile", "shufflenet_v2_x0_5", "--target", "rpi4", "--input-size", "64", "--repeat", "2",
            "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", key, "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["target"] == "rpi4-cortex-a72" and data["total_ms"] > 0 and data["method"] == "isolated"
    cats = {k["category"] for k in data["kernels"]}
    assert {"pointwise_conv", "depthwise_conv"} <= cats and "data_movement" not in cats
    assert all(k["time_ms"] > 0 for k in data["kernels"])


def test_tune_over_rpc_on_the_emulated_board(farm, tmp_path, capsys):
    """Machinery only: candidates cross-built here, measured on the board, the best checked there too."""
    tracker, key, _ = farm
    work = tmp_path / "work"
    args = ["tune", "shufflenet_v2_x0_5", "--target", "rpi4", "--input-size", "32", "--trials", "8", "--per-iter", "4",
            "--max-kernels", "2", "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", key, "--work-dir", str(work)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "emulated board" in printed and "2 kernels" in printed
    log = json.loads((work / "emulated-log.json").read_text())  # never into tuning_logs/: qemu timings
    assert log["target_key"] == "rpi4-cortex-a72" and log["family"] == "arm-neon64"
    assert len(log["measured"]) == 2 and "mismatched" not in printed.replace("0 mismatched", "")
    assert log["made_by"]["machine"].startswith("board ")


def test_tune_on_a_server_without_tracker(farm, tmp_path):
    _, key, _ = farm
    solo = emulate.start(f"{key}-tune", tracker=None, port=_free_port())
    try:
        work = tmp_path / "w"
        args = ["tune", "mobilenet_v1_0_25", "--target", "rpi4", "--input-size", "32", "--trials", "4", "--per-iter", "4",
                "--max-kernels", "1", "--rpc", f"127.0.0.1:{solo.port}", "--work-dir", str(work), "--no-export"]
        assert main(args) == 0
        from tvm_shufflenet.tuning.tuner import open_database

        records = open_database(work).get_all_tuning_records()
        assert len(records) >= 4 and all(r.run_secs and float(r.run_secs[0]) < 1e9 for r in records)  # none failed
    finally:
        emulate.stop(f"{key}-tune")


def test_guidelines_on_the_emulated_board(farm, tmp_path, capsys):
    """One guideline (G4, narrowest width) on the emulated board: checked against PyTorch, labelled emulated."""
    tracker, key, _ = farm
    out = tmp_path / "g4.json"
    assert main(["guidelines", "g4", "--target", "rpi4", "--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", key,
                 "--widths", "1", "--repeat", "1", "--json", str(out), "--build-dir", str(tmp_path / "b")]) == 0
    result = json.loads(out.read_text())
    assert result["emulated"] is True and result["target"] == "rpi4-cortex-a72"
    rows = result["guidelines"]["g4"]["rows"]
    assert len(rows) == 4 and all(r["max_abs_err"] < 1e-3 and r["measured"] > 0 for r in rows)
    assert "emulated" in capsys.readouterr().out
