"""airbench_common.validate: counts, seeds, output paths, devices and dtypes, each refused with a
one-line UsageError that names the value and what is accepted."""
import os
import tempfile

import pytest

from airbench_common.errors import UsageError
from airbench_common.validate import (DTYPES, SEED_LIMIT, DeviceError, OptionError, PathError,
                                      check_choice, check_device, check_dtype, check_input_file,
                                      check_n_train, check_out_dir, check_out_file, check_runs,
                                      check_seeds, integer, number, unknown_device)


def test_errors_are_usage_errors():
    for cls in (OptionError, PathError, DeviceError):
        assert issubclass(cls, UsageError) and issubclass(cls, ValueError)


def test_runs():
    assert check_runs(1) == 1 and check_runs(7) == 7
    for bad in (0, -1):
        with pytest.raises(OptionError, match=rf"--runs {bad} is too small: it must be >= 1"):
            check_runs(bad)
    with pytest.raises(OptionError, match="not an integer"):
        check_runs(True)


def test_integer_edges():
    assert integer("--x", 5, low=5, high=5) == 5
    assert integer("--x", 2.0) == 2 and isinstance(integer("--x", 2.0), int)
    with pytest.raises(OptionError, match=r"--x 6 is too large: it must be <= 5"):
        integer("--x", 6, high=5)
    with pytest.raises(OptionError, match=r"--x 4 is too small: it must be >= 5"):
        integer("--x", 4, low=5)
    for bad in (2.5, float("nan"), float("inf"), "3", None):
        with pytest.raises(OptionError, match="is not an integer"):
            integer("--x", bad)


def test_seeds():
    assert check_seeds(0) == 0 and check_seeds(SEED_LIMIT - 1) == SEED_LIMIT - 1
    assert check_seeds(SEED_LIMIT - 3, runs=3) == SEED_LIMIT - 3
    with pytest.raises(OptionError, match="--seed -1 is too small"):
        check_seeds(-1)
    with pytest.raises(OptionError, match=rf"reaches seed {SEED_LIMIT}, beyond the largest seed "
                                          rf"{SEED_LIMIT - 1}"):
        check_seeds(SEED_LIMIT - 2, runs=3)


def test_n_train():
    assert check_n_train(None, 64) == 64
    assert check_n_train(1, 64) == 1 and check_n_train(64, 64) == 64
    with pytest.raises(OptionError, match="--n-train 0 is too small"):
        check_n_train(0, 64)
    with pytest.raises(OptionError, match="--n-train 65 is too large: it must be <= 64"):
        check_n_train(65, 64)


def test_choices_and_dtypes():
    assert DTYPES == ("float32", "bfloat16", "float16")
    assert check_dtype("--dtype", None) is None
    for d in DTYPES:
        assert check_dtype("--dtype", d) == d
    with pytest.raises(OptionError, match="--dtype 'int8' is not one of float32, bfloat16, float16"):
        check_dtype("--dtype", "int8")
    assert check_choice("--c", 2, (1, 2)) == 2


def test_out_file(tmp_path):
    target = tmp_path / "a" / "b" / "runs.jsonl"
    assert check_out_file(target) == target
    assert not (tmp_path / "a").exists()            # nothing is created by the check
    existing = tmp_path / "r.jsonl"
    existing.write_text("x\n")
    assert check_out_file(existing) == existing and existing.read_text() == "x\n"
    with pytest.raises(PathError, match="is a directory; give a file path such as"):
        check_out_file(tmp_path)
    with pytest.raises(PathError, match=r"r.jsonl is a file, not a directory"):
        check_out_file(existing / "sub" / "x.jsonl")
    with pytest.raises(PathError, match="--out is empty"):
        check_out_file("")
    with pytest.raises(PathError, match="not a regular file"):
        check_out_file(os.devnull)
    assert list(tmp_path.iterdir()) == [existing]  # no probe file left behind


