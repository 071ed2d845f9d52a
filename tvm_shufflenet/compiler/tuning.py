"""Tuning records: the decisions measured best per kernel, applied automatically at compile time.

A log is ``tuning_logs/<target key>.json`` (written by ``tvm-shufflenet tune``)::

    {"target_key", "family", "made_by": {"command", "machine", "trials", "date", "tvm_version", ...},
     "kernels": {"<template>:<spec json>": {"<knob>": value, ...}},      # template knob values
     "traces": {"<template>:<spec json>" | "fallback:<hash>": "<trace json>"},  # MetaSchedule's generic space
     "measured": {"<key>": {"default_us", "tuned_us", "calls", "applied"}}}

:func:`find_log` picks the log for a target: the exact key's, else one of the same template family (an AVX-512
log serves another AVX-512 CPU: the kernels' specs and the knobs' meaning are the family's), else none.
Kernels without a record get the family defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..schedules.knobs import DefaultDecider, FixedDecider

__all__ = ["log_dir", "log_path", "find_log", "AppliedLog", "Records", "decider_factory", "float32_twin", "fallback_key",
           "apply_trace_json"]


def log_dir() -> Path:
    """``$TVM_SHUFFLENET_TUNING_LOGS``, else the ``tuning_logs/`` folder of the source checkout."""
    env = os.environ.get("TVM_SHUFFLENET_TUNING_LOGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "tuning_logs"


def log_path(target_key: str) -> Path:
    return log_dir() / f"{target_key}.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"tuning log {path} is not valid JSON ({str(exc).splitlines()[0]}): restore it from git or delete it") from None
    except OSError as exc:
        raise UserError(f"cannot read tuning log {path}: {exc.strerror}") from None
    if not _is_log(data):
        raise UserError(f"{path} is not a tuning log (a \"kernels\" object of knob objects, \"traces\" of strings): "
                        "give a file `tvm-shufflenet tune` wrote")
    return data


def _is_log(data: Any) -> bool:
    kernels, traces = (data.get("kernels", {}), data.get("traces", {})) if isinstance(data, dict) else (None, None)
    return (isinstance(kernels, dict) and all(isinstance(v, dict) for v in kernels.values())
            and isinstance(traces, dict) and all(isinstance(v, (str, dict, list)) for v in traces.values()))


@dataclass(frozen=True)
class AppliedLog:
    """Which log a build applies and how: ``exact`` (its target key), ``family`` (another CPU of the same
    template family), ``explicit`` (``--tuning-log``) or ``none``."""

    log: dict[str, Any] | None
    how: str
    path: Path | None = None

    @property
    def name(self) -> str | None:
        return self.path.name if self.path else None

    @property
    def tag(self) -> str:
        """A short digest of the log's content (``untuned`` without one): libraries built under another log
        are other libraries, so build caches key on it."""
        if not self.log:
            return "untuned"
        import hashlib

        return hashlib.sha256(json.dumps(self.log, sort_keys=True).encode()).hexdigest()[:10]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.name, "how": self.how, "target_key": (self.log or {}).get("target_key"),
                "kernels": len((self.log or {}).get("kernels", {})) + len((self.log or {}).get("traces", {}))}


def find_log(target_key: str, family: str, tuning: str | os.PathLike | None = "auto") -> AppliedLog:
    """The log a build for ``target_key`` (template family ``family``) applies.

    ``tuning``: ``"auto"`` (exact key, else same family), ``"none"``, or a path (``--tuning-log``).
    """
    if tuning in (None, "none"):
        return AppliedLog(None, "none")
    if tuning != "auto":
        path = Path(tuning)
        if not path.is_file():
            raise UserError(f"tuning log {path} does not exist; give a file `tvm-shufflenet tune` wrote, or drop --tuning-log")
        return AppliedLog(_read(path), "explicit", path)
    exact = log_path(target_key)
    if exact.exists():
        return AppliedLog(_read(exact), "exact", exact)
    folder = log_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("family") == family and "kernels" in data and _is_log(data):
            return AppliedLog(data, "family", path)
    return AppliedLog(None, "none")


class Records:
    """A ``(template, spec json) -> Decider`` over a tuning log, which also hands out stored traces."""

    def __init__(self, log: dict[str, Any] | None = None) -> None:
        self.kernels = (log or {}).get("kernels", {}) or {}
        self.traces = (log or {}).get("traces", {}) or {}
        self.measured = (log or {}).get("measured", {}) or {}

    def __call__(self, template: str, spec_json: str):
        key = f"{template}:{spec_json}"
        values = self.kernels.get(key)
        # a twin's knobs only for a kernel never timed here: one the export found no faster than its defaults keeps them
        if not values and key not in self.measured and _twin_applies(spec_json):
            values = self.kernels.get(f"{template}:{float32_twin(spec_json)}")
        return FixedDecider(dict(values)) if values else DefaultDecider()

    def trace_for(self, template: str, spec_json: str) -> str | None:
        return self.traces.get(f"{template}:{spec_json}")

    def trace_for_fallback(self, func: Any) -> str | None:
        return self.traces.get(fallback_key(func)) if self.traces else None


def _twin_applies(spec_json: str) -> bool:
    """Whether a reduced kernel may take its float32 twin's knobs: not a depthwise conv that widens what it loads
    (a bf16 one converts every tap's input, so its best tile is wider: with the twin's one column the 3x3 convs
    of MobileNet V2 ran 20-35% slower than with the defaults' 7-16, each kernel alone on 2 Zen 4 cores)."""
    try:
        d = json.loads(spec_json)
    except json.JSONDecodeError:
        return False
    if not isinstance(d, dict):
        return False
    depthwise = d.get("groups", 1) > 1 and d.get("groups") == d.get("cin") == d.get("cout")
    return not (depthwise and d.get("dtype") not in (None, "float32") and d.get("acc", "float32") != d.get("dtype"))


def float32_twin(spec_json: str) -> str:
    """The spec of the same kernel in float32: a reduced-precision kernel without a record of its own takes its
    twin's knobs (the same loops over the same shapes; a decision its template no longer offers, as with
    fp16's wider ARM vectors, is stale and gives way to the defaults)."""
    try:
        d = json.loads(spec_json)
    except json.JSONDecodeError:
        return spec_json
    if not isinstance(d, dict) or "dtype" not in d:
        return spec_json
    for key in ("acc", "in_dtype", "out_dtype", "weight_dtype"):  # float32 kernels have none of these keys
        d.pop(key, None)
    d["dtype"] = "float32"
    return json.dumps(d, sort_keys=True)


def decider_factory(log: dict[str, Any] | None) -> Records:
    """The records of ``log`` (defaults where it has nothing)."""
    return Records(log)


def fallback_key(func: Any) -> str:
    """Log key of a kernel without a template: the structural hash of its unscheduled PrimFunc."""
    from tvm_ffi import structural_hash

    plain = func
    for attr in ("global_symbol", "tirx.is_scheduled"):
        if plain.attrs is not None and attr in plain.attrs.keys():
            plain = plain.without_attr(attr)
    return f"fallback:{structural_hash(plain) & 0xFFFFFFFFFFFF:012x}"


def apply_trace_json(func: Any, trace_json: Any) -> Any:
    """``func`` scheduled by a trace stored in a tuning log (MetaSchedule's generic space)."""
    import tvm
    from tvm.s_tir import Schedule
    from tvm.s_tir.schedule import Trace

    sch = Schedule(tvm.IRModule({"main": func}))
    Trace.apply_json_to_schedule(tvm.ir.load_json(trace_json) if isinstance(trace_json, str) else trace_json, sch)
    return sch.mod["main"]
