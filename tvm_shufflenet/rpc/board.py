"""Connecting to boards (TVM's tracker, or one server directly) and running a library there.

The small API the benchmarker and the tuner share: :class:`BoardAddress` says where a board is,
:func:`connect` returns a session (with clear errors for unreachable trackers, unknown keys and busy boards),
:func:`run_library` uploads a library, runs it through the Relax VM and times it with TVM's time evaluator.
"""

from __future__ import annotations

import concurrent.futures
import gc
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["BoardError", "BoardAddress", "parse_hostport", "tracker_boards", "check_reachable", "connect", "release", "run_library", "run_outputs", "RemoteResult"]


class BoardError(UserError, RuntimeError):
    """A board or tracker that cannot be reached, used or trusted."""


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` or ``"host"`` -> ``(host, port)``."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise BoardError(f"bad address {text!r}: use HOST:PORT") from None


@dataclass(frozen=True)
class BoardAddress:
    """Where a board is: through a tracker under a key, or a server's own ``HOST:PORT``."""

    tracker: tuple[str, int] | None = None
    key: str | None = None
    direct: tuple[str, int] | None = None

    @classmethod
    def parse(cls, tracker: str | None = None, key: str | None = None, rpc: str | None = None) -> "BoardAddress":
        """From the CLI's ``--rpc-tracker``/``--rpc-key`` or ``--rpc``."""
        if rpc and tracker:
            raise BoardError("give either --rpc HOST:PORT (one server) or --rpc-tracker HOST:PORT --rpc-key KEY, not both")
        if rpc:  # a server started with --key (and no tracker) only accepts sessions naming that key
            return cls(direct=parse_hostport(rpc, 9090), key=key)
        if tracker:
            if not key:
                raise BoardError("--rpc-tracker needs --rpc-key: the key the boards registered under")
            return cls(tracker=parse_hostport(tracker, 9190), key=key)
        raise BoardError("no board given: use --rpc-tracker HOST:PORT --rpc-key KEY, or --rpc HOST:PORT")

    def __str__(self) -> str:
        if self.direct:
            return f"{self.direct[0]}:{self.direct[1]}"
        return f"{self.key}@{self.tracker[0]}:{self.tracker[1]}"


def _reachable(addr: tuple[str, int], what: str, hint: str, timeout: float = 5.0) -> None:
    try:
        socket.create_connection(addr, timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BoardError(f"cannot reach the {what} at {addr[0]}:{addr[1]} ({reason}): {hint}") from None


def _tracker(addr: tuple[str, int]):
    from tvm import rpc

    _reachable(addr, "RPC tracker", "start one with `tvm-shufflenet tracker start`, or check --rpc-tracker")
    try:
        return rpc.connect_tracker(*addr)
    except Exception as exc:
        raise BoardError(f"{addr[0]}:{addr[1]} did not answer as an RPC tracker: {exc}") from None


def tracker_boards(tracker: tuple[str, int]) -> list[dict]:
    """Every key at the tracker: servers registered, free, and requests pending."""
    summary = _tracker(tracker).summary()
    servers: dict[str, list[str]] = {}
    for item in summary.get("server_info", []):
        key = item["key"].split(":", 1)[-1]
        servers.setdefault(key, []).append(f"{item['addr'][0]}:{item['addr'][1]}")
    rows = []
    for key in sorted(set(servers) | set(summary.get("queue_info", {}))):
        queue = summary.get("queue_info", {}).get(key, {})
        rows.append({"key": key, "servers": servers.get(key, []), "total": len(servers.get(key, [])), "free": queue.get("free", 0), "pending": queue.get("pending", 0)})
    return rows


def check_reachable(address: BoardAddress) -> None:
    """Raise :class:`BoardError` (bad input) unless the server answers, or the tracker has boards under the key."""
    if address.direct:
        _reachable(address.direct, "RPC server", "is `python -m tvm.exec.rpc_server` running there? check --rpc")
        return
    rows = {r["key"]: r for r in tracker_boards(address.tracker)}
    if rows.get(address.key, {}).get("total", 0) == 0:
        known = ", ".join(k for k, r in rows.items() if r["total"]) or "none"
        host, port = address.tracker
        raise BoardError(f"no board is registered under key {address.key!r} at {host}:{port} (keys with boards: {known})")


def connect(address: BoardAddress, wait_timeout: float = 120.0, session_timeout: float = 0):
    """An RPC session on a board; waits up to ``wait_timeout`` s for a free one under a tracker key."""
    from tvm import rpc

    if address.direct:
        _reachable(address.direct, "RPC server", "is `python -m tvm.exec.rpc_server` running there?")
        # A server answers only sessions naming its --key (none: the empty key); one registered with a
        # tracker answers only keys the tracker hands out. A key the server does not have is tried without.
        keys = [address.key, ""] if address.key else [""]
        for i, key in enumerate(keys):
            try:
                return rpc.connect(*address.direct, key=key, session_timeout=session_timeout)
            except Exception as exc:
                msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                if "key" in msg and i + 1 < len(keys):
                    continue
                if "key" in msg:
                    tried = f"key {address.key!r} and no key" if address.key else "a session without a key"
                    raise BoardError(f"the RPC server at {address} refused {tried}: it was started with another --key "
                                     "(pass that as --rpc-key), or it is registered with a tracker (reach it with "
                                     "--rpc-tracker and --rpc-key)") from None
                raise BoardError(f"the RPC server at {address} refused the session: {msg}") from None
    check_reachable(address)
    # The tracker queues requests forever; ask in a thread so a busy farm becomes a timeout, not a hang.
    tracker = _tracker(address.tracker)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(tracker.request, address.key, session_timeout=session_timeout, max_retry=1)
    try:
        return future.result(timeout=wait_timeout)
    except concurrent.futures.TimeoutError:
        _withdraw(tracker)
        raise BoardError(f"every board under key {address.key!r} stayed busy for {wait_timeout:.0f} s: free one or raise --wait-timeout") from None
    except RuntimeError as exc:
        raise BoardError(f"the tracker could not give a session on {address.key!r}: {str(exc).splitlines()[-1]}") from None
    finally:
        pool.shutdown(wait=False)


def _withdraw(tracker) -> None:
    """Drop a pending request: the tracker declines to hand a board to a closed connection.

    Without this the abandoned request would take the next free board and hold it unused.
    """
    sock = getattr(tracker, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    tracker.close()


@dataclass
class RemoteResult:
    """What one library did on a board: its output for the given input and the timing samples (ms)."""

    output: np.ndarray
    repeats_ms: list[float]
    threads: int
    number: int


def run_library(
    session,
    library: str | Path,
    x: np.ndarray,
    *,
    number: int = 1,
    repeat: int = 20,
    min_repeat_ms: int = 0,
    warmup: int = 2,
    threads: int | None = None,
) -> RemoteResult:
    """Upload ``library``, run it once on ``x`` (returning its output), then time ``repeat`` samples.

    Timing is TVM's time evaluator on the board (``invoke_stateful`` of the VM), so no network time is in it.
    """
    import tvm
    from tvm.runtime.vm import VirtualMachine

    library = Path(library)
    remote_name = f"tvm_shufflenet_{library.stem}_{int(time.time() * 1e3) % 10**9}.so"
    session.upload(str(library), target=remote_name)
    module = session.load_module(remote_name)
    if threads:
        session.get_function("runtime.config_threadpool")(0, threads)
    nthreads = int(session.get_function("runtime.NumThreads")())
    dev = session.cpu()
    vm = VirtualMachine(module, dev)
    vm.set_input("main", tvm.runtime.tensor(x, dev))
    vm.invoke_stateful("main")
    output = vm.get_outputs("main").numpy()
    for _ in range(max(0, warmup - 1)):
        vm.invoke_stateful("main")
    timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    samples = [t * 1e3 for t in timer("main").results]
    try:
        session.remove(remote_name)
    except Exception:  # a leftover file on the board is harmless
        pass
    del timer, vm, module
    return RemoteResult(output, samples, nthreads, number)


def run_outputs(session, library: str | Path, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Upload ``library`` once and return its output for each of ``xs`` (no timing: accuracy checks)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    library = Path(library)
    remote_name = f"tvm_shufflenet_{library.stem}_{int(time.time() * 1e3) % 10**9}.so"
    session.upload(str(library), target=remote_name)
    vm = VirtualMachine(session.load_module(remote_name), session.cpu())
    outs = []
    for x in xs:
        vm.set_input("main", tvm.runtime.tensor(x, session.cpu()))
        vm.invoke_stateful("main")
        outs.append(vm.get_outputs("main").numpy())
    try:
        session.remove(remote_name)
    except Exception:  # a leftover file on the board is harmless
        pass
    return outs


def release(session) -> None:
    """Close a session now, so its board goes back to the tracker.

    The remote VM's Python objects form reference cycles that keep the session open until the garbage
    collector runs; a farm would see its boards stay busy in the meantime.
    """
    del session
    gc.collect()
