"""python -m parity.gpu_check: its options, the data subset it carries, and its CPU dry run (every
stage, the same files) without the packages a GPU machine lacks."""
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
from deliver import deliver

from airbench_common import interrupts
from parity import gpu_check as G
from parity.gpu import environment, stages, subset

ROOT = Path(__file__).resolve().parents[1]
LOSSLESS = Path(os.environ.get("AIRBENCH_LOSSLESS_SUBSET",
                               ROOT.parent / "shared" / "data" / "cifar10-lossless-subset"))
# project dependencies the GPU machines may lack: the command must not need them (rich is not
# here: flax itself imports it, flax/linen/summary.py, so a machine with flax has rich)
ABSENT_THERE = ("filelock", "hypothesis")


def _blocked_command(args):
    """(argv, env) of `python -m parity.gpu_check ARGS` from the source tree (PYTHONPATH=.) with
    ABSENT_THERE made unimportable."""
    code = ("import sys, runpy\n"
            + "".join(f"sys.modules[{m!r}] = None\n" for m in ABSENT_THERE)
            + f"sys.argv = ['parity.gpu_check'] + {list(args)!r}\n"
            + "runpy.run_module('parity.gpu_check', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return [sys.executable, "-c", code], env


def _run_blocked(args, tmp_path, timeout=600):
    """_blocked_command(args) run to its end."""
    cmd, env = _blocked_command(args)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        G.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--subset", "--budget-minutes", "--dry-run", "--make-subset", "--train",
                "--test"):
        assert opt in text


@pytest.mark.parametrize("argv, word", [(["--dry-run"], "--out"),
                                        (["--out", "x", "--budget-minutes", "0"], "budget"),
                                        (["--out", "x", "--stages", "numerics,bogus"], "bogus")])
def test_bad_options_are_one_line_exit_2(argv, word, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert G.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not (LOSSLESS / "train.npz").exists(), reason="no lossless subset")
def test_make_subset_round_trip_and_identity(tmp_path):
    from airbench_common.data import load_cifar10
    path = tmp_path / "sub.npz"
    info = subset.make_subset(path, 300, 100, LOSSLESS)
    ident, (xtr, ytr), (xte, yte) = subset.load_subset(path)
    tr, te = load_cifar10("train", LOSSLESS), load_cifar10("test", LOSSLESS)
    np.testing.assert_array_equal(xtr, tr[0][:300])
    np.testing.assert_array_equal(ytr, tr[1][:300])
    np.testing.assert_array_equal(xte, te[0][:100])
    np.testing.assert_array_equal(yte, te[1][:100])
    assert ident["sha256"] == info["sha256"] == subset.sha256(path) and len(ident["sha256"]) == 64
    assert ident["source"] == info["source"] and "first 300 train" in ident["source"]
    assert (ident["n_train"], ident["n_test"]) == (300, 100)


@pytest.mark.skipif(not (LOSSLESS / "train.npz").exists(), reason="no lossless subset")
def test_make_subset_refuses_what_cannot_travel(tmp_path, monkeypatch):
    from airbench_common.errors import UsageError
    monkeypatch.setattr(subset, "MAX_SUBSET_MIB", 0.1)
    with pytest.raises(UsageError, match="MiB"):
        subset.make_subset(tmp_path / "big.npz", 1000, 100, LOSSLESS)
    assert list(tmp_path.iterdir()) == []   # nothing half-written left behind


def test_a_corrupt_subset_is_a_dataset_error(tmp_path):
    from airbench_common.data import DatasetError
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="make-subset"):
        subset.load_subset(bad)
    np.savez(tmp_path / "partial.npz", train_images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="lacks"):
        subset.load_subset(tmp_path / "partial.npz")


def test_next_seed_skips_torn_lines(tmp_path):
    path = tmp_path / "runs.jsonl"
    assert stages.next_seed(path) == 0
    path.write_text('{"seed": 0}\n{"seed": 3, "x": 1}\n{"seed": 9, "x"')
    assert stages.next_seed(path) == 4