def test_out_file_unwritable(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(PathError, match=r"cannot write in .* \(Permission denied\)"):
        check_out_file(tmp_path / "new" / "r.jsonl")
    with pytest.raises(PathError, match="Permission denied"):
        check_out_dir(tmp_path / "new")


def test_out_file_existing_unwritable(tmp_path, monkeypatch):
    f = tmp_path / "r.jsonl"
    f.write_text("")
    real_open = open

    def fake_open(path, mode="r", *a, **k):
        if str(path) == str(f) and "a" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(PathError, match="cannot be written"):
        check_out_file(f)


def test_out_dir(tmp_path):
    assert check_out_dir(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(PathError, match="is a file; give a directory"):
        check_out_dir(f)
    with pytest.raises(PathError, match="is a file, not a directory"):
        check_out_dir(f / "sub")
    with pytest.raises(PathError, match="empty"):
        check_out_dir(" ")


def test_input_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert check_input_file(f, "--ckpt") == f
    with pytest.raises(PathError, match="--ckpt .* does not exist"):
        check_input_file(tmp_path / "nope", "--ckpt")
    with pytest.raises(PathError, match="is a directory"):
        check_input_file(tmp_path, "--ckpt")


def test_devices():
    avail = ["cpu", "cpu:0", "gpu", "gpu:0", "gpu:1"]
    assert check_device(None, avail) is None
    assert check_device("cpu", avail) == "cpu" and check_device(" CPU:0 ", avail) == "cpu:0"
    assert check_device("cuda:1", avail, {"cuda": "gpu"}) == "gpu:1"
    for bad in ("cuda", "cpu:5", "bogus", "", "gpu:2"):
        with pytest.raises(DeviceError, match=r"is not available here; available: cpu, cpu:0, "
                                              r"gpu, gpu:0, gpu:1"):
            check_device(bad, avail)
    assert str(unknown_device("x", ["cpu"])) == "device 'x' is not available here; available: cpu"


def test_number():
    assert number("--margin", "0.5", low=0, low_open=True) == 0.5
    assert number("--m", 0, low=0) == 0.0 and number("--m", 3, high=3) == 3.0
    for bad, match in [("inf", "must be a finite number"), (float("nan"), "finite"),
                       (True, "finite"), ("x", "is not a number"), (None, "is not a number"),
                       (0, r"--margin 0 is too small: it must be > 0"),
                       (-1, r"--margin -1 is too small: it must be > 0")]:
        with pytest.raises(OptionError, match=match):
            number("--margin", bad, low=0, low_open=True)
    with pytest.raises(OptionError, match=r"--m -0.5 is too small: it must be >= 0"):
        number("--m", -0.5, low=0)
    with pytest.raises(OptionError, match=r"--m 4 is too large: it must be <= 3"):
        number("--m", 4, high=3)


def test_parse_seeds():
    from airbench_common.validate import parse_seeds
    assert parse_seeds("0:4") == [0, 1, 2, 3] and parse_seeds(" 3:5 ") == [3, 4]
    assert parse_seeds("7") == [7] and parse_seeds("5,2,9") == [5, 2, 9] and parse_seeds(6) == [6]
    assert parse_seeds(f"{SEED_LIMIT - 1}") == [SEED_LIMIT - 1] and parse_seeds("0") == [0]
    for bad, msg in (
            ("4:4", "--seeds '4:4' names no seed; give A:B with A < B, e.g. 0:8"),
            (" 4:4\n", "--seeds '4:4' names no seed; give A:B with A < B, e.g. 0:8"),
            ("a:b", "--seeds 'a:b' is not a seed list; give A:B (seeds A..B-1), e.g. 0:8, or "
                    "S1,S2,..."),
            ("1,,2", "--seeds '1,,2' is not a seed list; give A:B (seeds A..B-1), e.g. 0:8, or "
                     "S1,S2,..."),
            ("0:1:2", "--seeds '0:1:2' is not a seed list; give A:B (seeds A..B-1), e.g. 0:8, or "
                      "S1,S2,..."),
            ("1,2,1", "--seeds '1,2,1' names a seed twice; name each seed once"),
            ("-1:2", f"--seeds '-1:2': seed -1 is outside [0, {SEED_LIMIT})"),
            (f"0,{SEED_LIMIT}", f"--seeds '0,{SEED_LIMIT}': seed {SEED_LIMIT} is outside "
                                f"[0, {SEED_LIMIT})")):
        with pytest.raises(OptionError) as e:
            parse_seeds(bad)
        assert str(e.value) == msg
    with pytest.raises(OptionError) as e:
        parse_seeds("x", name="--examples-seeds")
    assert str(e.value).startswith("--examples-seeds 'x' is not a seed list")
