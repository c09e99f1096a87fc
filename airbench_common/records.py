"""Run records: one JSON object per finished run, appended to a JSON-lines file.

An append is one complete line written in full (a short write is undone and raises: a record is
counted only if all of it is on disk) on an O_APPEND descriptor, under the file's lock
(airbench_common.files), then fsync: a reader sees whole records only, concurrent writers do not
interleave, and a crash can at worst leave one torn final line, which read_records() skips and
reports. Files get mode 0644.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import stat
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from .env import code_version, machine_info
from .errors import UsageError
from .files import (FILE_MODE, FileWriteError, hold_lock, jsonable as _jsonable,  # noqa: F401
                    locked, write_all, write_json_atomic)

SCHEMA_VERSION = 1

# Fields every record carries; `make_record` fills the bookkeeping ones.
REQUIRED_FIELDS = (
    "schema", "recipe", "overrides", "seed", "framework", "versions", "device", "dtype",
    "flags", "status", "acc", "acc_tta", "tta_level", "train_seconds", "eval_seconds", "steps",
)


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
               finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               code=code_version())
    rec.update(extra)
    return _jsonable(rec)


# What each framework's run_recipe writes for every run, on both sides alike (a reader needs only
# REQUIRED_FIELDS, so older records stay readable). A value a framework does not have is None:
# eval_compile_seconds of eager PyTorch, accuracies of a run whose loss became non-finite, the
# time_seconds of a run that never reached its final evaluation. The timing fields mean what
# airbench_common.timing defines, on every arm. `error` is added to a diverged run's record only.
RUN_FIELDS = REQUIRED_FIELDS + (
    "recipe_params", "precision", "ns_dtype", "data", "per_epoch", "device_name",
    "time_seconds", "setup_seconds", "compile_seconds", "timed_compile_seconds",
    "eval_compile_seconds",
)


def run_record(**fields: Any) -> dict:
    """make_record for a framework's run: exactly RUN_FIELDS (plus `error`), so that the two
    frameworks' records cannot drift apart; fills schema, finished_at, code and machine."""
    error = fields.pop("error", None)
    given = set(fields) | {"schema"}
    missing = [k for k in RUN_FIELDS if k not in given]
    extra = sorted(given - set(RUN_FIELDS))
    if missing or extra:
        raise TypeError(f"a run record needs exactly the fields of RUN_FIELDS: missing {missing}, "
                        f"unexpected {extra}")
    rec = make_record(**fields, machine=machine_info())
    if error is not None:
        rec["error"] = str(error)
    return rec


def epoch_row(epoch: int, *, loss_sum, correct, n: int, val_acc=None, seconds=None) -> dict:
    """One `per_epoch` entry, meaning the same on every side: upstream's train_loss and
    train_acc, those of the epoch's *last* training batch (its summed loss and its correct
    predictions over the n examples it trained on, filtered ones excluded), the validation
    accuracy after the epoch (None: not evaluated) and the epoch's timed seconds."""
    n = max(int(n), 1)
    return dict(epoch=int(epoch), train_loss=float(loss_sum) / n, train_acc=float(correct) / n,
                val_acc=None if val_acc is None else float(val_acc),
                seconds=None if seconds is None else float(seconds))


def data_identity(data_dir, n_train: int, n_test: int, *, arrays: bool) -> dict:
    """The `data` field: which images a run used. `arrays`: the caller passed the images itself
    (train_data/test_data), so neither the folder nor its label says what they were. Where this
    process loaded the folder's data (load_cifar10), `images_sha256` adds the sha256 of the whole
    train and test images ({"train": ..., "test": ...}, of images.tobytes(), as in SOURCE.md):
    two runs on different pixels differ there, whatever their labels."""
    if arrays:
        return dict(label="user-supplied arrays", dir=None, n_train=int(n_train),
                    n_test=int(n_test))
    from .data import content_sha256, dataset_label, resolve_data_dir
    out = dict(label=dataset_label(data_dir), dir=str(resolve_data_dir(data_dir)),
               n_train=int(n_train), n_test=int(n_test))
    sha = content_sha256(data_dir)
    if sha is not None:
        out["images_sha256"] = sha
    return out


APPEND_LOCK_TIMEOUT = 30.0  # seconds a writer waits for another writer's append


class RecordFileError(UsageError):
    """A records file that cannot be read (a directory, unreadable, ...)."""


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one record as one line, in full or not at all (see module docstring)."""
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}; build it with make_record()")
    line = (json.dumps(_jsonable(record), sort_keys=True) + "\n").encode()
    path = Path(path)
    if path.is_dir():
        raise FileWriteError(f"{path} is a directory; give a file path such as "
                             f"{path / 'runs.jsonl'}")
    if path.exists() and not path.is_file():
        raise FileWriteError(f"{path} is not a regular file (a device or a pipe?); give a file "
                             "path for run records")
    with hold_lock(path, timeout=APPEND_LOCK_TIMEOUT):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise FileWriteError(f"cannot write run records to {path}: {exc.strerror or exc}; "
                                 "choose a writable file path") from None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if not stat.S_ISREG(st.st_mode):  # replaced since the check above
                raise FileWriteError(f"{path} is not a regular file; give a file path for run "
                                     "records")
            if size == 0:
                os.chmod(path, FILE_MODE)  # whatever the umask
            else:
                # A previous crash may have left a torn line without its newline: start afresh.
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            try:
                write_all(fd, line, path)
                os.fsync(fd)
            except (FileWriteError, OSError) as exc:
                # Undo the partial line, so that nothing half-written is ever read as a run.
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                if isinstance(exc, FileWriteError):
                    raise
                raise FileWriteError(f"could not write a run record to {path} "
                                     f"({exc.strerror or exc})") from None
        finally:
            os.close(fd)


def is_run_record(obj: Any) -> bool:
    """A dict of this schema carrying every required field."""
    return (isinstance(obj, dict) and obj.get("schema") == SCHEMA_VERSION
            and all(k in obj for k in REQUIRED_FIELDS))


def parse_records(data: bytes) -> tuple[list[dict], Counter]:
    """(run records, counts of skipped lines by reason) from the bytes of a JSON-lines file.
    Reasons: 'torn or corrupt' (not JSON, or not UTF-8) and 'foreign' (JSON, but not a run
    record of this schema). Blank lines are ignored."""
    out, skipped = [], Counter()
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            skipped["torn or corrupt"] += 1
            continue
        if is_run_record(obj):
            out.append(obj)
        else:
            skipped["foreign"] += 1
    return out, skipped


def read_records(path: str | os.PathLike) -> list[dict]:
    """All complete run records; torn, corrupt or foreign lines are skipped with one warning
    that counts them, never fatal."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordFileError(f"cannot read run records from {path}: {exc.strerror or exc}; "
                              "give a JSON-lines file") from None
    records, skipped = parse_records(data)
    if skipped:
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        warnings.warn(f"{path}: skipping {sum(skipped.values())} line(s) that are not run "
                      f"records ({what})", stacklevel=2)
    return records


def float_or_nan(value: Any) -> float:
    """Read back a record's number (non-finite values are stored as strings)."""
    if value is None:
        return math.nan
    return float(value)
