"""Fault injection: every bad input a one-line error with exit status 2, every fault survived.

Bad command-line values are tried on both implementation CLIs, in process (fast) and as real
subprocesses (slow: exit status 2, exactly one line on stderr, no traceback). Then SIGINT mid-run,
a full disk (a patched os.write, and a tiny tmpfs where this user may mount one), a read-only
output, concurrent writers, corrupt and foreign records and corrupt checkpoints.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from airbench_common import records
from airbench_common.errors import UsageError, cli_main
from airbench_common.files import FileWriteError, LockedError, locked, write_json_atomic
from airbench_common.records import append_record, make_record, read_records

REPO = Path(__file__).resolve().parents[1]
CLIS = ("airbench_jax", "airbench_torch")


def _rec(seed, acc=0.9):
    return make_record(recipe="airbench94", overrides={}, seed=seed, framework="jax",
                       versions={}, device="cpu", dtype="float32", flags={}, acc=acc,
                       acc_tta=acc, tta_level=2, train_seconds=1.0, eval_seconds=0.1, steps=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """64 train / 32 test random images, in our .npz cache format."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    return d


TINY = ["--set", "widths=4,8,8", "--set", "batch_size=16", "--set", "whiten_images=16",
        "--epochs", "1", "--quiet"]

# (case id, extra arguments, a fragment the one-line message must hold). {tmp}: a fresh folder;
# {file}: an existing regular file there.
BAD = [
    ("device cuda", ["--device", "cuda"], "available: cpu"),
    ("device gpu", ["--device", "gpu"], "available: cpu"),
    ("device cpu:5", ["--device", "cpu:5"], "available: cpu"),
    ("device bogus", ["--device", "bogus"], "not available"),
    ("device empty", ["--device", ""], "not available"),
    ("set name=evil", ["--set", "name=evil"], "unknown hyper-parameter 'name'"),
    ("set unknown key", ["--set", "bogus=1"], "unknown hyper-parameter 'bogus'"),
    ("set without =", ["--set", "lr"], "key=value"),
    ("set empty key", ["--set", "=5"], "unknown hyper-parameter ''"),
    ("set key twice", ["--set", "lr=1", "--set", "lr=2"], "given twice"),
    ("set lr=abc", ["--set", "lr=abc"], "wrong type"),
    ("set lr=inf", ["--set", "lr=inf"], "finite"),
    ("set lr=1e400", ["--set", "lr=1e400"], "finite"),
    ("set lr_end=-1", ["--set", "lr_end=-1"], "lr_end=-1.0"),
    ("set weight_decay=nan", ["--set", "weight_decay=nan"], "weight_decay=nan"),
    ("set whiten_kernel=0", ["--set", "whiten_kernel=0"], "whiten_kernel=0"),
    ("set whiten_kernel=33", ["--set", "whiten_kernel=33"], "whiten_kernel=33"),
    ("set batch_size=2.5", ["--set", "batch_size=2.5"], "integer"),
    ("set batch_size=0", ["--set", "batch_size=0"], "batch_size=0"),
    ("set widths=a,b,c", ["--set", "widths=a,b,c"], "three integers"),
    ("set widths=4,8", ["--set", "widths=4,8"], "three positive integers"),
    ("set widths=4,0,8", ["--set", "widths=4,0,8"], "three positive integers"),
    ("set flip=maybe", ["--set", "flip=maybe"], "true or false"),
    ("set tta_level=5", ["--set", "tta_level=5"], "not one of"),
    ("set scaling_factor=-1", ["--set", "scaling_factor=-1"], "scaling_factor=-1.0"),
    ("set optimizer=adam", ["--set", "optimizer=adam"], "not one of"),
    ("set momentum=1", ["--set", "momentum=1"], "momentum=1.0"),
    ("set filter_keep >= batch", ["--set", "filter_keep=16"], "smaller than batch_size"),
    ("batch larger than data", ["--set", "batch_size=100"], "larger than the 64"),
    ("epochs 0", ["--epochs", "0"], "epochs=0.0"),
    ("epochs nan", ["--epochs", "nan"], "epochs=nan"),
    ("epochs twice", ["--set", "epochs=2"], "both given"),
    ("runs 0", ["--runs", "0"], "--runs 0"),
    ("runs -1", ["--runs", "-1"], "--runs -1"),
    ("runs 1.5", ["--runs", "1.5"], "invalid int"),
    ("n-train 0", ["--n-train", "0"], "--n-train 0"),
    ("n-train -5", ["--n-train", "-5"], "--n-train -5"),
    ("n-train beyond the data", ["--n-train", "1000000"], "<= 64"),
    ("seed -1", ["--seed", "-1"], "--seed -1"),
    ("seed 2**70", ["--seed", str(2 ** 70)], "--seed"),
    ("out is a directory", ["--out", "{tmp}"], "is a directory"),
    ("out parent is a file", ["--out", "{file}/r.jsonl"], "is a file"),
    ("out empty", ["--out", ""], "empty"),
    ("out a device", ["--out", "/dev/null"], "not a regular file"),
    ("dtype int8", ["--dtype", "int8"], "invalid choice"),
    ("ns-dtype int8", ["--ns-dtype", "int8"], "invalid choice"),
    ("recipe nope", ["--recipe", "nope"], "unknown recipe"),
    ("recipe empty", ["--recipe", ""], "unknown recipe"),
    ("unknown option", ["--bogus"], "unrecognized arguments"),
    ("data-dir corrupt npz", ["--data-dir", "{tmp}"], "is not an .npz archive"),
    ("data-dir is a file", ["--data-dir", "{file}"], "is a file, not a folder"),
]
# PyTorch computes in the dtype it stores: a policy with other stored weights is refused
# (--dtype bfloat16 alone is a valid policy on both sides since the shared precision policy)
TORCH_ONLY = [("mixed params/compute (torch)", ["--dtype", "float32", "--param-dtype", "bfloat16"],
               "computes in the dtype it stores")]


