"""The exact one-line messages of airbench_common's errors: the message is the interface a user
sees (the value, why it is wrong, what is accepted), so each is pinned here once."""
import os
import warnings

import pytest

from airbench_common import files, records, recipes
from airbench_common.files import FileWriteError, LockedError, atomic_write_bytes, locked, write_all
from airbench_common.records import RecordFileError, append_record, make_record, read_records
from airbench_common.validate import PathError, check_input_file, check_out_dir


def _rec(seed=0):
    return make_record(recipe="airbench94", overrides={"epochs": 1}, seed=seed,
                       framework="jax", versions={"jax": "1"}, device="cpu:0", dtype="float32",
                       flags={"f": 1}, acc=0.5, acc_tta=0.5, tta_level=2, train_seconds=1.0,
                       eval_seconds=0.1, steps=3)


def test_make_record_keeps_every_field_as_given():
    r = _rec(4)
    assert (r["schema"], r["recipe"], r["overrides"], r["seed"], r["framework"], r["versions"],
            r["device"], r["dtype"], r["flags"], r["status"]) == (
        1, "airbench94", {"epochs": 1}, 4, "jax", {"jax": "1"}, "cpu:0", "float32", {"f": 1}, "ok")


def test_record_lines_have_sorted_keys_and_no_blank_lines(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    append_record(path, _rec(1))
    raw = path.read_bytes()
    assert raw.count(b"\n") == 2 and b"\n\n" not in raw and raw.endswith(b"\n")
    import json
    for line in raw.splitlines():
        assert line.decode() == json.dumps(json.loads(line), sort_keys=True)


def test_append_messages(tmp_path, monkeypatch):
    with pytest.raises(FileWriteError) as e:
        append_record(tmp_path, _rec())
    assert str(e.value) == f"{tmp_path} is a directory; give a file path such as " \
                           f"{tmp_path / 'runs.jsonl'}"
    with pytest.raises(FileWriteError) as e:
        append_record(os.devnull, _rec())
    assert str(e.value) == (f"{os.devnull} is not a regular file (a device or a pipe?); give a "
                            "file path for run records")
    real_open = os.open

    def refuse(path, *a):
        if str(path).endswith("r.jsonl"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a)
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(FileWriteError) as e:
        append_record(tmp_path / "r.jsonl", _rec())
    assert str(e.value) == (f"cannot write run records to {tmp_path / 'r.jsonl'}: Permission "
                            "denied; choose a writable file path")
    monkeypatch.setattr(os, "open", real_open)

    def eio(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(FileWriteError) as e:
        append_record(tmp_path / "r.jsonl", _rec())
    assert str(e.value) == (f"could not write a run record to {tmp_path / 'r.jsonl'} "
                            "(Input/output error)")
    monkeypatch.undo()
    assert (tmp_path / "r.jsonl").read_bytes() == b""   # the written line was undone


def test_short_write_message_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    path = tmp_path / "r.jsonl"
    with pytest.raises(FileWriteError) as e:
        append_record(path, _rec())
    n = len(e.value.args[0].split(" of ")[1].split()[0])
    assert str(e.value).startswith(f"could not write {path}: wrote 0 of ") and n > 0
    assert str(e.value).endswith(" bytes (disk full?); free space or choose another path")


def test_write_all_oserror_message(monkeypatch):
    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(FileWriteError) as e:
        write_all(3, b"ab", "/x/f")
    assert str(e.value) == ("could not write /x/f: wrote 0 of 2 bytes (No space left on device); "
                            "free space or choose another path")


def test_read_records_messages(tmp_path):
    with pytest.raises(RecordFileError) as e:
        read_records(tmp_path)
    assert str(e.value) == (f"cannot read run records from {tmp_path}: Is a directory; give a "
                            "JSON-lines file")
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"junk\n[1]\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert read_records(path) == []
    assert [str(x.message) for x in w] == [
        f"{path}: skipping 2 line(s) that are not run records (1 foreign, 1 torn or corrupt)"]
    # (stacklevel: the warning points at the caller; not asserted, mutmut's trampoline adds a frame)


def test_atomic_write_messages_and_temporary_name(tmp_path, monkeypatch):
    seen = []
    atomic_write_bytes(tmp_path / "x.json", lambda f: f.write(b"1"), check=seen.append)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".x.json.")
    assert seen[0].name.endswith(".tmp")
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(FileWriteError) as e:
        atomic_write_bytes(f / "x.json", lambda fh: fh.write(b"1"))
    assert str(e.value) == f"cannot write {f / 'x.json'}: File exists; choose a writable place"

    def eio(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(FileWriteError) as e:
        atomic_write_bytes(tmp_path / "y", lambda fh: fh.write(b"1"))
    assert str(e.value) == (f"could not write {tmp_path / 'y'} (Input/output error); free space "
                            "or choose another path")
    monkeypatch.undo()

    def xdev(a, b):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(os, "replace", xdev)
    with pytest.raises(FileWriteError) as e:
        atomic_write_bytes(tmp_path / "z", lambda fh: fh.write(b"1"))
    assert str(e.value) == (f"could not put {tmp_path / 'z'} in place (Invalid cross-device "
                            "link); choose another path")


def test_whole_file_write_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(FileWriteError, match=f"could not write {tmp_path / 'w'}: wrote 0"):
        atomic_write_bytes(tmp_path / "w", lambda fh: fh.write(b"1"))


def test_lock_messages(tmp_path, monkeypatch):
    nested = tmp_path / "a" / "b" / "runs.jsonl"
    with locked(nested):              # parents of the lock file are created
        assert (tmp_path / "a" / "b" / "runs.jsonl.lock").exists()
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(FileWriteError) as e:
        with locked(f / "r.jsonl"):
            pass
    assert str(e.value) == f"cannot create {f}: File exists; choose a writable place"
    from filelock import Timeout

    class Taken:
        def acquire(self, timeout=None):
            raise Timeout("x")
    monkeypatch.setattr(files, "_file_lock", lambda path: Taken())
    with pytest.raises(LockedError) as e:
        with locked(tmp_path / "q"):
            pass
    assert str(e.value) == (f"{tmp_path / 'q'} is being written by another process (pid "
                            "unknown); wait for it to finish or write to another path")


def test_out_dir_and_input_file_messages(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "TemporaryFile",
                        lambda dir: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(PathError) as e:
        check_out_dir(tmp_path / "new")
    assert str(e.value) == (f"--out {tmp_path / 'new'}: cannot write in {tmp_path} (Permission "
                            "denied); choose a writable place")
    monkeypatch.undo()
    f = tmp_path / "f"
    f.write_text("")
    monkeypatch.setattr(os, "access", lambda p, m: False)
    with pytest.raises(PathError) as e:
        check_input_file(f, "--ckpt")
    assert str(e.value) == f"--ckpt {f} is not readable"


def test_recipe_messages_and_edges():
    assert recipes._field_types() == recipes._TYPES
    assert recipes._TYPES["widths"] is tuple and recipes._TYPES["lr"] is float
    assert recipes._TYPES["batch_size"] is int and recipes._TYPES["flip"] is bool
    assert "name" not in recipes._TYPES and recipes._TYPES["notes"] is str
    r = recipes.get_recipe("airbench94", batch_size=16)
    assert r.steps_per_epoch(16) == 1 and r.steps_per_epoch(47) == 2
    with pytest.raises(recipes.RecipeError) as e:
        r.steps_per_epoch(15)
    assert str(e.value) == ("airbench94: batch_size 16 is larger than the 15 training images; "
                            "lower batch_size to at most 15 (--set batch_size=N) or use more data")
    describe = recipes._describe
    assert describe((0, False, float("inf"), False)) == "a positive finite number"
    assert describe((0, True, float("inf"), False)) == "a finite number >= 0"
    assert describe((1, False, float("inf"), False)) == "a finite number > 1"
    assert describe((0, True, 1, False)) == "in [0, 1)"
    assert describe((0, False, 1, True)) == "in (0, 1]"
    for key, value, msg in [
            ("lr_end", -1, "recipe airbench94: lr_end=-1.0 must be a finite number >= 0"),
            ("whiten_kernel", 0, "recipe airbench94: whiten_kernel=0 must be in [1, 32]"),
            ("warmup_frac", 1, "recipe airbench94: warmup_frac=1.0 must be in (0, 1)"),
            ("batch_size", 0, "recipe airbench94: batch_size=0 must be a finite number >= 1"),
            ("flip", 2, "override flip=2 has the wrong type: expected true or false"),
            ("lr", "x", "override lr='x' has the wrong type: expected a number"),
            ("batch_size", 2.5, "override batch_size=2.5 has the wrong type: expected an "
                                "integer"),
            ("widths", "a", "override widths='a' has the wrong type: expected three integers "
                            "like 64,256,256"),
            ("notes", 3, "override notes=3 has the wrong type: expected a string"),
            ("optimizer", "adam", "recipe airbench94: optimizer='adam' is not one of "
                                  "['sgd', 'muon']")]:
        with pytest.raises(recipes.RecipeError) as e:
            recipes.get_recipe("airbench94", **{key: value})
        assert str(e.value) == msg


def test_float_or_nan():
    import math
    assert math.isnan(records.float_or_nan(None)) and math.isnan(records.float_or_nan("nan"))
    assert records.float_or_nan(0.5) == 0.5 and records.float_or_nan("inf") == math.inf


def test_holder_pid_in_the_message(tmp_path, monkeypatch):
    from filelock import Timeout
    from airbench_common.files import lock_paths

    class Taken:
        def acquire(self, timeout=None):
            raise Timeout("x")
    monkeypatch.setattr(files, "_file_lock", lambda path: Taken())
    path = tmp_path / "r.jsonl"
    lock_paths(path)[1].write_text("4242\n")
    with pytest.raises(LockedError, match=r"\(pid 4242\)"):
        with locked(path):
            pass
    lock_paths(path)[1].write_text("")
    with pytest.raises(LockedError, match=r"\(pid unknown\)"):
        with locked(path):
            pass


def test_out_file_messages(tmp_path, monkeypatch):
    from airbench_common.validate import check_out_file
    import tempfile
    f = tmp_path / "f"
    f.write_text("")
    cases = [(tmp_path, f"--out {tmp_path} is a directory; give a file path such as "
                        f"{tmp_path / 'runs.jsonl'}"),
             (f / "x" / "r.jsonl", f"--out {f / 'x' / 'r.jsonl'}: {f} is a file, not a "
                                   "directory; give a path under a directory"),
             ("", "--out is empty; give a file path such as runs.jsonl"),
             (os.devnull, f"--out {os.devnull} is not a regular file (a device or a pipe?); "
                          "give a file path such as runs.jsonl")]
    for path, msg in cases:
        with pytest.raises(PathError) as e:
            check_out_file(path)
        assert str(e.value) == msg
    real_open = open

    def no_append(p, mode="r", *a, **k):
        if str(p) == str(f) and "a" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(p, mode, *a, **k)
    monkeypatch.setattr("builtins.open", no_append)
    with pytest.raises(PathError) as e:
        check_out_file(f)
    assert str(e.value) == f"--out {f} cannot be written (Permission denied); choose a writable file"
    monkeypatch.undo()
    dirs = []
    real_tf = tempfile.TemporaryFile

    def spy(dir):
        dirs.append(dir)
        return real_tf(dir=dir)
    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    check_out_file(tmp_path / "new" / "r.jsonl", option="--records")
    assert dirs == [tmp_path]
    monkeypatch.setattr(tempfile, "TemporaryFile",
                        lambda dir: (_ for _ in ()).throw(OSError(30, "Read-only file system")))
    with pytest.raises(PathError) as e:
        check_out_file(tmp_path / "new" / "r.jsonl", option="--records")
    assert str(e.value) == (f"--records {tmp_path / 'new' / 'r.jsonl'}: cannot write in "
                            f"{tmp_path} (Read-only file system); choose a writable place")


def test_device_message_names_the_request():
    from airbench_common.validate import DeviceError, check_device
    with pytest.raises(DeviceError) as e:
        check_device("Bogus:1", ["cpu", "cpu:0"])
    assert str(e.value) == "device 'Bogus:1' is not available here; available: cpu, cpu:0"


def test_cpu_model_keeps_colons_in_the_name(tmp_path, monkeypatch):
    from airbench_common import env
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Vendor: Model X @ 2GHz\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/cpuinfo" else p, *a, **k))
    assert env.cpu_model() == "Vendor: Model X @ 2GHz"


def test_machine_info_env_keys(monkeypatch):
    from airbench_common import env
    keys = ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES",
            "AIRBENCH_DATA")
    for i, k in enumerate(keys):
        monkeypatch.setenv(k, f"v{i}")
    assert env.machine_info()["env"] == {k: f"v{i}" for i, k in enumerate(keys)}
