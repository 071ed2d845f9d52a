"""Tuning records: the knob decisions measured best per kernel, applied automatically at compile time.

A record file is ``tuning_logs/<target key>.json``: ``{"target_key", "made_by", "kernels": {"<template>:<spec
json>": {"<knob>": value, ...}}}``. Kernels without a record get the family defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..schedules.knobs import DefaultDecider, FixedDecider

__all__ = ["log_dir", "log_path", "load_log", "decider_factory"]


def log_dir() -> Path:
    """``$TVM_SHUFFLENET_TUNING_LOGS``, else the ``tuning_logs/`` folder of the source checkout."""
    env = os.environ.get("TVM_SHUFFLENET_TUNING_LOGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "tuning_logs"


def log_path(target_key: str) -> Path:
    return log_dir() / f"{target_key}.json"


def load_log(target_key: str) -> dict[str, Any] | None:
    """The tuning record of ``target_key``, or None when there is none."""
    path = log_path(target_key)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it from git or delete it") from None
    return data if isinstance(data, dict) and isinstance(data.get("kernels"), dict) else None


def decider_factory(log: dict[str, Any] | None):
    """A ``(template, spec json) -> Decider`` from a tuning record (defaults where it has nothing)."""
    kernels = (log or {}).get("kernels", {})

    def factory(template: str, spec_json: str):
        values = kernels.get(f"{template}:{spec_json}")
        return FixedDecider(dict(values)) if values else DefaultDecider()

    return factory