def _args(extra, tiny, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "train.npz").write_bytes(b"not a zip")
    args = [a.format(tmp=tmp_path, file=tmp_path / "afile") for a in extra]
    base = ["--data-dir", str(tiny)] if "--data-dir" not in args else []
    # TINY's settings, less those the case sets itself
    keys = {a.split("=")[0] for a in args if "=" in a}
    skip = {"--epochs"} if "--epochs" in args else set()
    i = 0
    while i < len(TINY):
        pair = TINY[i:i + 2]
        if pair[0] == "--quiet":
            base.append("--quiet")
            i += 1
            continue
        if not (pair[0] in skip or (pair[0] == "--set" and pair[1].split("=")[0] in keys)):
            base += pair
        i += 2
    if "--out" not in args:
        base += ["--out", str(tmp_path / "runs.jsonl")]
    return base + args


def _main(cli):
    if cli == "airbench_jax":
        from airbench_jax.__main__ import main
    else:
        from airbench_torch.__main__ import main
    return main


# one case of each kind as a real subprocess (the in-process test covers every case)
SUBPROCESS = {"device cuda", "device cpu:5", "set name=evil", "set lr=abc", "set lr_end=-1",
              "set whiten_kernel=0", "runs 0", "n-train 0", "seed 2**70", "out is a directory",
              "out parent is a file", "dtype int8", "recipe nope", "unknown option",
              "data-dir corrupt npz", "dtype bfloat16 on CPU (torch)"}


def _cases(subset=None):
    cases = ([pytest.param(cli, *c, id=f"{cli}:{c[0]}") for cli in CLIS for c in BAD]
             + [pytest.param("airbench_torch", *c, id=f"airbench_torch:{c[0]}")
                for c in TORCH_ONLY])
    return [c for c in cases if subset is None or c.values[1] in subset]


@pytest.mark.parametrize("cli,case,extra,fragment", _cases())
def test_bad_value_is_one_line_exit_2_in_process(cli, case, extra, fragment, tiny, tmp_path,
                                                 capsys, monkeypatch):
    monkeypatch.setenv("AIRBENCH_CIFAR10_URL", "file:///nonexistent/cifar.tar.gz")
    status = _main(cli)(_args(extra, tiny, tmp_path))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert fragment in lines[0], lines[0]
    assert not (tmp_path / "runs.jsonl").exists()  # refused before anything ran or was written


