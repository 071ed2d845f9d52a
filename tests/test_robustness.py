"""A loaded model inside a real app: concurrent callers, reloads, release, and every bad file a clean error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from tvm_shufflenet.build import build
from tvm_shufflenet.cli import main
from tvm_shufflenet.elf import LibraryError
from tvm_shufflenet.runtime import InputError, load, set_threads


def _inputs(model, n=4):
    rng = np.random.default_rng(3)
    return [rng.standard_normal(model.input_shape).astype(np.float32) for _ in range(n)]


def test_concurrent_calls_return_what_sequential_calls_return(small_host_lib):
    """8 threads x 100 calls on one loaded model (one VM shared by all used to crash with 4)."""
    model = load(small_host_lib[0])
    xs = _inputs(model)
    want = [model(x) for x in xs]
    wrong, errors = [], []
    start = threading.Barrier(8)

    def caller(t):
        try:
            start.wait()
            for i in range(100):
                k = (t + i) % len(xs)
                if not np.array_equal(model(xs[k]), want[k]):
                    wrong.append((t, i))
        except Exception as exc:  # noqa: BLE001 - reported below with the thread's number
            errors.append(f"thread {t}: {exc!r}")

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors[:3], wrong[:5])


def test_load_call_release_returns_memory(small_host_lib):
    """100 load/call/release cycles grow RSS by < 20 MiB (each load pinned its ~6 MiB library forever)."""
    script = f"""
import gc, numpy as np, tvm_shufflenet
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
x = np.zeros((1, 3, 64, 64), np.float32)
for i in range(105):
    if i == 5:
        base = rss()
    m = tvm_shufflenet.load({str(small_host_lib[0])!r})
    m(x)
    del m
    gc.collect()
print(rss() - base)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) < 20, out.stdout


def test_a_replaced_library_loads_as_the_new_file(small_host_lib, tmp_path):
    """A new checkpoint written over the path of a model still in use: the loader must not hand back the old one."""
    other = tmp_path / "seed1.so"
    build("shufflenet_v2_x0_5", "host", other, input_size=64, seed=1)
    path = tmp_path / "model.so"
    shutil.copyfile(small_host_lib[0], path)
    old = load(path)
    x = _inputs(old, 1)[0]
    before = old(x)
    tmp = tmp_path / "model.so.new"
    shutil.copyfile(other, tmp)
    os.replace(tmp, path)  # how a deploy script swaps a file
    new = load(path)
    assert np.array_equal(new(x), load(other)(x)) and not np.allclose(new(x), before)
    assert np.array_equal(old(x), before)  # the old model keeps running its own library
    del old, new
    assert np.array_equal(load(path)(x), load(other)(x))


def test_close_and_context_manager(small_host_lib):
    with load(small_host_lib[0]) as model:
        x = _inputs(model, 1)[0]
        model(x)
    with pytest.raises(LibraryError, match="closed; load\\(\\) it again"):
        model(x)
    assert "closed" in repr(model)


def test_set_threads_reaches_the_threads_that_run_kernels(small_host_lib):
    """Kernels run on runner threads, each with its own TVM pool: a new setting must reach pools that exist."""
    import tvm

    from tvm_shufflenet import runtime

    model = load(small_host_lib[0])
    x = _inputs(model, 1)[0]

    def threads_of_a_call():
        model._run(x)  # on a runner thread: configures its pool as every call does
        return int(tvm.get_global_func("runtime.NumThreads")())

    try:
        assert runtime._on_runner(threads_of_a_call) == 2
        set_threads(1)
        assert runtime._on_runner(threads_of_a_call) == 1
    finally:
        set_threads(2)
    assert runtime._on_runner(threads_of_a_call) == 2


def test_short_lived_caller_threads_leave_no_threads_behind(small_host_lib):
    """A thread per request: TVM's per-thread pools of ended threads are never stopped, so none may start."""
    model = load(small_host_lib[0])
    x = _inputs(model, 1)[0]
    model(x)

    def os_threads():
        return len(os.listdir(f"/proc/{os.getpid()}/task"))

    before = os_threads()
    for _ in range(30):
        t = threading.Thread(target=model, args=(x,))
        t.start()
        t.join()
    assert os_threads() - before < 5


