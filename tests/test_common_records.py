"""Run records: required fields, atomic appends, torn lines skipped, non-finite values kept."""
import json
import math
import multiprocessing as mp
import os
import stat

import numpy as np
import pytest

from airbench_common.env import code_version, machine_info
from airbench_common.errors import UsageError
from airbench_common.files import FileWriteError
from airbench_common.records import (REQUIRED_FIELDS, RUN_FIELDS, SCHEMA_VERSION, RecordFileError,
                                     append_record, data_identity, float_or_nan, is_run_record,
                                     make_record, parse_records, read_records, run_record)


def _rec(seed, acc=0.9):
    return make_record(recipe="airbench94", overrides={"epochs": 1}, seed=seed, framework="jax",
                       versions={"jax": "0"}, device="cpu", dtype="float32", flags={},
                       acc=acc, acc_tta=acc, tta_level=2, train_seconds=1.0, eval_seconds=0.1,
                       steps=np.int64(10))


def test_append_and_read_back(tmp_path):
    path = tmp_path / "runs.jsonl"
    for s in range(3):
        append_record(path, _rec(s))
    recs = read_records(path)
    assert [r["seed"] for r in recs] == [0, 1, 2] and recs[0]["steps"] == 10
    assert recs[0]["framework"] == "jax" and "finished_at" in recs[0]


def test_nan_is_kept_as_a_string(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0, acc=float("nan")))
    assert math.isnan(float_or_nan(read_records(path)[0]["acc"]))