def _run(cli, args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "AIRBENCH_CIFAR10_URL": "file:///nonexistent/cifar.tar.gz"}
    return subprocess.run([sys.executable, "-m", cli, *args], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


def assert_one_line_error(proc, code=2):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("cli,case,extra,fragment", _cases(SUBPROCESS))
def test_bad_value_is_one_line_exit_2_subprocess(cli, case, extra, fragment, tiny, tmp_path):
    line = assert_one_line_error(_run(cli, _args(extra, tiny, tmp_path)))
    assert fragment in line, line


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_verbose_adds_the_traceback(cli, tiny, tmp_path):
    proc = _run(cli, _args(["--runs", "0", "--verbose"], tiny, tmp_path))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "--runs 0" in proc.stderr


# ---------------------------------------------------------------------- interrupts
@pytest.mark.slow
def test_sigint_mid_run_keeps_finished_runs(tiny, tmp_path):
    """Ctrl-C during run 2 of 3 of the JAX CLI: one line, exit 130, run 1's record intact."""
    out = tmp_path / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    # 400 epochs of 4 steps: each run takes seconds even on a fast idle machine, so the signal
    # lands inside run 2 (with 30 epochs runs 2 and 3 could finish before it: exit 0 or 2)
    args = ["--data-dir", str(tiny), *TINY, "--epochs", "400", "--runs", "3", "--out", str(out)]
    # SIGINT's default disposition in the child: a shell that starts this suite in the background
    # (`.ci/run &`) ignores SIGINT, the child would inherit that, and Python installs no
    # KeyboardInterrupt handler for an ignored SIGINT (the Ctrl-C would be lost, not the CLI's bug)
    proc = subprocess.Popen([sys.executable, "-m", "airbench_jax", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 400
        while not (out.exists() and out.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the first run did not finish in time"
            time.sleep(0.2)
        time.sleep(0.5)  # into the second run
        # one Ctrl-C suffices: where library code swallows its KeyboardInterrupt (JAX has bare
        # `except:` clauses), the CLI still stops at the end of run 2 (airbench_common.interrupts)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.strip().splitlines() if line.strip()]
    # a tiny net may collapse (one class everywhere): its run is then recorded as diverged with
    # one line of its own, before the interruption's line
    collapsed = [line for line in lines[:-1] if "diverged: collapsed" in line]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(lines) == 1 + len(collapsed) and len(collapsed) <= 1, err
    assert "interrupted" in lines[-1] and str(out) in lines[-1]
    recs = read_records(out)
    assert len(recs) >= 1 and recs[0]["seed"] == 0
    assert recs[0]["status"] == ("diverged" if collapsed else "ok")


def test_keyboard_interrupt_is_one_line_exit_130(capsys):
    @cli_main
    def main(argv=None):
        raise KeyboardInterrupt("interrupted (Ctrl-C) in run 1; 1 finished run(s) are in r.jsonl")
    assert main([]) == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted (Ctrl-C) in run 1; 1 finished run(s) are in r.jsonl")


# ---------------------------------------------------------------------- full disk
def test_short_write_raises_and_counts_nothing(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    size = path.stat().st_size
    real_write = os.write
    calls = []

    def short_then_stuck(fd, data):  # 10 bytes, then the disk is full (0 bytes written)
        calls.append(len(data))
        return real_write(fd, bytes(data)[:10]) if len(calls) == 1 else 0
    monkeypatch.setattr(os, "write", short_then_stuck)
    with pytest.raises(FileWriteError, match=r"wrote 10 of \d+ bytes"):
        append_record(path, _rec(1))
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size           # the partial line was undone
    assert [r["seed"] for r in read_records(path)] == [0]
    append_record(path, _rec(2))                  # and the file goes on cleanly
    assert [r["seed"] for r in read_records(path)] == [0, 2]


def test_enospc_raises_and_counts_nothing(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))

    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(FileWriteError, match="No space left"):
        append_record(path, _rec(1))
    monkeypatch.undo()
    assert [r["seed"] for r in read_records(path)] == [0]


def test_atomic_json_on_a_short_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"a": 1})
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(FileWriteError):
        write_json_atomic(path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1


@pytest.fixture
def tmpfs(tmp_path):
    """A mount point for a tiny tmpfs (root only: skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = []

    def mount(opts):
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                           capture_output=True)
        if p.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt
    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], capture_output=True)


def test_real_full_disk(tmpfs):
    mnt = tmpfs("size=64k")
    path = mnt / "runs.jsonl"
    filler = mnt / "filler"
    filler.touch()
    append_record(path, _rec(0))
    with open(filler, "ab", buffering=0) as f:  # fill the rest of the disk
        try:
            while True:
                f.write(b"x" * 1024)
        except OSError:
            pass
    size = path.stat().st_size
    with pytest.raises(FileWriteError):
        for s in range(1, 50):  # whatever slack the last block has, the disk fills up
            append_record(path, _rec(s))
    assert path.stat().st_size <= size + 50 * 4096
    recs = read_records(path)
    assert [r["seed"] for r in recs] == list(range(len(recs)))  # whole records only


@pytest.mark.slow
def test_real_read_only_output_refused_before_training(tmpfs, tiny):
    mnt = tmpfs("ro,size=16k")
    proc = _run("airbench_jax", ["--data-dir", str(tiny), *TINY, "--out", str(mnt / "r.jsonl")])
    line = assert_one_line_error(proc)
    assert "cannot write in" in line and "Read-only" in line


def test_read_only_output_refused(tmpfs, tiny, capsys):
    from airbench_jax.__main__ import main
    mnt = tmpfs("ro,size=16k")
    assert main(["--data-dir", str(tiny), *TINY, "--out", str(mnt / "sub" / "r.jsonl")]) == 2
    assert "Read-only file system" in capsys.readouterr().err


# ---------------------------------------------------------------------- files and locks
def test_record_and_report_files_are_0644(tmp_path):
    old = os.umask(0o077)
    try:
        append_record(tmp_path / "runs.jsonl", _rec(0))
        write_json_atomic(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("runs.jsonl", "report.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_out_directory_refused_by_append(tmp_path):
    with pytest.raises(FileWriteError, match="is a directory"):
        append_record(tmp_path, _rec(0))


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "runs.jsonl"
    code = ("import sys, time; from airbench_common.files import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            with locked(path):
                pass
        holder.kill()  # kill -9: the OS drops the lock with the process
        holder.wait()
        with locked(path):
            append_record(path, _rec(0))  # the holder may append to what it holds
    finally:
        if holder.poll() is None:
            holder.kill()
    assert [r["seed"] for r in read_records(path)] == [0]


def test_append_waits_for_a_holder_then_refuses(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    code = ("import sys, time; from airbench_common.files import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    monkeypatch.setattr(records, "APPEND_LOCK_TIMEOUT", 0.3)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            append_record(path, _rec(0))
    finally:
        holder.kill()
        holder.wait()
    assert read_records(path) == []


# ---------------------------------------------------------------------- records read back
def test_corrupt_and_foreign_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n")                      # corrupt bytes
        f.write(b"[1, 2, 3]\n")                               # JSON, not a record
        f.write(b'{"seed": 5, "acc": 0.9}\n')                 # a dict lacking fields
        f.write(json.dumps({**_rec(6), "schema": 99}).encode() + b"\n")  # another schema
        f.write(b"\n   \n")                                   # blank lines: ignored
    append_record(path, _rec(1))
    with open(path, "ab") as f:
        f.write(b'{"schema": 1, "recipe": "airb')             # torn last line
    with pytest.warns(UserWarning, match=r"skipping 5 line\(s\).*3 foreign, 2 torn or corrupt"):
        assert [r["seed"] for r in read_records(path)] == [0, 1]


def test_records_path_is_a_directory(tmp_path):
    with pytest.raises(UsageError, match="cannot read run records"):
        read_records(tmp_path)


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("content,fragment", [
    (b"", "empty"), (b"PK\x03\x04garbage", "truncated or corrupt .npz"),
    (b"\x93NUMPY not msgpack", "neither an .npz nor a msgpack")])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, content, fragment):
    from airbench_jax import load_checkpoint
    path = tmp_path / "net.ckpt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=fragment) as info:
        load_checkpoint(path, "airbench94")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("framework", ["airbench_jax", "airbench_torch"])
def test_library_run_on_zero_training_images_is_a_one_line_error(framework):
    """run_recipe with an empty training set: a DatasetError naming the problem, before any work."""
    import importlib
    from airbench_common.errors import UsageError
    package = importlib.import_module(framework)
    empty = (np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0,), np.int64))
    test = (np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))
    with pytest.raises(UsageError, match="train_data: 0 images, expected at least 1"):
        package.run_recipe("airbench94", 0, train_data=empty, test_data=test, device="cpu")


# ---------------------------------------------------------------------- compare and gpu_check
# found by benchmarks/fault_table.py at the commit that added these tests (tracebacks before)
def _compare(argv):
    from parity.study.compare import main
    return main(["--preset", "smoke", "--no-progress", "--no-plots", *argv])


def test_compare_out_naming_a_file_is_one_line(tiny, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _compare(["--data-dir", str(tiny), "--out", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err and afile.read_text() == "x"


def test_compare_read_only_out_is_one_line(tmpfs, tiny, capsys):
    mnt = tmpfs("ro,size=16k")
    assert _compare(["--data-dir", str(tiny), "--out", str(mnt / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Read-only file system" in err


@pytest.mark.parametrize("address", ["bogus", "tcp://host", "tcp://host:port"])
def test_scheduler_without_a_port_is_refused(address):
    from parity.study.engine import EngineError, parse_scheduler
    with pytest.raises(EngineError, match="not an address with a port"):
        parse_scheduler(address)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")


def test_gpu_check_read_only_out_and_zero_pairs(tmpfs, tmp_path, capsys):
    from parity.gpu_check import main
    mnt = tmpfs("ro,size=16k")
    assert main(["--out", str(mnt / "g"), "--dry-run"]) == 2
    assert "Read-only file system" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "g"), "--max-pairs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-pairs 0" in err
    assert not (tmp_path / "g").exists()


def test_gpu_check_subset_that_is_not_npz_never_suggests_pickle(tmp_path):
    from parity.gpu_check import load_subset
    bad = tmp_path / "subset.npz"
    bad.write_text("x")
    with pytest.raises(UsageError, match="not an .npz of arrays") as info:
        load_subset(bad)
    assert "pickle" not in str(info.value)


@pytest.mark.parametrize("recipe,key", [("airbench94_muon", "lr"), ("airbench94_muon", "lr_end"),
                                        ("airbench94", "muon_lr"), ("airbench94", "head_lr")])
def test_override_the_optimizer_never_reads_is_refused(recipe, key):
    """--set lr=1e6 on airbench94_muon (parity.compare's default) was accepted and ignored: the
    runs came back 'ok' as if a collapse-inducing rate had been survived."""
    from airbench_common.recipes import RecipeError, get_recipe
    with pytest.raises(RecipeError, match=f"{key}=.* would be ignored"):
        get_recipe(recipe, **{key: 0.5})
    base = get_recipe(recipe)
    assert get_recipe(recipe, **{key: getattr(base, key)}) == base  # the default itself: harmless


@pytest.mark.parametrize("module, argv", [
    ("parity.compare", ["--recipe", "nope"]),
    ("parity.compare", ["--runs", "--margin"]),
    ("parity.gpu_check", ["--budget-minutes", "x"]),
])
def test_parity_option_errors_are_one_line(module, argv, capsys):
    """argparse's own errors (an unknown choice, a missing or mistyped value) are one line and
    exit 2 like every other bad value, not argparse's usage text (seen: 11 lines before)."""
    import importlib
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument ") and "--help" in err[0], err