def test_xla_flags_only_where_the_user_set_none(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    got = environment.setup_environment()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x" and got["XLA_FLAGS"]["set_by"] == "user"
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.delenv("XLA_FLAGS")
    got = environment.setup_environment()
    assert got["XLA_FLAGS"]["set_by"] == "parity.gpu_check"
    assert set(got["XLA_FLAGS"]["reasons"]) == {f for f, _ in environment.XLA_FLAGS}
    assert all(len(why) > 20 for _, why in environment.XLA_FLAGS)   # each flag says why


@pytest.mark.slow
def test_dry_run_writes_every_stage_without_the_absent_packages(tmp_path):
    out = tmp_path / "out"
    p = _run_blocked(["--dry-run", "--out", str(out), "--max-pairs", "1"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok", summary
    assert set(summary["stages"]) == {"environment", "numerics", "throughput", "runs"}
    assert all(s["status"] == "ok" for s in summary["stages"].values())
    print({k: s["seconds"] for k, s in summary["stages"].items()}, os.getloadavg())
    env = json.loads((out / "environment.json").read_text())
    assert env["env_set"]["XLA_FLAGS"]["set_by"] == "parity.gpu_check"
    assert env["default_precision_policy"] == "float32"        # a CPU
    num = json.loads((out / "numerics.json").read_text())
    assert num["rows"] and summary["stages"]["numerics"]["failed"] == 0
    tp = json.loads((out / "throughput.json").read_text())
    assert set(tp["images_per_second"]) == {"jax", "torch"} and tp["jax_compile_seconds"] > 0
    recs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["framework"] for r in recs) == ["jax", "torch"]
    for r in recs:
        assert r["precision"]["name"] == "float32" and r["preset"] == "gpu_check"
        assert r["data"]["source"].startswith("synthetic")
    # a second command (a GPU command runs ~8 minutes at most) adds pairs with the next seeds and
    # keeps the stages it did not re-run
    p = _run_blocked(["--dry-run", "--out", str(out), "--max-pairs", "1", "--stages", "runs"],
                     tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["framework"], r["seed"]) for r in recs) == [("jax", 0), ("jax", 1),
                                                                  ("torch", 0), ("torch", 1)]
    again = json.loads((out / "summary.json").read_text())
    assert set(again["stages"]) == set(summary["stages"]) and again["status"] == "ok"
    assert again["stages"]["numerics"] == summary["stages"]["numerics"]


def _check_with_stages(monkeypatch, tmp_path, **stage_fns):
    """check() in-process on a dry run whose stages are `stage_fns` (environment quick and ok;
    a stage not given fails the test if it runs)."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_user_flag")      # restored after the test
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    monkeypatch.setenv("AIRBENCH_DATA", str(tmp_path / "data"))

    def must_not_run(*a, **k):
        raise AssertionError("a stage after the budget ran")
    monkeypatch.setattr(G, "environment", lambda env_set: dict(jax="x", gpu=None))
    for name in ("numerics", "throughput", "runs"):
        monkeypatch.setattr(G, name, stage_fns.get(name, must_not_run))
    return G.check(tmp_path / "out", budget_minutes=stage_fns.get("budget", 1.0), dry_run=True,
                   log=lambda _: None)


def _catching_exception(out, dry):   # a numerics row that records its error
    try:
        deliver(signal.SIGALRM)   # the budget's alarm, now
    except Exception:   # noqa: BLE001 - the point of the test
        pass
    return dict(status="ok")


def _wrapping(out, dry):   # a library re-raising whatever it caught as its own error
    try:
        deliver(signal.SIGALRM)   # the budget's alarm, now
    except BaseException as exc:   # noqa: BLE001 - the point of the test
        raise RuntimeError("wrapped") from exc


def _swallowing(out, dry):   # a cache that treats any failed lookup as a miss, and goes on
    try:
        deliver(signal.SIGALRM)   # the budget's alarm, now
    except BaseException:   # noqa: BLE001 - the point of the test
        pass
    return dict(status="ok")


@pytest.mark.parametrize("stage", [_catching_exception, _wrapping, _swallowing])
def test_the_budget_alarm_stops_the_check_whatever_the_stage_catches(stage, monkeypatch,
                                                                      tmp_path):
    before = signal.getsignal(signal.SIGALRM)
    s = _check_with_stages(monkeypatch, tmp_path, numerics=stage)
    assert s["status"].startswith("stopped: time budget"), s
    assert s["stages"]["environment"]["status"] == "ok"
    assert s["stages"]["numerics"]["status"].startswith("stopped"), s
    assert set(s["stages"]) == {"environment", "numerics"}   # throughput, runs never started
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == s["status"]
    assert signal.getsignal(signal.SIGALRM) is before   # the handlers are given back


def test_a_swallowed_ctrl_c_stops_the_check_after_that_stage(monkeypatch, tmp_path, ctrl_c):
    def swallowing_ctrl_c(out, dry):
        try:
            deliver(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return dict(status="ok")
    with interrupts.remembered_sigint():   # as errors.cli_main installs it around main()
        s = _check_with_stages(monkeypatch, tmp_path, numerics=swallowing_ctrl_c)
    assert s["status"].startswith("stopped: Ctrl-C"), s
    assert s["stages"]["numerics"]["status"].startswith("stopped")
    assert "throughput" not in s["stages"]


def test_an_error_inside_the_budget_is_that_stage_s_failure(monkeypatch, tmp_path):
    def broken(out, dry):
        raise RuntimeError("broken stage")
    s = _check_with_stages(monkeypatch, tmp_path, numerics=broken,
                           throughput=lambda *a: dict(status="ok"),
                           runs=lambda *a: dict(status="ok"))
    assert s["status"] == "failed" and s["stages"]["numerics"]["status"] == "error"
    assert s["stages"]["runs"]["status"] == "ok"   # one stage's failure is a result; go on


def _stage_done(summary_path, stage) -> bool:
    try:
        return stage in json.loads(summary_path.read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return False


@pytest.mark.slow
def test_sigterm_ends_cleanly_with_what_was_measured(tmp_path):
    """The real command, stopped by SIGTERM once the environment stage is recorded (no timing
    assumption: it waits for summary.json to say so, then signals)."""
    out = tmp_path / "out"
    cmd, env = _blocked_command(["--dry-run", "--out", str(out)])
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    # summary.json (written whole) records the stage once it has ended: environment.json alone
    # appears a moment before, while the stage could still be stopped
    while not _stage_done(out / "summary.json", "environment") and p.poll() is None:
        assert time.time() < deadline, "the environment stage never ended"
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert p.returncode == 1 and summary["status"].startswith("stopped: SIGTERM"), err[-3000:]
    assert summary["stages"]["environment"]["status"] == "ok"
    # the signal lands inside a stage (that stage says stopped) or between two (none does)
    stopped = [k for k, s in summary["stages"].items() if s["status"].startswith("stopped")]
    assert len(stopped) <= 1 and "Traceback" not in err
    assert all(s["status"] == "ok" for k, s in summary["stages"].items() if k not in stopped)


@pytest.mark.parametrize("study, word", [
    ("airbench94_muon:jax,torch", "RECIPE:ARMS:RUNS"), ("nope:jax:3", "unknown recipe"),
    ("airbench94:jax,cuda:3", "arms are jax, torch, upstream"),
    ("airbench94:jax:0", "must be a whole number in 1..200")])
def test_bad_studies_are_one_line(study, word, capsys, tmp_path):
    assert G.main(["--out", str(tmp_path / "o"), "--study", study, "--data-dir",
                   str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


def test_a_study_needs_all_the_data(capsys, tmp_path):
    assert G.main(["--out", str(tmp_path / "o"), "--study", "airbench94:jax:3"]) == 2
    assert "--study needs --data-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_studies_dry_run_stops_by_itself(tmp_path):
    """The prepared GPU command's CPU dry run: one study, preset smoke on synthetic images, at
    most 3 runs per arm, the commit recorded; it ends by itself well inside its budget, and
    leaves $AIRBENCH_DATA as it found it (it points the numerics stage elsewhere meanwhile)."""
    before = os.environ.get("AIRBENCH_DATA")
    out = tmp_path / "gpu"
    code = G.main(["--dry-run", "--out", str(out), "--study", "airbench94_muon:jax,torch:10",
                   "--commit", "0123456789ab", "--budget-minutes", "20"])
    summary = json.loads((out / "summary.json").read_text())
    assert code in (0, 1) and summary["commit"] == "0123456789ab"
    study = summary["stages"]["studies"]
    assert study["commit"] == "0123456789ab" and study["data"]["train"] == 2000
    s = study["studies"]["airbench94_muon"]
    assert s["status"] == "ok" and s["verdict"] not in (None, "undecided")
    runs = [json.loads(x) for x in (out / "compare-airbench94_muon" / "runs.jsonl").open()]
    assert len(runs) <= 6 and {r["framework"] for r in runs} == {"jax", "torch"}
    assert (out / "compare-airbench94_muon" / "COMMIT").read_text().strip() == "0123456789ab"
    assert summary["seconds"] < 20 * 60 * 0.9
    assert os.environ.get("AIRBENCH_DATA") == before
