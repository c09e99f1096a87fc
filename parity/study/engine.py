"""A comparison's runs as independent tasks: on a Dask distributed cluster, or as one shard of a
plain job array. The default (`parity.compare` without --engine/--shard) imports none of this.

    python -m parity.compare ... --engine dask --scheduler local:2        # 2 worker processes here
    python -m parity.compare ... --engine dask --scheduler tcp://HOST:8786  # an existing cluster
    python -m parity.compare ... --shard 3/16                              # task 3 of a job array

Why Dask distributed: research users already run it for many independent jobs, on one machine
(`LocalCluster`) and on clusters (`dask scheduler` / `dask worker`, dask-jobqueue on Slurm/PBS,
dask-kubernetes), it is pure Python (pip-installable, the `distributed` extra) and its behaviour
when a worker dies is documented: each worker runs under a nanny process that restarts it; the
scheduler gives the dead worker's tasks to other workers and counts, per task, the workers that
died while it ran ("suspicious" tasks); a task whose count exceeds
`distributed.scheduler.allowed-failures` (3 by default) is failed with `KilledWorker` rather than
retried forever. `submit(..., retries=R)` retries a task that *raised* R more times (a worker's
death is not an exception and does not use these retries). Ray and submitit would do too;
submitit ties the engine to Slurm, Ray is a much larger dependency.

Each task is one (framework, seed) run of the comparison, keyed by the comparison's identity (its
config hash: recipe, preset, recipe parameters, subset sizes, data label and content hashes, margin:
what --resume checks, `config.IDENTITY_KEYS`), the framework and the seed. A task writes its
predictions (atomically) and then its record through the same locked, append-only runs file as a
sequential compare, checking under the lock that no record of its key is there yet: a task run
twice (a worker declared dead that was only slow, a retry after the record was written, a resumed
sweep) adds nothing. So a lost worker loses at most its unfinished run, and a repeated or resumed
sweep skips what is done. The runs go in waves up to each of the sequential plan's looks (3, 4,
..., N pairs), so a sweep stops where a sequential compare would; shards have no coordinator and
run every seed of theirs below --runs.

`--shard i/N` takes the tasks whose position in the sweep's order (seed 0 jax, seed 0 torch,
seed 1 jax, ...) is i modulo N: for Slurm (`--array=0-15`, `--shard $SLURM_ARRAY_TASK_ID/16`),
Kubernetes indexed jobs (`$JOB_COMPLETION_INDEX`) or any other job array, all writing one shared
--out folder. Every shard rewrites the report from what is there, so the last to finish leaves
the full report (or run `python -m parity.compare --report DIR`).

GPUs: one per worker. On a real cluster start one worker per GPU (`CUDA_VISIBLE_DEVICES=k dask
worker ADDR --nworkers 1 --nthreads 1`); `local:N` on a GPU machine gives worker k the GPU
k mod (number of GPUs) before the task imports a framework. Workers get
`XLA_PYTHON_CLIENT_PREALLOCATE=false` (JAX otherwise takes 75% of a GPU's memory at start).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from typing import Callable

from airbench_common.errors import UsageError

from . import plan as P
from .config import load_subsets
from .errors import one_line
from .runs import one_run, prepare, run_options, workloads
from .store import RunFolder, latest_by_run

ENGINES = ("local", "dask")
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
CONNECT_TIMEOUT = 8.0           # seconds to reach a --scheduler address before giving up


class EngineError(UsageError):
    """A bad --engine/--scheduler/--shard value, or an engine that is not installed."""


# ----------------------------------------------------------------------------- keys and shards
def task_key(config: dict, framework: str, seed: int) -> str:
    """The task's name everywhere (Dask key, logs): comparison identity + framework + seed."""
    return f"compare-{config['config_hash']}-{framework}-seed{int(seed)}"


def sweep_tasks(config: dict, n: int | None = None) -> list[tuple[str, int]]:
    """(framework, seed) for seeds below n (default: the comparison's runs), in the sequential
    compare's order: seed 0 of each framework, then seed 1, ..."""
    n = config["runs"] if n is None else n
    return [(fw, s) for s in range(n) for fw in config["frameworks"]]


def parse_shard(text) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise EngineError(f"--shard {text!r} is not i/N; give e.g. 0/4 (shard 0 of 4)") from None
    if not (n >= 1 and 0 <= i < n):
        raise EngineError(f"--shard {text!r}: need N >= 1 and 0 <= i < N, e.g. 0/4")
    return i, n


def shard_tasks(tasks, i: int, n: int) -> list[tuple[str, int]]:
    return [t for j, t in enumerate(tasks) if j % n == i]


def done_keys(folder: RunFolder, config: dict) -> set[tuple[str, int]]:
    """(framework, seed) of every run of the comparison already in the folder."""
    return set(latest_by_run(folder.study_records(config)[0]))