def test_not_an_image_is_an_input_error(small_host_lib, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n")
    (tmp_path / "photo.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    model = load(small_host_lib[0])
    for path in (notes, tmp_path / "photo.jpg"):
        with pytest.raises(InputError, match="is not a readable image"):
            model.predict(path)
    with pytest.raises(InputError, match="does not exist"):
        model.predict(tmp_path / "absent.png")


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("args, code, message", [
    (["compile", "mobilenet_v1_0_25", "--target", '{"kind": "foo"}', "-o", "{tmp}/x.so"], 2, "unknown target kind 'foo'"),
    (["compile", "mobilenet_v1_0_25", "--target", '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"notacpu"}', "-o", "{tmp}/x.so"], 2,
     "unknown mcpu 'notacpu' for aarch64-linux-gnu"),
    (["compile", "mobilenet_v1_0_25", "--target", '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"cortex-a7"}', "-o", "{tmp}/x.so"], 2,
     "did you mean cortex-a7"),
    (["compile", "mobilenet_v1_0_25", "--cuda-arch", "sm_90", "-o", "{tmp}/x.so"], 2, "--cuda-arch sm_90 is for --target cuda"),
    (["run", "{lib}", "--input", "{tmp}/notes.txt"], 2, "notes.txt is not a readable image"),
    (["report", "{tmp}/notes.txt", "-o", "{tmp}/rep"], 2, "notes.txt is not a file of bench records"),
    (["run", "{tmp}"], 2, "is a directory: give the library file"),
    (["bench", "shufflenet_v2_x0_5", "--rpc", "127.0.0.1:1"], 2, "cannot reach the RPC server at 127.0.0.1:1"),
    (["bench", "shufflenet_v2_x0_5", "--rpc-tracker", "127.0.0.1:1", "--rpc-key", "k"], 2, "cannot reach the RPC tracker at 127.0.0.1:1"),
    (["bench", "shufflenet_v2_x0_5", "--rpc-tracker", "127.0.0.1:1", "--rpc-key", "k", "--target", "rpi4"], 2, "cannot reach the RPC tracker"),
    (["guidelines", "g1", "--target", "rpi4"], 2, "builds aarch64 code, this machine is x86_64"),
    (["guidelines", "g2", "--rpc", "127.0.0.1:1", "--target", "rpi4"], 2, "cannot reach the RPC server"),
])
def test_cli_errors_are_one_line(args, code, message, tmp_path, small_host_lib, capsys):
    (tmp_path / "notes.txt").write_text("not an image, not records\n")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{lib}", str(small_host_lib[0])) for a in args]
    assert main(args) == code
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "x.so").exists()


def test_triple_without_cross_compiler_names_it(tmp_path, capsys):
    if shutil.which("riscv64-linux-gnu-gcc"):
        pytest.skip("a riscv64 cross compiler is installed here")
    target = '{"kind":"llvm","mtriple":"riscv64-linux-gnu"}'
    assert main(["compile", "mobilenet_v1_0_25", "--target", target, "-o", str(tmp_path / "x.so")]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "riscv64-linux-gnu-gcc" in lines[0] and "apt-get install gcc-riscv64-linux-gnu" in lines[0]


def test_a_failed_item_is_named_once(capsys):
    assert main(["bench", "shufflenet_v2_x0_5", "--rpc", "127.0.0.1:1", "--board-arch", "aarch64"]) == 2
    capsys.readouterr()
    from tvm_shufflenet.bench import runner

    with pytest.raises(Exception) as info:
        runner.prepare("shufflenet_v2_x0_5", None, runner.BenchConfig())
    line = runner.Failure.of("shufflenet_v2_x0_5", info.value)
    assert line.count("shufflenet_v2_x0_5") == 1 and line.exit_code == 2


def test_internal_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import tvm_shufflenet.cli as cli

    def boom(args):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(cli, "cmd_list", boom)
    assert main(["list"]) == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "list failed (RuntimeError: second line)" in lines[0] and "--debug" in lines[0]
    with pytest.raises(RuntimeError):
        main(["--debug", "list"])


# --- every file the CLI and load() accept, damaged: random bytes, truncated, empty, JSON of the wrong shape ---

@pytest.fixture(scope="module")
def valid_files(tmp_path_factory, small_host_lib):
    """One intact file of every kind the CLI reads."""
    import torch
    from PIL import Image

    from tvm_shufflenet import models
    from tvm_shufflenet import weights as W
    from tvm_shufflenet.compiler.tuning import log_dir

    d = tmp_path_factory.mktemp("valid")
    values = W.seeded(models.get("mobilenet_v1_0_25").to_relax(input_size=64), 0)
    W.save_npz(values, d / "w.npz")
    torch.save({k: torch.from_numpy(v) for k, v in values.items()}, d / "w.pth")
    assert main(["export-onnx", "mobilenet_v1_0_25", "-o", str(d / "m.onnx"), "--input-size", "64"]) == 0
    np.save(d / "x.npy", np.zeros((1, 3, 64, 64), np.float32))
    Image.new("RGB", (80, 80), (200, 30, 30)).save(d / "p.png")
    Image.new("RGB", (80, 80), (30, 30, 200)).save(d / "p.jpg")
    record = {"model": "m", "family": "shufflenet_v2", "board": "b", "target_key": "k", "mflops": 1.0, "median_ms": 1.0,
              "output_check": "pass", "emulated": False}
    (d / "records.json").write_text(json.dumps([record]))
    log = next(log_dir().glob("*.json"))
    return {".so": small_host_lib[0].read_bytes(), ".npz": (d / "w.npz").read_bytes(), ".pth": (d / "w.pth").read_bytes(),
            ".onnx": (d / "m.onnx").read_bytes(), ".npy": (d / "x.npy").read_bytes(), ".png": (d / "p.png").read_bytes(),
            ".jpg": (d / "p.jpg").read_bytes(), "records.json": (d / "records.json").read_bytes(), "tuning.json": log.read_bytes()}


_DAMAGE = {
    "random": lambda data: np.random.default_rng(len(data)).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "json-list": lambda data: b"[1, 2, 3]",
    "json-string": lambda data: b'"hello"',
    "json-wrong-types": lambda data: b'{"kernels": {"conv2d:x": 5}, "traces": 3, "model": 1}',
}
_COMMANDS = {
    ".so": [["run", "{f}"], ["info", "{f}"], ["bench", "{f}", "--repeat", "2"], ["concurrency", "{f}", "--calls", "2"]],
    ".onnx": [["compile", "{f}", "-o", "{tmp}/o.so"]],
    ".pth": [["compile", "mobilenet_v1_0_25", "--input-size", "64", "--weights", "{f}", "-o", "{tmp}/o.so"]],
    ".npz": [["weights", "mobilenet_v1_0_25", "--input-size", "64", "--weights", "{f}", "-o", "{tmp}/w.npz"]],
    ".npy": [["run", "{lib}", "--input", "{f}"]],
    ".png": [["run", "{lib}", "--input", "{f}"]],
    ".jpg": [["run", "{lib}", "--input", "{f}"]],
    "records.json": [["report", "{f}", "-o", "{tmp}/rep"], ["bench", "{lib}", "--repeat", "2", "-o", "{f}"]],
    "tuning.json": [["compile", "shufflenet_v2_x0_5", "--input-size", "64", "--tuning-log", "{f}", "-o", "{tmp}/o.so"]],
}
_CASES = [(kind, damage) for kind in _COMMANDS for damage in _DAMAGE
          if not damage.startswith("json") or kind.endswith(".json") or kind in (".onnx", ".pth", ".npy")]


@pytest.mark.parametrize("kind, damage", _CASES)
def test_damaged_files_get_a_clean_error(kind, damage, valid_files, small_host_lib, tmp_path, capsys):
    bad = tmp_path / (f"bad{kind}" if kind.startswith(".") else f"bad-{kind}")
    content = _DAMAGE[damage](valid_files[kind])
    for command in _COMMANDS[kind]:
        bad.write_bytes(content)
        args = [a.replace("{f}", str(bad)).replace("{tmp}", str(tmp_path)).replace("{lib}", str(small_host_lib[0])) for a in command]
        code = main(args)
        lines = _error_lines(capsys)
        assert code == 2 and len(lines) == 1 and lines[0].startswith(("error: ", "failed: ")), (args, code, lines)
        assert "Traceback" not in lines[0] and "allow_pickle" not in lines[0]
    if kind == ".so":
        with pytest.raises(LibraryError):
            load(bad)
    if kind in (".png", ".jpg"):
        with pytest.raises(InputError):
            load(small_host_lib[0]).predict(bad)


def test_load_of_a_directory_says_so(tmp_path):
    with pytest.raises(LibraryError, match="is a directory"):
        load(tmp_path)


def test_cuda_arch_on_a_cpu_target_is_refused():
    from tvm_shufflenet.targets import TargetError, resolve

    with pytest.raises(TargetError, match="drop --cuda-arch"):
        resolve("rpi4", cuda_arch="sm_90")
    assert resolve("cuda", cuda_arch="sm_90").key == "cuda-sm_90"


def test_report_prints_mflops_alike(tmp_path):
    from tvm_shufflenet.bench.report import write_report

    recs = [{"model": m, "family": "shufflenet_v2", "board": "b", "emulated": False, "target_key": "k", "mflops": mf,
             "median_ms": 1.5, "output_check": "pass", "threads": 2} for m, mf in (("a", 144.93), ("b", 56.5101))]
    text = write_report(recs, tmp_path).read_text()
    assert "| 56.5 |" in text and "| 144.9 |" in text and "56.510" not in text
