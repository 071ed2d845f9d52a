"""Benchmark records: a JSON array rewritten atomically after every measurement, so a crash loses nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import UserError

__all__ = ["RecordFile", "summarize", "load_records", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, data: Any, sort_keys: bool = False) -> None:
    """Write ``data`` as JSON through a temporary file and ``os.replace``: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=sort_keys) + ("\n" if sort_keys else ""))
    os.replace(tmp, path)


def cpu_name() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it (records say where they were measured)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure through a temporary file (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """Median, mean, std, min and max of latency samples (ms)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
    }


class RecordFile:
    """A JSON array of records on disk; ``add`` rewrites it via a temporary file and ``os.replace``."""

    REQUIRED = ("model", "board", "target_key")

    def __init__(self, path: str | os.PathLike | None, advice: str = "move it away or pick another -o",
                 required: tuple[str, ...] = REQUIRED):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = []
        if self.path and self.path.exists():
            what = f"{self.path} is not a file of bench records (a JSON array written by `bench -o`): {advice}"
            try:
                records = json.loads(self.path.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
                raise UserError(what) from None
            if not isinstance(records, list) or not all(isinstance(r, dict) and all(k in r for k in required) for r in records):
                raise UserError(what)
            self.records = records

    def done(self, model: str, board: str, target_key: str, library_sha256: str | None = None) -> dict[str, Any] | None:
        """A successful record of this model on this board and target, if one is already there."""
        for r in self.records:
            same = r.get("model") == model and r.get("board") == board and r.get("target_key") == target_key
            if same and r.get("output_check") in ("pass", "skipped") and (library_sha256 is None or r.get("library_sha256") == library_sha256):
                return r
        return None

    def add(self, record: dict[str, Any]) -> None:
        """Append (replacing a failed record of the same model, board and target) and write atomically."""
        key = (record.get("model"), record.get("board"), record.get("target_key"))
        self.records = [r for r in self.records if (r.get("model"), r.get("board"), r.get("target_key")) != key]
        self.records.append(record)
        if self.path:
            write_json_atomic(self.path, self.records)


def load_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every record of every file (later files win for the same model, board and target)."""
    merged: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"{path} does not exist: pass JSON files written by `bench -o`")
        needed = (*RecordFile.REQUIRED, "mflops", "output_check", "family", "emulated")
        for r in RecordFile(path, advice="pass the files `bench -o` wrote", required=needed).records:
            merged[(r.get("model"), r.get("board"), r.get("target_key"))] = r
    return list(merged.values())