def test_torn_line_is_skipped_and_next_append_starts_clean(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    with open(path, "a") as f:
        f.write('{"seed": 1, "acc"')  # a crash mid-write
    with pytest.warns(UserWarning, match="torn"):
        assert [r["seed"] for r in read_records(path)] == [0]
    append_record(path, _rec(2))
    with pytest.warns(UserWarning):
        assert [r["seed"] for r in read_records(path)] == [0, 2]


def test_incomplete_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        append_record(tmp_path / "r.jsonl", {"seed": 1})


def _writer(path, start):
    for s in range(start, start + 50):
        append_record(path, _rec(s))


def test_concurrent_writers_do_not_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    ctx = mp.get_context("spawn")  # fork is unsafe once JAX's threads exist in this process
    procs = [ctx.Process(target=_writer, args=(path, k * 100)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 150 and all(json.loads(line)["recipe"] == "airbench94" for line in lines)


# ------------------------------------------------------------------- appends: edge cases
def test_a_torn_last_line_is_closed_before_the_next_record(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b'{"seed": 1, "ac')            # a crash mid-write, no newline
    append_record(path, _rec(3))
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"seed": 1, "ac' and json.loads(lines[1])["seed"] == 3 and lines[2] == b""
    append_record(path, _rec(4))                    # after a whole line: no blank line between
    assert path.read_bytes().count(b"\n") == 3


def test_new_file_is_0644_whatever_the_umask(tmp_path):
    path = tmp_path / "runs.jsonl"
    old = os.umask(0o077)
    try:
        append_record(path, _rec(0))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_one_sorted_json_line_per_record(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    line = path.read_text()
    assert line.endswith("}\n") and line.count("\n") == 1
    keys = list(json.loads(line))
    assert keys == sorted(keys)


def test_a_directory_or_a_device_is_refused(tmp_path):
    with pytest.raises(FileWriteError) as e:
        append_record(tmp_path, _rec(0))
    assert str(e.value) == (f"{tmp_path} is a directory; give a file path such as "
                            f"{tmp_path / 'runs.jsonl'}")
    with pytest.raises(FileWriteError) as e:
        append_record("/dev/null", _rec(0))
    assert str(e.value) == ("/dev/null is not a regular file (a device or a pipe?); give a file "
                            "path for run records")


def test_an_unwritable_path_is_one_usage_error(tmp_path):
    path = tmp_path / "missing-dir" / "runs.jsonl"
    real_open = os.open

    def refuse(p, *a, **k):
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(p, *a, **k)
    (tmp_path / "missing-dir").mkdir()
    import airbench_common.records as R
    with pytest.MonkeyPatch.context() as m:
        m.setattr(R.os, "open", refuse)
        with pytest.raises(FileWriteError) as e:
            append_record(path, _rec(0))
    assert isinstance(e.value, UsageError)
    assert str(e.value) == (f"cannot write run records to {path}: Permission denied; choose a "
                            "writable file path")


@pytest.mark.parametrize("fail", ["write", "fsync"])
def test_a_failed_write_leaves_no_partial_record(tmp_path, monkeypatch, fail):
    import airbench_common.records as R
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    before = path.read_bytes()
    if fail == "write":
        def half(fd, data, where):            # half the line reaches the disk, then ENOSPC
            os.write(fd, data[: len(data) // 2])
            raise FileWriteError("disk full")
        monkeypatch.setattr(R, "write_all", half)
        msg = "disk full"
    else:
        def no_fsync(fd):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(R.os, "fsync", no_fsync)
        msg = f"could not write a run record to {path} (Input/output error)"
    with pytest.raises(FileWriteError) as e:
        append_record(path, _rec(1))
    assert str(e.value) == msg
    assert path.read_bytes() == before
    monkeypatch.undo()
    append_record(path, _rec(2))
    assert [r["seed"] for r in read_records(path)] == [0, 2]


def test_the_missing_fields_are_named():
    rec = _rec(0)
    del rec["seed"], rec["acc"]
    with pytest.raises(ValueError) as e:
        append_record("unused.jsonl", rec)
    assert str(e.value) == "run record lacks ['seed', 'acc']; build it with make_record()"


# ------------------------------------------------------------------- reading back
def test_skipped_lines_are_counted_by_reason_in_one_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    foreign = dict(_rec(9), schema=2)
    with open(path, "ab") as f:
        f.write(b"\n  \n" + json.dumps(foreign).encode() + b"\n[1, 2]\n\xff\xfe\n"
                + b"[" * 100_000 + b"\n" + b'{"torn"\n')
    append_record(path, _rec(1))
    with pytest.warns(UserWarning) as w:
        recs = read_records(path)
    assert [r["seed"] for r in recs] == [0, 1]
    assert len(w) == 1 and str(w[0].message) == (
        f"{path}: skipping 5 line(s) that are not run records (2 foreign, 3 torn or corrupt)")
    # it points at the caller (under mutmut, at the trampoline mutmut puts between the two)
    assert os.path.basename(w[0].filename) in (os.path.basename(__file__), "trampoline.py")


def test_clean_file_reads_without_a_warning(tmp_path):
    import warnings
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_records(path)) == 1
    assert read_records(tmp_path / "none.jsonl") == []


def test_an_unreadable_records_file_is_one_usage_error(tmp_path):
    with pytest.raises(RecordFileError) as e:
        read_records(tmp_path)
    assert isinstance(e.value, UsageError)
    assert str(e.value) == (f"cannot read run records from {tmp_path}: Is a directory; give a "
                            "JSON-lines file")


def test_parse_records_and_is_run_record():
    good = _rec(0)
    assert is_run_record(good) and not is_run_record([good])
    assert not is_run_record(dict(good, schema=SCHEMA_VERSION + 1))
    for k in REQUIRED_FIELDS:
        assert not is_run_record({f: v for f, v in good.items() if f != k}), k
    data = (json.dumps(good) + "\n\n" + json.dumps({"a": 1})).encode()
    recs, skipped = parse_records(data)
    assert recs == [good] and skipped == {"foreign": 1}


def test_float_or_nan():
    assert math.isnan(float_or_nan(None)) and math.isnan(float_or_nan("nan"))
    assert float_or_nan("-inf") == -math.inf and float_or_nan(0.25) == 0.25


def test_make_record_fills_bookkeeping_and_keeps_extras():
    over = {"epochs": 1}
    rec = make_record(recipe="r", overrides=over, seed=np.int64(3), framework="torch",
                      versions={}, device="cpu", dtype="float32", flags={"f": 1}, acc=None,
                      acc_tta=None, tta_level=np.int32(2), train_seconds=1.0, eval_seconds=0.5,
                      steps=np.int64(7), status="diverged", compile_seconds=2.0)
    assert rec["overrides"] == over and rec["overrides"] is not over
    assert type(rec["seed"]) is int and type(rec["tta_level"]) is int and type(rec["steps"]) is int
    assert (rec["schema"], rec["status"], rec["compile_seconds"]) == (SCHEMA_VERSION, "diverged", 2.0)
    assert rec["finished_at"].endswith("+00:00") and len(rec["finished_at"]) == 25
    assert rec["code"] == code_version()
    assert make_record(**{k: rec[k] for k in REQUIRED_FIELDS if k != "schema"})["status"] == \
        "diverged"
    assert _rec(0)["status"] == "ok"


# ------------------------------------------------------------------- the run-record contract
# (both frameworks' records checked against it: tests/test_record_contract.py)
BOOKKEEPING = {"finished_at", "code", "machine"}   # filled by run_record itself


def _fields(**over):
    f = {k: None for k in RUN_FIELDS if k != "schema"}
    f.update(recipe="airbench94", overrides={}, seed=0, framework="jax", tta_level=2, steps=1)
    f.update(over)
    return f


def test_run_record_takes_exactly_the_contract_fields():
    rec = run_record(**_fields())
    assert set(rec) == set(RUN_FIELDS) | BOOKKEEPING and is_run_record(rec)
    assert rec["machine"] == machine_info()
    f = _fields()
    del f["device_name"], f["acc"]
    with pytest.raises(TypeError) as e:
        run_record(**f)
    assert str(e.value) == ("a run record needs exactly the fields of RUN_FIELDS: missing "
                            "['acc', 'device_name'], unexpected []")
    with pytest.raises(TypeError) as e:
        run_record(**_fields(whiten_seconds=0.1, a=1))
    assert str(e.value) == ("a run record needs exactly the fields of RUN_FIELDS: missing [], "
                            "unexpected ['a', 'whiten_seconds']")


def test_error_is_kept_only_when_there_is_one():
    assert "error" not in run_record(**_fields(error=None))
    assert run_record(**_fields(error="collapsed"))["error"] == "collapsed"
    assert run_record(**_fields(error=ValueError("nan loss")))["error"] == "nan loss"


def test_contract_extends_what_readers_require():
    assert set(REQUIRED_FIELDS) <= set(RUN_FIELDS)


def test_data_identity_says_when_the_caller_gave_the_images(tmp_path, monkeypatch):
    given = data_identity(str(tmp_path), np.int64(64), 50.0, arrays=True)
    assert given == dict(label="user-supplied arrays", dir=None, n_train=64, n_test=50)
    assert type(given["n_train"]) is int and type(given["n_test"]) is int
    (tmp_path / "SOURCE.md").write_text("CIFAR-10 decoded from JPEG\n")
    folder = data_identity(str(tmp_path), np.int64(10), 5.0, arrays=False)
    assert folder == dict(label="JPEG CIFAR-10", dir=str(tmp_path), n_train=10, n_test=5)
    assert type(folder["n_train"]) is int and type(folder["n_test"]) is int
    monkeypatch.setenv("AIRBENCH_DATA", str(tmp_path))
    assert data_identity(None, 1, 1, arrays=False)["dir"] == str(tmp_path)


def test_a_writer_waits_for_the_lock_at_most_the_append_timeout(tmp_path, monkeypatch):
    """Another writer holding the file past APPEND_LOCK_TIMEOUT: a LockedError, not a hang."""
    import threading

    import airbench_common.records as R
    from airbench_common.files import LockedError, hold_lock
    path = tmp_path / "runs.jsonl"
    held, release = threading.Event(), threading.Event()

    def holder():
        with hold_lock(path, timeout=1):
            held.set()
            release.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    monkeypatch.setattr(R, "APPEND_LOCK_TIMEOUT", 0.2)
    try:
        with pytest.raises(LockedError, match="is being written by another process"):
            append_record(path, _rec(0))
    finally:
        release.set()
        t.join()
    assert not path.exists() or path.read_bytes() == b""


def test_a_file_replaced_by_a_device_after_the_check_is_refused(tmp_path, monkeypatch):
    import airbench_common.records as R
    path = tmp_path / "runs.jsonl"
    monkeypatch.setattr(R.os, "fstat", lambda fd: os.stat("/dev/null"))
    with pytest.raises(FileWriteError) as e:
        append_record(path, _rec(0))
    assert str(e.value) == f"{path} is not a regular file; give a file path for run records"