# ----------------------------------------------------------------------------- one task
_DATA: dict = {}                # per worker process: the comparison's subsets, loaded once
_WARM: set = set()              # per worker process: (comparison, framework) warmed up


def _subsets(config: dict):
    """The comparison's (train_data, test_data), loaded once per process."""
    if config["config_hash"] not in _DATA:
        _DATA[config["config_hash"]] = load_subsets(config)
    return _DATA[config["config_hash"]]


def _pin_gpu() -> None:
    """Worker k of a local cluster gets GPU k mod #GPUs (before any framework is imported)."""
    gpus = os.environ.get("AIRBENCH_WORKER_GPUS")
    if not gpus or "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    try:
        from distributed import get_worker  # noqa: PLC0415
        name = get_worker().name
    except (ImportError, ValueError):
        return
    if isinstance(name, int):
        ids = gpus.split(",")
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[name % len(ids)]


def run_task(config: dict, out_dir: str, framework: str, seed: int, workload=None) -> dict:
    """One run of the comparison, where this process is: skipped if its record is there, else
    run, predictions written, record appended once. Returns a short summary (what Dask sends
    back)."""
    folder = RunFolder(out_dir)
    key = task_key(config, framework, seed)
    summary = dict(key=key, framework=framework, seed=seed, pid=os.getpid())
    if (framework, seed) in done_keys(folder, config):
        return dict(summary, skipped=True)
    _pin_gpu()
    train_data, test_data = _subsets(config)
    if workload is None:   # a framework is imported in the worker only
        workload = workloads([framework])[framework]
    options = run_options(config, train_data, test_data)
    if (config["config_hash"], framework) not in _WARM:
        workload.warmup(options)     # as compare: compilation outside the timed runs
        _WARM.add((config["config_hash"], framework))
    rec, added = one_run(config, folder, workload, framework, seed, options, once=True)
    return dict(summary, skipped=not added, status=rec["status"], acc_tta=rec.get("acc_tta"))


# ----------------------------------------------------------------------------- shards
def run_shard(config: dict, out_dir, shard: tuple[int, int], *, log: Callable = print,
              workloads=None) -> dict:
    """This shard's runs, one after another, in this process."""
    folder = RunFolder(out_dir)
    _prepare(config, folder)
    tasks = shard_tasks(sweep_tasks(config), *shard)
    done = done_keys(folder, config)
    todo = [t for t in tasks if t not in done]
    log(f"shard {shard[0]}/{shard[1]}: {len(tasks)} runs, {len(tasks) - len(todo)} already done")
    result = dict(finished=0, skipped=len(tasks) - len(todo), error=None)
    for fw, seed in todo:
        s = run_task(config, str(folder.root), fw, seed, workload=(workloads or {}).get(fw))
        result["finished"] += 0 if s["skipped"] else 1
        result["skipped"] += 1 if s["skipped"] else 0
        log(f"  {fw} seed {seed}: {s.get('status', 'skipped (done elsewhere)')}")
    return result


def _prepare(config: dict, folder: RunFolder) -> None:
    """config.json (checked against one already there) and the test labels, as compare does."""
    prepare(folder, config, lambda: _subsets(config)[1][1])


# ----------------------------------------------------------------------------- dask
def _import_distributed():
    try:
        import distributed  # noqa: PLC0415
    except ImportError:
        raise EngineError("--engine dask needs Dask distributed: pip install -e '.[distributed]'"
                          ) from None
    return distributed


def _gpu_ids() -> str:
    """'0,1,...' of this machine's NVIDIA GPUs (nvidia-smi -L; no framework import), or ''."""
    if not shutil.which("nvidia-smi"):
        return ""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    return ",".join(str(i) for i in range(n))


