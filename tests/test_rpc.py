"""The board plumbing and benchmarker: fast checks here, the emulated aarch64 board in test_board.py."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tvm_shufflenet.bench import runner
from tvm_shufflenet.bench.records import RecordFile, load_records
from tvm_shufflenet.bench.report import write_report
from tvm_shufflenet.cli import main
from tvm_shufflenet.errors import UserError
from tvm_shufflenet.rpc.board import BoardAddress, BoardError, connect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracker_and_server():
    port = _free_port()
    with pytest.raises(BoardError, match=f"cannot reach the RPC tracker at 127.0.0.1:{port}.*tracker start"):
        connect(BoardAddress.parse(f"127.0.0.1:{port}", "rpi4"))
    with pytest.raises(BoardError, match=f"cannot reach the RPC server at 127.0.0.1:{port}"):
        connect(BoardAddress.parse(rpc=f"127.0.0.1:{port}"))


def test_address_parsing():
    assert BoardAddress.parse("10.0.0.2", "rpi4").tracker == ("10.0.0.2", 9190)
    with pytest.raises(BoardError, match="needs --rpc-key"):
        BoardAddress.parse("10.0.0.2:9190", None)
    with pytest.raises(BoardError, match="not both"):
        BoardAddress.parse("h:1", "k", "h:2")


def test_records_are_atomic_and_resumable(tmp_path):
    path = tmp_path / "r.json"
    store = RecordFile(path)
    store.add({"model": "a", "board": "b", "target_key": "t", "output_check": "pass", "library_sha256": "x"})
    store.add({"model": "c", "board": "b", "target_key": "t", "output_check": "fail", "library_sha256": "y"})
    again = RecordFile(path)
    assert again.done("a", "b", "t", "x") and not again.done("a", "b", "t", "other-build")
    assert not again.done("c", "b", "t")  # a failed model is measured again
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
    for broken in ("{broken", '{"model": "a"}', '[{"board": "b"}]', "[1, 2]"):
        path.write_text(broken)
        with pytest.raises(UserError, match="not a file of bench records .*pick another -o"):
            RecordFile(path)


def test_output_mismatch_is_a_failure_not_a_latency():
    meta = {"family": "shufflenet_v2", "target": {"device": "cpu"}, "target_key": "k", "library_sha256": "s", "input_shape": [1, 3, 64, 64], "mflops": 4.0}
    expected = np.linspace(-1, 1, 1000, dtype=np.float32)[None]
    job = runner.Job("m", "m.so", meta, np.zeros((1, 3, 64, 64), np.float32), expected)
    cfg = runner.BenchConfig()
    good = runner._record(job, "b", True, [2.0, 3.0, 4.0], expected + 1e-6, 2, cfg, 1)
    assert good["output_check"] == "pass" and good["median_ms"] == 3.0 and good["emulated"] is True
    assert good["gflops"] == pytest.approx(2 * 4e6 / 3e-3 / 1e9)
    bad = runner._record(job, "b", True, [2.0, 3.0, 4.0], expected[:, ::-1].copy(), 2, cfg, 1)
    assert bad["output_check"] == "fail" and bad["median_ms"] is None and bad["repeats_ms"] == []


def test_local_bench_records_and_resume(tmp_path, capsys):
    out = tmp_path / "local.json"
    args = ["bench", "mobilenet_v1_0_25", "--input-size", "64", "--repeat", "5", "--build-dir", str(tmp_path / "b"), "-o", str(out)]
    assert main(args) == 0
    (rec,) = json.loads(out.read_text())
    for key in ("model", "board", "emulated", "target", "library_sha256", "tuning_log", "tvm_version", "median_ms", "mean_ms", "std_ms", "repeats_ms", "output_check"):
        assert key in rec
    assert rec["emulated"] is False and rec["output_check"] == "pass" and len(rec["repeats_ms"]) == 5
    capsys.readouterr()
    assert main(args) == 0
    assert "already measured" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["measured_at"] == rec["measured_at"]


def test_disconnect_keeps_finished_models_and_rerun_resumes(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    cfg = runner.BenchConfig(repeat=3, input_size=64, build_dir=tmp_path / "b")
    real = runner._run_local

    def flaky(job, cfg):
        if job.model == "mobilenet_v3_small":
            raise RuntimeError("RPCSessionTimeout: connection reset by peer")
        return real(job, cfg)

    monkeypatch.setattr(runner, "_run_local", flaky)
    done, failures = runner.bench(["mobilenet_v1_0_25", "mobilenet_v3_small"], "host", None, cfg, str(out))
    assert [r["model"] for r in done] == ["mobilenet_v1_0_25"]
    assert len(failures) == 1 and "lost the board" in failures[0] and "rerun to resume" in failures[0]
    monkeypatch.setattr(runner, "_run_local", real)
    done, failures = runner.bench(["mobilenet_v1_0_25", "mobilenet_v3_small"], "host", None, cfg, str(out))
    assert [r["model"] for r in done] == ["mobilenet_v3_small"] and not failures
    assert {r["model"] for r in load_records([out])} == {"mobilenet_v1_0_25", "mobilenet_v3_small"}


def test_wrong_architecture_is_refused_before_upload(tmp_path):
    cfg = runner.BenchConfig(input_size=64, build_dir=tmp_path, board_arch="aarch64")
    with pytest.raises(BoardError, match="built for x86_64, the board is aarch64: refused before upload"):
        runner.prepare("mobilenet_v1_0_25", "host", cfg)


def test_report_tables_and_plots(tmp_path):
    recs = [
        {"model": "shufflenet_v2_x0_5", "family": "shufflenet_v2", "board": "rpi4", "emulated": False, "target_key": "k", "mflops": 40.5, "median_ms": 30.0, "output_check": "pass", "threads": 4},
        {"model": "mobilenet_v2", "family": "mobilenet_v2", "board": "rpi4", "emulated": False, "target_key": "k", "mflops": 300.8, "median_ms": 90.0, "output_check": "pass", "threads": 4},
        {"model": "mobilenet_v2", "family": "mobilenet_v2", "board": "emu", "emulated": True, "target_key": "k", "mflops": 300.8, "median_ms": None, "output_check": "fail", "threads": 2},
    ]
    index = write_report(recs, tmp_path)
    text = index.read_text()
    assert "emu (emulated: qemu timings, not ARM)" in text and "output mismatch" in text
    assert (tmp_path / "latency_vs_mflops_rpi4.png").stat().st_size > 1000
    assert (tmp_path / "results.csv").read_text().count("\n") == 4


def _serve(*extra: str):
    """A TVM RPC server on this machine (x86: a board that needs no emulator), waited for until it listens."""
    import subprocess
    import sys
    import time

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                             "--port-end", str(port + 1), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("the local RPC server did not start")


def test_rpc_key_with_a_server_that_has_none(small_host_lib, tmp_path, capsys):
    """`bench --rpc HOST:PORT --rpc-key K` against a server started without a key (no tracker) just works."""
    proc, port = _serve()
    try:
        out = tmp_path / "r.json"
        assert main(["bench", str(small_host_lib[0]), "--rpc", f"127.0.0.1:{port}", "--rpc-key", "solo-emu", "--repeat", "2", "-o", str(out)]) == 0
        assert json.loads(out.read_text())[0]["output_check"] == "pass"
    finally:
        proc.kill()
    proc, port = _serve("--key", "lab")
    try:
        capsys.readouterr()
        assert main(["bench", str(small_host_lib[0]), "--rpc", f"127.0.0.1:{port}", "--repeat", "2"]) == 2
        err = capsys.readouterr().err
        assert "refused a session without a key" in err and "pass that as --rpc-key" in err and "registered with a tracker" in err
        assert main(["bench", str(small_host_lib[0]), "--rpc", f"127.0.0.1:{port}", "--rpc-key", "lab", "--repeat", "2"]) == 0
    finally:
        proc.kill()


def test_boards_json_has_what_the_table_shows(capsys):
    tracker = _free_port()
    assert main(["tracker", "start", "--host", "127.0.0.1", "--port", str(tracker), "--background"]) == 0
    proc = None
    try:
        proc, _ = _serve("--tracker", f"127.0.0.1:{tracker}", "--key", "x86-local")
        import time

        deadline = time.monotonic() + 30
        rows = []
        while time.monotonic() < deadline and not rows:
            capsys.readouterr()
            assert main(["boards", "--tracker", f"127.0.0.1:{tracker}", "--json"]) == 0
            rows = [r for r in json.loads(capsys.readouterr().out) if r["total"] and r["free"]]  # registered and offered
            time.sleep(0.3)
        (row,) = rows
        assert row["key"] == "x86-local" and row["busy"] == 0 and row["free"] == 1 and row["emulated"] is False
    finally:
        if proc:
            proc.kill()
        main(["tracker", "stop", "--port", str(tracker)])
