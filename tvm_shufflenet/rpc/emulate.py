"""An emulated ARM board: TVM's own RPC server on the aarch64 TVM runtime, run by qemu user-mode emulation.

Built once and cached (``~/.cache/tvm_shufflenet/boards/<arch>``): an arm64 Python from this machine's own
Debian sources (a private APT configuration, so the host's package state is untouched), the registry's aarch64
wheels of TVM without its compiler library, and a launcher. Timings from it are qemu's, never an ARM board's:
every record it produces is labelled ``emulated``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

__all__ = ["EmulationError", "EmulatedBoard", "cache_root", "ensure_image", "start", "stop", "running", "pid_alive"]

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"
_DEBS = ["python3.11-minimal", "libpython3.11-stdlib", "libstdc++6"]
_WHEELS = [f"apache-tvm=={TVM_VERSION}", f"apache-tvm-ffi=={TVM_FFI_VERSION}", "numpy", "psutil", "cloudpickle", "tornado"]
_ARCHES = {"aarch64": {"deb_arch": "arm64", "qemu": "qemu-aarch64-static", "platforms": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]}}


class EmulationError(UserError, RuntimeError):
    """The emulated board cannot be built or started."""


def cache_root() -> Path:
    """Where images and run state live (``TVM_SHUFFLENET_CACHE`` overrides ``~/.cache/tvm_shufflenet``)."""
    return Path(os.environ.get("TVM_SHUFFLENET_CACHE", Path.home() / ".cache" / "tvm_shufflenet"))


def _run(cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EmulationError(f"{what} failed: {tail[0]}")


def _fetch_rootfs(image: Path, deb_arch: str) -> None:
    """arm64 Python and its libraries from this machine's own apt sources, unpacked into ``rootfs``."""
    apt = image / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    conf = apt / "apt.conf"
    conf.write_text(
        f'APT::Architecture "{deb_arch}";\nAPT::Architectures {{ "{deb_arch}"; }};\n'
        f'Dir::State "{apt}/state";\nDir::State::status "{apt}/state/status";\nDir::Cache "{apt}/cache";\n'
        'Dir::Etc::SourceList "/etc/apt/sources.list";\nDir::Etc::SourceParts "/etc/apt/sources.list.d";\n'
        'Debug::NoLocking "true";\nAPT::Sandbox::User "root";\n'
    )
    env = dict(os.environ, APT_CONFIG=str(conf), DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], f"apt-get update for {deb_arch}", env)
    _run(["apt-get", "install", "-d", "-y", "-qq", *_DEBS], f"downloading {deb_arch} Python packages", env)
    rootfs = image / "rootfs"
    rootfs.mkdir(exist_ok=True)
    for deb in sorted((apt / "cache" / "archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"unpacking {deb.name}")


def _fetch_site(image: Path, platforms: list[str]) -> None:
    """The registry's wheels for the board, unpacked into ``site``; TVM's compiler library removed."""
    wheels = image / "wheels"
    wheels.mkdir(exist_ok=True)
    plats = [a for p in platforms for a in ("--platform", p)]
    _run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *plats, "-d", str(wheels), *_WHEELS],
        "downloading the board's TVM runtime wheels",
    )
    site = image / "site"
    site.mkdir(exist_ok=True)
    for whl in wheels.glob("*.whl"):
        with zipfile.ZipFile(whl) as zf:
            zf.extractall(site)
    for lib in ("libtvm_compiler.so", "libtvm_runtime_cuda.so"):
        (site / "tvm" / "lib" / lib).unlink(missing_ok=True)


def _write_launcher(image: Path, qemu: str) -> None:
    """A host-side ``python`` that runs the board's Python under qemu: TVM's server re-executes it for workers."""
    rootfs, bindir = image / "rootfs", image / "bin"
    bindir.mkdir(exist_ok=True)
    launcher = bindir / "python"
    qemu_path = shutil.which(qemu) or qemu
    launcher.write_text(f'#!/bin/sh\nexec "{qemu_path}" -L "{rootfs}" "{rootfs}/usr/bin/python3.11" "$@"\n')
    launcher.chmod(0o755)
    custom = image / "sitecustomize"
    custom.mkdir(exist_ok=True)
    (custom / "sitecustomize.py").write_text(f"import sys\nsys.executable = {str(launcher)!r}\n")