def start_local_cluster(n_workers: int, env: dict | None = None):
    """A LocalCluster of `n_workers` processes, one thread each, with the worker environment
    (threads per run split evenly unless already pinned, no JAX GPU preallocation)."""
    distributed = _import_distributed()
    threads = str(max(1, (os.cpu_count() or 1) // n_workers))
    wenv = dict(WORKER_ENV, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", threads),
                MKL_NUM_THREADS=os.environ.get("MKL_NUM_THREADS", threads))
    gpus = _gpu_ids()
    if gpus:
        wenv["AIRBENCH_WORKER_GPUS"] = gpus
    wenv.update(env or {})
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, env=wenv)


def parse_scheduler(text) -> tuple[str, object]:
    """'local:N' -> ('local', N); an address -> ('address', text)."""
    text = str(text or "").strip()
    if text.startswith("local:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise EngineError(f"--scheduler {text!r}: local:N needs N >= 1 worker processes")
        return "local", n
    if not text:
        raise EngineError("--engine dask needs --scheduler ADDRESS (e.g. tcp://host:8786) or "
                          "local:N (N worker processes on this machine)")
    host, _, port = text.rpartition("://")[2].rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"--scheduler {text!r} is not an address with a port; give e.g. "
                          "tcp://host:8786 or local:N")
    return "address", text


def _unreachable(where: str, why: str) -> EngineError:
    return EngineError(f"--scheduler {where}: no Dask scheduler reachable there ({why}); start "
                       "one (dask scheduler) and give its address, or use local:N")


def probe_scheduler(where: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A TCP connection to the scheduler address `where` (tcp://host:port) within `timeout`
    seconds, else EngineError naming the address: an unreachable scheduler is one line before
    any data is loaded or file written. (tls:// and other schemes are left to Client.)"""
    scheme, _, rest = where.rpartition("://")
    if scheme not in ("", "tcp"):
        return
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except socket.timeout:
        raise _unreachable(where, f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise _unreachable(where, exc.strerror or str(exc)) from None


def check_options(engine: str, scheduler, shard, jax_vmap: int) -> None:
    """Everything about --engine/--scheduler/--shard that can be checked before any work: the
    combinations, the values, Dask being installed and the scheduler address answering."""
    if engine != "dask" and shard is None:
        if scheduler is not None:
            raise EngineError("--scheduler needs --engine dask")
        return
    if engine == "dask" and shard is not None:
        raise EngineError("--engine dask and --shard both given; give one (a shard runs its "
                          "part in this process)")
    if jax_vmap != 1:
        raise EngineError("--jax-vmap works with the local engine only (an engine task is one "
                          "(framework, seed) run)")
    if shard is not None:
        parse_shard(shard)
        return
    kind, where = parse_scheduler(scheduler)
    _import_distributed()
    if kind == "address":
        probe_scheduler(where)


def connect(distributed, where: str, timeout: float = CONNECT_TIMEOUT):
    """A Client of the scheduler at `where`, or EngineError naming it after `timeout` seconds."""
    try:
        return distributed.Client(where, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(where, " ".join(str(exc).split()) or type(exc).__name__) from None


def run_dask(config: dict, out_dir, scheduler: str, *, log: Callable = print,
             retries: int = 1) -> dict:
    """The comparison's runs as Dask tasks, in waves up to each look of the sequential plan,
    until it decides or reaches N; returns {'finished', 'skipped', 'error', 'outcome'}.

    The scheduler is reached (or the local cluster started) before anything is written: a
    scheduler that does not answer within CONNECT_TIMEOUT seconds is an EngineError naming its
    address, and leaves no config.json, lock or new folder behind."""
    distributed = _import_distributed()
    folder = RunFolder(out_dir)
    kind, where = parse_scheduler(scheduler)
    cluster = start_local_cluster(where) if kind == "local" else None
    result = dict(finished=0, skipped=0, error=None, outcome=None)
    try:
        client = distributed.Client(cluster) if cluster is not None else connect(distributed,
                                                                                where)
        with client, _prepared_and_locked(config, folder):
            log(f"dask: {len(client.scheduler_info()['workers'])} worker(s) at "
                f"{client.scheduler.address}")
            plan = P.Plan(config["margin"], config["runs"])
            for look in [k for k in plan.looks if k <= config["runs"]] or [config["runs"]]:
                out = _outcome(folder, config, plan)
                if out["decision"] != "continue":
                    break
                done = done_keys(folder, config)
                todo = [t for t in sweep_tasks(config, look) if t not in done]
                futures = [client.submit(run_task, config, str(folder.root), fw, seed,
                                         key=task_key(config, fw, seed), pure=False,
                                         retries=retries) for fw, seed in todo]
                for fut in distributed.as_completed(futures):
                    try:
                        s = fut.result()
                    except Exception as exc:  # noqa: BLE001 - KilledWorker or the run's error
                        result["error"] = f"{fut.key} failed: {type(exc).__name__}: " \
                                          f"{one_line(exc)}"
                        continue
                    result["skipped" if s["skipped"] else "finished"] += 1
                    log(f"  {s['framework']} seed {s['seed']}: "
                        f"{'done elsewhere' if s['skipped'] else s['status']} (pid {s['pid']})")
                if result["error"]:
                    break
            result["outcome"] = _outcome(folder, config, plan)
    finally:
        if cluster is not None:
            cluster.close()
    return result


@contextlib.contextmanager
def _prepared_and_locked(config: dict, folder: RunFolder):
    """config.json and labels in the folder (_prepare), then the folder's engine lock held."""
    _prepare(config, folder)
    with folder.engine_lock():
        yield


def _outcome(folder: RunFolder, config, plan):
    return P.sequential_outcome(folder.study_records(config)[0], config["frameworks"], plan)
