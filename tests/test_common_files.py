"""airbench_common.files: whole writes, atomic replacement with a check, modes, JSON, locks."""
import json
import math
import os

import numpy as np
import pytest

from airbench_common import files
from airbench_common.files import (FileWriteError, LockedError, atomic_write_bytes, jsonable,
                                   lock_paths, locked, write_all, write_json_atomic)


def test_write_all_loops_over_partial_writes(tmp_path, monkeypatch):
    real = os.write
    calls = []

    def three_bytes(fd, data):
        calls.append(1)
        return real(fd, bytes(data)[:3])
    monkeypatch.setattr(os, "write", three_bytes)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    write_all(fd, b"0123456789", "f")
    os.close(fd)
    monkeypatch.undo()
    assert (tmp_path / "f").read_bytes() == b"0123456789" and len(calls) == 4


def test_write_all_no_progress_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(FileWriteError, match=r"could not write f: wrote 0 of 4 bytes \(disk "
                                             r"full\?\)"):
        write_all(3, b"abcd", "f")


def test_atomic_write_check_refuses_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write_bytes(path, lambda f: f.write(b"old"))
    seen = []

    def check(tmp):
        seen.append(tmp.read_bytes())
        raise ValueError("bad content")
    with pytest.raises(ValueError, match="bad content"):
        atomic_write_bytes(path, lambda f: f.write(b"new"), check=check)
    assert seen == [b"new"] and path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]   # no temporary left


def test_atomic_write_mode_and_parents(tmp_path):
    old = os.umask(0o077)
    try:
        path = tmp_path / "a" / "b" / "x.json"
        write_json_atomic(path, {"b": (1, 2), "a": float("nan"), "c": np.float32(0.5)})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": "nan", "b": [1, 2], "c": 0.5}
    assert text.startswith('{\n  "a"')  # indent 2


def test_atomic_write_into_a_file_parent_is_a_one_line_error(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(FileWriteError, match="cannot write .*; choose a writable place"):
        atomic_write_bytes(f / "x.json", lambda fh: fh.write(b"{}"))


def test_atomic_write_replace_failure(tmp_path, monkeypatch):
    def fail(a, b):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(FileWriteError, match="could not put .* in place"):
        atomic_write_bytes(tmp_path / "x", lambda fh: fh.write(b"1"))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_fsync_failure(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(FileWriteError, match=r"Input/output error"):
        atomic_write_bytes(tmp_path / "x", lambda fh: fh.write(b"1"))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_jsonable():
    out = jsonable({1: (np.int64(3), [np.float64(math.inf), -math.inf]), "k": {"n": math.nan}})
    assert out == {"1": [3, ["inf", "-inf"]], "k": {"n": "nan"}}
    assert type(out["1"][0]) is int
    assert jsonable(np.array([1, 2])).tolist() == [1, 2]  # arrays (ndim 1) are left alone


def test_locked_is_reentrant_and_names_its_pid_file(tmp_path):
    path = tmp_path / "runs.jsonl"
    lock_file, pid_file = lock_paths(path)
    assert (lock_file.name, pid_file.name) == ("runs.jsonl.lock", "runs.jsonl.lock.pid")
    with locked(path):
        assert pid_file.read_text() == f"{os.getpid()}\n"
        with locked(path):  # the same process may nest
            pass
        assert pid_file.exists()
    assert not pid_file.exists()


def test_lock_message_without_a_pid_file(tmp_path, monkeypatch):
    from filelock import Timeout

    class Taken:
        def acquire(self, timeout=None):
            raise Timeout(str(tmp_path / "x.lock"))
    monkeypatch.setattr(files, "_file_lock", lambda path: Taken())
    with pytest.raises(LockedError, match=r"being written by another process \(pid unknown\)"):
        with locked(tmp_path / "x"):
            pass


def test_lock_in_an_unwritable_place(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(FileWriteError, match="cannot create"):
        with locked(f / "runs.jsonl"):
            pass


def test_write_json_atomic_default_and_indent(tmp_path):
    class Odd:
        def __str__(self):
            return "odd"
    write_json_atomic(tmp_path / "x.json", {"o": Odd()}, indent=1, default=str)
    assert (tmp_path / "x.json").read_text() == '{\n "o": "odd"\n}\n'
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "y.json", {"o": Odd()})
    assert not (tmp_path / "y.json").exists()


def test_atomic_writer_takes_zip_writers(tmp_path):
    """zipfile asks the file for tell() and seekable(); the atomic writer's file object answers
    so that the archive comes out whole and readable."""
    import zipfile

    def write(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr("a.txt", "first")
            z.writestr("b.txt", "second" * 100)
    path = tmp_path / "a.zip"
    atomic_write_bytes(path, write)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.read("a.txt") == b"first" and z.read("b.txt") == b"second" * 100