def ensure_image(arch: str = "aarch64", progress=print) -> Path:
    """Build the board image once; later calls return the cached one."""
    if arch not in _ARCHES:
        raise EmulationError(f"no emulated {arch} board: supported {', '.join(_ARCHES)} (32-bit ARM has no TVM wheels)")
    spec = _ARCHES[arch]
    if not shutil.which(spec["qemu"]):
        raise EmulationError(f"{spec['qemu']} not found: apt-get install qemu-user-static")
    image = cache_root() / "boards" / arch
    if (image / "ready").exists():
        return image
    if image.exists():
        shutil.rmtree(image)  # a half-built image from an interrupted run
    image.mkdir(parents=True)
    progress(f"building the emulated {arch} board in {image} (once)")
    progress("  arm64 Python from this machine's Debian sources ...")
    _fetch_rootfs(image, spec["deb_arch"])
    progress("  aarch64 TVM runtime wheels ...")
    _fetch_site(image, spec["platforms"])
    _write_launcher(image, spec["qemu"])
    shutil.rmtree(image / "apt", ignore_errors=True)
    shutil.rmtree(image / "wheels", ignore_errors=True)
    (image / "ready").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return image


@dataclass(frozen=True)
class EmulatedBoard:
    """A running emulated board: its RPC server's process group, port and registration."""

    key: str
    arch: str
    cpu: str
    pid: int
    port: int
    tracker: str | None
    log: str


def _state_dir() -> Path:
    path = cache_root() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still running."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running(key: str | None = None) -> list[EmulatedBoard]:
    """The emulated boards this machine started that are still alive (all, or under ``key``)."""
    boards = []
    for state in sorted(_state_dir().glob("*.json")):
        board = EmulatedBoard(**json.loads(state.read_text()))
        if not pid_alive(board.pid):
            state.unlink(missing_ok=True)
        elif key is None or board.key == key:
            boards.append(board)
    return boards


def start(
    key: str,
    tracker: str | None = None,
    arch: str = "aarch64",
    cpu: str = "cortex-a72",
    port: int = 9090,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    progress=print,
) -> EmulatedBoard:
    """Start an emulated board serving RPC on ``host:port``, registered with ``tracker`` (``HOST:PORT``) under ``key``."""
    image = ensure_image(arch, progress)
    rootfs = image / "rootfs"
    log = _state_dir() / f"{key}-{port}.log"
    env = dict(
        os.environ,
        PYTHONPATH=f"{image / 'sitecustomize'}:{image / 'site'}",
        TVM_USE_RUNTIME_LIB="1",
        QEMU_CPU=cpu,
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONHOME", None)
    cmd = [
        str(image / "bin" / "python"),
        "-m", "tvm.exec.rpc_server",
        "--host", host, "--port", str(port), "--port-end", str(port + 1),
        "--load-library", str(image / "site" / "tvm" / "lib" / "libtvm_runtime_extra.so"),
    ]  # fmt: skip
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    free_before = _free_under(tracker, key)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=rootfs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "cannot bind" in text:
            os.killpg(proc.pid, signal.SIGTERM)
            raise EmulationError(f"port {port} (and {port + 1}) is taken on {host}: pick another --port")
        bound_at = re.search(r"bind to \S+:(\d+)", text)
        if bound_at:
            bound = int(bound_at.group(1))
            board = EmulatedBoard(key, arch, cpu, proc.pid, bound, tracker, str(log))
            (_state_dir() / f"{key}-{bound}.json").write_text(json.dumps(board.__dict__))
            # It binds before it registers: return once the tracker can hand it out.
            while tracker and _free_under(tracker, key) <= free_before and time.monotonic() < deadline:
                time.sleep(0.3)
            return board
        if proc.poll() is not None:
            raise EmulationError(f"the emulated board exited at start: {(text.strip().splitlines() or ['no output'])[-1]} (log {log})")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise EmulationError(f"the emulated board did not start within {timeout:.0f} s (log {log})")


def _free_under(tracker: str | None, key: str) -> int:
    if not tracker:
        return 0
    from .board import BoardError, parse_hostport, tracker_boards

    try:
        rows = tracker_boards(parse_hostport(tracker, 9190))
    except BoardError:
        raise EmulationError(f"cannot reach the tracker {tracker}: start one with `tvm-shufflenet tracker start`") from None
    return next((r["free"] for r in rows if r["key"] == key), 0)


def stop(key: str | None = None) -> int:
    """Stop the emulated boards under ``key`` (all when ``None``); returns how many were stopped."""
    boards = running(key)
    for board in boards:
        try:
            os.killpg(board.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        (_state_dir() / f"{board.key}-{board.port}.json").unlink(missing_ok=True)
    return len(boards)


def is_emulated(address) -> bool:
    """Whether a board address (:class:`~tvm_shufflenet.rpc.board.BoardAddress`) is served by an emulated board."""
    if address is None:
        return False
    boards = running(address.key) if address.key else running()
    if address.direct:
        return any(b.port == address.direct[1] and address.direct[0] in ("127.0.0.1", "localhost") for b in boards)
    return bool(boards)
