"""Run records: one JSON object per finished run, appended to a JSON-lines file.

Appends are one write(2) of one complete line on an O_APPEND descriptor under an exclusive lock,
then fsync: a reader sees whole records only, concurrent writers do not interleave, and a crash
can at worst leave one torn final line, which read_records() skips (and reports).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Fields every record carries; `make_record` fills the bookkeeping ones.
REQUIRED_FIELDS = (
    "schema", "recipe", "overrides", "seed", "framework", "versions", "device", "dtype",
    "flags", "status", "acc", "acc_tta", "tta_level", "train_seconds", "eval_seconds", "steps",
)


def _jsonable(value: Any) -> Any:
    """Make numpy scalars, tuples and non-finite floats JSON-safe (NaN -> null is lossy,
    so non-finite floats are written as strings 'nan'/'inf')."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def make_record(*, recipe: str, overrides: dict, seed: int, framework: str, versions: dict,
                device: str, dtype: str, flags: dict, acc: float | None, acc_tta: float | None,
                tta_level: int, train_seconds: float, eval_seconds: float, steps: int,
                status: str = "ok", **extra: Any) -> dict:
    """A run record. status is 'ok' or 'diverged' (NaN/inf loss); extra keys are kept
    (e.g. compile_seconds, per_epoch, data, preset, error)."""
    rec = dict(schema=SCHEMA_VERSION, recipe=recipe, overrides=dict(overrides), seed=int(seed),
               framework=framework, versions=versions, device=device, dtype=dtype, flags=flags,
               status=status, acc=acc, acc_tta=acc_tta, tta_level=int(tta_level),
               train_seconds=train_seconds, eval_seconds=eval_seconds, steps=int(steps),
               finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    rec.update(extra)
    return _jsonable(rec)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one record as one line, atomically (see module docstring)."""
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}; build it with make_record()")
    line = (json.dumps(_jsonable(record), sort_keys=True) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A previous crash may have left a torn line without its newline: start on a fresh line.
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike) -> list[dict]:
    """All complete records; a torn or corrupt line is skipped with a warning, never fatal."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i}: skipping a torn or corrupt record line", stacklevel=2)
    return out


def float_or_nan(value: Any) -> float:
    """Read back a record's number (non-finite values are stored as strings)."""
    if value is None:
        return math.nan
    return float(value)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    from .data import atomic_write_bytes
    atomic_write_bytes(Path(path), lambda f: f.write(
        (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode()))
