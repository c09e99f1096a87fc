"""A comparison's folder (`python -m parity.compare --out DIR`): its layout, and every read and
write of it. No other module of the study names a file in it.

    DIR/config.json                    the comparison's configuration (what a resume must match)
    DIR/runs.jsonl                     the run records, one JSON line each, append-only
    DIR/runs.jsonl.lock, .lock.pid     the lock of the one process running the comparison
    DIR/plan.json                      the plan's state: warm-up seconds, the final look and why
    DIR/test_labels.npy                the test labels (uint8), for the per-example analysis
    DIR/predictions/<fw>-seed<k>.npy   one run's predicted class per test image (uint8)
    DIR/engine.lock                    the lock of the one engine coordinator (parity.study.engine)
    DIR/report.json, report.md, *.png  the report, rebuilt from the files above

The guarantees come from airbench_common.files and .records: every file is written whole and
atomically (a reader sees the old file or the new one, never half of one), with mode 0644; a run's
predictions are on disk before its record is appended as one line, so a record implies its
predictions and a kill loses no finished run; one process at a time owns the runs file (a second
gets a one-line error naming the first's pid), so a run folder can be resumed by running the same
command again. A record belongs to the comparison whose configuration hash it carries
(`compare_config`, beside `written_by`); other records in the runs file are foreign and left out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from airbench_common.files import atomic_write_bytes, hold_lock, locked, write_json_atomic
from airbench_common.records import APPEND_LOCK_TIMEOUT, append_record, read_records

from .errors import CompareError

CONFIG_NAME = "config.json"
RUNS_NAME = "runs.jsonl"
STATE_NAME = "plan.json"
LABELS_NAME = "test_labels.npy"
PREDICTIONS_DIR = "predictions"
ENGINE_LOCK_NAME = "engine"           # its lock file is engine.lock
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ACCURACY_PLOT = "accuracy_ecdf.png"   # the report's plots (parity.study.plots)
TIME_PLOT = "time_per_run.png"
CURVES_PLOT = "val_acc_per_epoch.png"
WRITER = "parity.compare"             # `written_by` of every record a comparison appends


def own_records(records, config: dict) -> tuple[list[dict], int]:
    """(the records of the comparison `config`, the count of the others): a record belongs when
    a comparison wrote it under this configuration hash."""
    own = [r for r in records if r.get("written_by") == WRITER
           and r.get("compare_config") == config.get("config_hash")]
    return own, len(records) - len(own)


def latest_by_run(records) -> dict[tuple[str, int], dict]:
    """(framework, seed) -> the last record of that run (records without a whole seed are
    skipped)."""
    out = {}
    for r in records:
        try:
            out[(r.get("framework"), int(r.get("seed")))] = r
        except (TypeError, ValueError):
            continue
    return out


class RunFolder:
    """The folder `root` of one comparison (created by the first write)."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self):
        return f"RunFolder({str(self.root)!r})"

    @property
    def runs_file(self) -> Path:
        return self.root / RUNS_NAME

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def labels_file(self) -> Path:
        return self.root / LABELS_NAME

    @property
    def report_files(self) -> tuple[Path, Path]:
        """(report.md, report.json)."""
        return self.root / REPORT_MD, self.root / REPORT_JSON

    def prediction_file(self, framework: str, seed: int) -> Path:
        return self.root / PREDICTIONS_DIR / f"{framework}-seed{int(seed)}.npy"

    # ------------------------------------------------------------------ configuration, state
    def read_config(self, advice: str = "use another --out") -> dict | None:
        """config.json, or None when there is none; CompareError (one line, ending in `advice`)
        when it is not a comparison's configuration."""
        path = self.config_file
        if not path.exists():
            return None
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CompareError(f"{path} cannot be read ({type(exc).__name__}); it is not a "
                               f"compare configuration: {advice}") from None
        if not isinstance(cfg, dict) or "recipe" not in cfg:
            raise CompareError(f"{path} is not a compare configuration; {advice}")
        return cfg

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_file, config)

    def read_state(self) -> dict:
        """The plan's state (plan.json); {} when there is none or it cannot be read."""
        try:
            state = json.loads((self.root / STATE_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def write_state(self, state: dict) -> None:
        write_json_atomic(self.root / STATE_NAME, state)

    # ------------------------------------------------------------------ records
    def lock(self):
        """Own the runs file for a `with` body (airbench_common.files.locked): appending takes
        the same lock again, reentrantly; a second owner gets LockedError naming this pid."""
        return locked(self.runs_file)

    def engine_lock(self):
        """Own the folder as the one engine coordinator (parity.study.engine)."""
        return locked(self.root / ENGINE_LOCK_NAME)

    def records(self) -> list[dict]:
        """Every complete record in the runs file (torn or foreign lines skipped)."""
        return read_records(self.runs_file)

    def study_records(self, config: dict) -> tuple[list[dict], int]:
        """(the records of the comparison `config`, the count of the others)."""
        return own_records(self.records(), config)

    def add_run(self, record: dict, predictions, config: dict, *, once: bool = False) -> bool:
        """Write a finished run of comparison `config`: its predictions first (uint8, one per
        test image; None: none), then its record, tagged as the comparison's. `once`: append
        only if no record of its (framework, seed) is there yet, checked under the runs file's
        lock (a task run twice adds nothing). Returns whether the record was appended."""
        if predictions is not None:
            path = self.prediction_file(record["framework"], record["seed"])
            _save_npy(path, np.asarray(predictions).astype(np.uint8))
            record["predictions"] = str(path.relative_to(self.root))
        record.update(written_by=WRITER, compare_config=config["config_hash"])
        if not once:
            append_record(self.runs_file, record)
            return True
        key = (record["compare_config"], record["framework"], record["seed"])
        with hold_lock(self.runs_file, timeout=APPEND_LOCK_TIMEOUT):
            if any((r.get("compare_config"), r.get("framework"), r.get("seed")) == key
                   for r in self.records()):
                return False
            append_record(self.runs_file, record)   # the same lock again, reentrantly
            return True

    # ------------------------------------------------------------------ predictions
    def save_labels(self, labels) -> None:
        _save_npy(self.labels_file, np.asarray(labels).astype(np.uint8))

    def load_labels(self) -> np.ndarray | None:
        """The test labels, or None when the folder has none."""
        path = self.labels_file
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def load_predictions(self, records, framework: str, labels: np.ndarray
                         ) -> tuple[list[dict], np.ndarray | None]:
        """The ok runs of `framework` among `records` (the last record of each seed, in seed
        order) whose stored predictions match `labels`' shape, and those predictions stacked
        (runs x test images; None when there are none)."""
        runs = sorted((r for (fw, _), r in latest_by_run(records).items()
                       if fw == framework and r.get("status") == "ok" and r.get("predictions")),
                      key=lambda r: int(r["seed"]))
        kept, rows = [], []
        for r in runs:
            path = self.root / str(r["predictions"])
            if path.is_file():
                pred = np.load(path, allow_pickle=False)
                if pred.shape == labels.shape:
                    kept.append(r)
                    rows.append(pred)
        return kept, (np.stack(rows) if rows else None)

    # ------------------------------------------------------------------ report
    def write_report(self, summary: dict, markdown: str) -> None:
        md, js = self.report_files
        write_json_atomic(js, summary)
        atomic_write_bytes(md, lambda f: f.write(markdown.encode()))

    def write_file(self, name: str, write: Callable) -> Path:
        """Another file of the report (a plot): write(binary file) into DIR/name, atomically."""
        path = self.root / name
        atomic_write_bytes(path, write)
        return path


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, lambda f: np.save(f, array, allow_pickle=False))
