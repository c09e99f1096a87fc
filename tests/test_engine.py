"""parity.study.engine: a comparison's runs as tasks keyed by (comparison, framework, seed) on a Dask
cluster or as shards of a job array; a lost worker loses at most its unfinished run."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from airbench_common.workload import Workload
from airbench_common.records import read_records
from parity.study import compare, engine
from parity.study import config as C
from parity.study.store import RunFolder

REPO = Path(__file__).resolve().parents[1]
# one thread per run in every process (workers, shards, the single-process reference), so the
# same seed gives the same bits wherever it runs
PINNED = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
              XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("test", 1000)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    return d


def _config(data_dir, runs=3):
    probe = C.make_config("airbench94_muon", "smoke", {}, ["jax", "torch"], runs, 0.5,
                          str(data_dir))
    tr, te = C.load_subsets(probe)
    return C.make_config("airbench94_muon", "smoke", {}, ["jax", "torch"], runs, 0.5,
                         str(data_dir), identity=C.data_identity(tr, te))


class FakeRunner(Workload):
    def __init__(self, framework, calls):
        self.framework, self.calls = framework, calls

    def warmup(self, options):
        pass

    def run(self, options, seed):
        from airbench_common.records import make_record
        self.calls.append((self.framework, seed))
        rec = make_record(recipe=options.recipe, overrides={}, seed=seed,
                          framework=self.framework, versions={}, device="cpu", dtype="float32",
                          flags={}, acc=0.9, acc_tta=0.9 + 0.001 * seed, tta_level=2,
                          train_seconds=1.0, eval_seconds=0.1, steps=4, data=dict(options.data))
        rec["_predictions"] = np.asarray(options.test_data[1]).astype(np.uint8)
        return rec


# ----------------------------------------------------------------------------- fast
def test_task_keys_and_shards_partition_the_sweep(data_dir):
    cfg = _config(data_dir, runs=5)
    tasks = engine.sweep_tasks(cfg)
    assert tasks[:3] == [("jax", 0), ("torch", 0), ("jax", 1)] and len(tasks) == 10
    shards = [engine.shard_tasks(tasks, i, 3) for i in range(3)]
    assert sorted(t for s in shards for t in s) == sorted(tasks)        # every task once
    assert [len(s) for s in shards] == [4, 3, 3]
    k = engine.task_key(cfg, "jax", 4)
    assert cfg["config_hash"] in k and k.endswith("jax-seed4")
    assert engine.task_key(_config(data_dir, runs=7), "jax", 4) == k    # runs: not identity
    assert engine.parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/3", "0/0"):
        with pytest.raises(engine.EngineError):
            engine.parse_shard(bad)


def test_shards_cover_the_sweep_once_and_a_rerun_skips_done_runs(tmp_path, data_dir, capsys):
    """Two shards (in turn, here) write every (framework, seed) of --runs 3 exactly once; a
    shard run again runs nothing; the record of a task that runs twice is appended once."""
    calls = []
    runners = {fw: FakeRunner(fw, calls) for fw in ("jax", "torch")}
    out = tmp_path / "out"
    base = ["--preset", "smoke", "--runs", "3", "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", "--no-plots"]
    for i in (0, 1):
        assert compare.main(base + ["--shard", f"{i}/2"], workloads=runners) == 0
    recs = read_records(out / "runs.jsonl")
    keys = Counter((r["framework"], r["seed"]) for r in recs)
    assert keys == Counter({(fw, s): 1 for fw in ("jax", "torch") for s in range(3)})
    assert sorted(calls) == sorted(keys)
    assert compare.main(base + ["--shard", "0/2"], workloads=runners) == 0
    assert len(calls) == 6                                               # nothing re-run
    # a task that runs again (a slow worker declared dead, a retry) appends nothing
    cfg = json.loads((out / "config.json").read_text())
    rec = dict(recs[0])
    assert RunFolder(out).add_run(rec, None, cfg, once=True) is False
    assert len(read_records(out / "runs.jsonl")) == 6
    assert (out / "report.md").exists()


@pytest.mark.parametrize("args, msg", [
    (["--engine", "dask"], "needs --scheduler"), (["--scheduler", "local:2"], "needs --engine"),
    (["--shard", "2/2"], "--shard '2/2'"), (["--engine", "dask", "--scheduler", "local:0"],
                                            "N >= 1"),
    (["--shard", "0/2", "--jax-vmap", "2"], "local engine only")])
def test_engine_options_bad_input_one_line_exit_2(tmp_path, data_dir, capsys, args, msg):
    rc = compare.main(["--preset", "smoke", "--out", str(tmp_path / "o"), "--data-dir",
                       str(data_dir), "--no-progress"] + args, workloads={})
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_default_path_imports_no_engine():
    """The default compare imports neither parity.study.engine nor Dask."""
    code = ("import sys, parity.compare; "
            "print(any(m in sys.modules for m in ('parity.study.engine', 'distributed', 'dask')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.stdout.strip() == "False", p.stderr


# ----------------------------------------------------------------------------- slow: real runs
def _env():
    env = dict(os.environ, **PINNED)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _compare_cmd(out, data_dir, *extra):
    return [sys.executable, "-m", "parity.compare", "--preset", "smoke", "--runs", "3",
            "--out", str(out), "--data-dir", str(data_dir), "--no-progress", "--no-plots",
            *extra]


def _results(out):
    """(framework, seed) -> (status, acc, acc_tta, predictions bytes), and the key counts."""
    recs = read_records(Path(out) / "runs.jsonl")
    counts = Counter((r["framework"], r["seed"]) for r in recs)
    res = {(r["framework"], r["seed"]): (r["status"], r["acc"], r["acc_tta"],
                                         (Path(out) / r["predictions"]).read_bytes())
           for r in recs}
    return res, counts


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same sweep by one sequential process (the default engine), threads pinned."""
    d = tmp_path_factory.mktemp("ref")
    data = d / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("test", 1000)):
        np.savez(data / f"{split}.npz",
                 images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    t = time.perf_counter()
    p = subprocess.run(_compare_cmd(d / "out", data), env=_env(), cwd=REPO, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    res, counts = _results(d / "out")
    assert len(res) == 6, "the plan stopped before 3 runs per side; the test needs all 6"
    return data, res, time.perf_counter() - t


def _n_records(out, framework=None) -> int:
    path = Path(out) / "runs.jsonl"
    if not path.exists():
        return 0
    return sum(1 for r in read_records(path) if framework in (None, r["framework"]))


def _kill_when_running(proc_pid_of, deadline_s=600):
    """Wait until a run is under way in a process (its pid from proc_pid_of(), None while none
    is), then SIGKILL it; returns the killed pid."""
    t = time.time()
    while time.time() - t < deadline_s:
        pid = proc_pid_of()
        if pid:
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.5)
    raise AssertionError("no run started in time")


@pytest.mark.slow
def test_dask_two_workers_one_killed_mid_run(tmp_path, reference):
    """LocalCluster of 2 worker processes (started and stopped here); one worker SIGKILLed
    while it runs a task (after it has started training): the sweep finishes, every
    (framework, seed) has exactly one record, and each equals the single-process run's
    (status, accuracies and per-example predictions, bit for bit)."""
    distributed = pytest.importorskip("distributed")
    data, ref, ref_seconds = reference
    cfg = _config(data)
    out = tmp_path / "dask"
    old = {k: os.environ.get(k) for k in PINNED}
    os.environ.update(PINNED)         # the workers inherit the pinned thread counts
    try:
        cluster = engine.start_local_cluster(2)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    log, killed = [], {}
    try:
        with distributed.Client(cluster) as client:
            def running_worker_pid():
                # once a run has finished (its record is on disk), a worker busy with another
                busy = [w for w, keys in client.processing().items() if keys]
                if not busy or _n_records(out) < 1:
                    return None
                time.sleep(2)
                return client.run(os.getpid, workers=[busy[0]])[busy[0]]

            th = threading.Thread(target=lambda: killed.setdefault(
                "pid", _kill_when_running(running_worker_pid)))
            th.start()
            t = time.perf_counter()
            result = engine.run_dask(cfg, out, cluster.scheduler_address, log=log.append)
            wall = time.perf_counter() - t
            th.join()
    finally:
        cluster.close()
    assert result["error"] is None, result
    res, counts = _results(out)
    assert set(counts.values()) == {1} and len(counts) == 6, counts       # none lost, none twice
    assert res == ref
    print(f"dask 2 workers (one SIGKILLed, pid {killed['pid']}): {wall:.1f} s; "
          f"single process: {ref_seconds:.1f} s; records {sum(counts.values())}")


@pytest.mark.slow
def test_shards_one_killed_mid_run_then_rerun(tmp_path, reference):
    """Two shard processes (--shard 0/2, 1/2) on one folder; shard 0 SIGKILLed mid-run and
    started again: every (framework, seed) exactly once, equal to the single-process run."""
    data, ref, _ = reference
    out = tmp_path / "shards"
    procs = [subprocess.Popen(_compare_cmd(out, data, "--shard", f"{i}/2"), env=_env(),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in (0, 1)]
    # shard 0 holds the jax runs (positions 0, 2, 4): killed once one of them is on disk and
    # the next has begun
    _kill_when_running(lambda: procs[0].pid if _n_records(out, "jax") >= 1
                       and not time.sleep(2) else None)
    procs[0].wait(timeout=60)
    assert procs[0].returncode == -signal.SIGKILL
    done_before = _n_records(out, "jax")
    assert 1 <= done_before < 3
    again = subprocess.run(_compare_cmd(out, data, "--shard", "0/2"), env=_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert procs[1].wait(timeout=900) == 0
    res, counts = _results(out)
    assert set(counts.values()) == {1} and len(counts) == 6, counts
    assert res == ref
    print(f"shards: shard 0 killed with {done_before} of its 3 runs on disk; after its rerun "
          f"{sum(counts.values())} records, none twice")


def test_each_process_warms_up_a_framework_once_before_its_first_run(tmp_path, data_dir):
    """As compare does: compilation (the runner's warmup) before the first timed run of each
    framework in a worker process, once per comparison."""
    calls = []

    class Warm(FakeRunner):
        def warmup(self, options):
            calls.append((self.framework, "warmup"))

    cfg = _config(data_dir)
    engine._WARM.clear()
    for seed in (0, 1):
        for fw in ("jax", "torch"):
            engine.run_task(cfg, str(tmp_path / "o"), fw, seed, workload=Warm(fw, calls))
    assert calls == [("jax", "warmup"), ("jax", 0), ("torch", "warmup"), ("torch", 0),
                     ("jax", 1), ("torch", 1)]
