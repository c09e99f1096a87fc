"""One run of a comparison, wherever it executes (the local engine, an engine task): the
framework's workload (airbench_common.workload; the upstream arm's
parity.study.upstream_runner; fakes in tests) run with the comparison's options, its record
checked and completed, then stored. A workload's record keeps, in memory only, "_predictions":
the predicted class of every test image.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from airbench_common import interrupts
from airbench_common.workload import RunOptions, Workload, get_workload

from .config import check_config
from .store import RunFolder


def prepare(folder: RunFolder, config: dict, test_labels: Callable[[], np.ndarray]) -> None:
    """Before the first run: the configuration, checked against the folder's (the same
    comparison, or CompareError) and written; the test labels (`test_labels()`) unless the
    folder has them."""
    existing = folder.read_config()
    if existing is not None:
        check_config(existing, config, folder.root)
    folder.write_config(config)
    if folder.load_labels() is None:
        folder.save_labels(test_labels())


def workloads(frameworks, arm=None) -> dict[str, Workload]:
    """framework -> its workload: get_workload's for jax and torch, the upstream arm's
    (parity.study.upstream_runner) for 'upstream' when `arm` is given."""
    out = {}
    for fw in frameworks:
        if fw == "upstream":
            if arm is not None:
                from .upstream_runner import UpstreamWorkload  # noqa: PLC0415 - a process pool
                out[fw] = UpstreamWorkload(arm)
        else:
            out[fw] = get_workload(fw)
    return out


def run_options(config: dict, train_data, test_data, *, verbose: bool = False,
                log: Callable = print) -> RunOptions:
    """What every run of the comparison is given: its recipe, data (and the data's identity,
    which each record carries as it is) and settings; per-example predictions kept."""
    data = dict(label=config["data_label"], dir=config["data_dir"], n_train=len(train_data[0]),
                n_test=len(test_data[0]))
    return RunOptions(recipe=config["recipe"], overrides=dict(config["overrides"]),
                      train_data=train_data, test_data=test_data, data_dir=config["data_dir"],
                      data=data, eval_every_epoch=config.get("eval_every_epoch", True),
                      predictions=True, verbose=verbose, log=log)


def one_run(config, folder: RunFolder, workload: Workload, fw, seed, options: RunOptions, *,
            once: bool = False) -> tuple[dict, bool]:
    """Run seed `seed` of framework `fw` and store it; (its record, whether it was appended)."""
    t0, c0 = time.perf_counter(), time.process_time()
    rec = dict(workload.run(options, seed))
    # CPU seconds of all this process's threads: on a shared machine, cpu_seconds / cores
    # estimates what the run would take alone (wall_seconds grows with the other jobs)
    rec["cpu_seconds"] = time.process_time() - c0
    return store_run(config, folder, rec, fw, seed, time.perf_counter() - t0, options,
                     once=once)


def group_run(config, folder: RunFolder, workload: Workload, fw, seeds,
              options: RunOptions) -> list[dict]:
    """`seeds` trained together (the JAX workload's run_seeds: one vmapped program); each
    record stored as a sequential run's, with wall_seconds its share of the group's wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    group = options.replace(extra={**options.extra, "group_size": len(seeds)})
    recs = list(workload.run_seeds(group, list(seeds)))
    wall = (time.perf_counter() - t0) / len(seeds)
    cpu = (time.process_time() - c0) / len(seeds)
    if len(recs) != len(seeds):
        raise RuntimeError(f"{fw} gave {len(recs)} records for the {len(seeds)} seeds {seeds}")
    return [store_run(config, folder, dict(rec, cpu_seconds=cpu), fw, s, wall, options)[0]
            for rec, s in zip(recs, seeds)]


def store_run(config, folder: RunFolder, rec, fw, seed, wall, options: RunOptions, *,
              once: bool = False) -> tuple[dict, bool]:
    """Check a workload's record (its framework, seed and the data identity it was given) and
    complete it (the comparison's preset, wall time, machine load), then store it with its
    predictions (RunFolder.add_run). (The record, whether it was appended.)"""
    interrupts.checkpoint()   # a Ctrl-C that library code swallowed during the run: not stored
    preds = rec.get("_predictions")
    # keys starting with "_" are in-memory extras (predictions, the jax net state)
    rec = {k: v for k, v in rec.items() if not str(k).startswith("_")}
    rec.setdefault("framework", fw)
    rec.setdefault("seed", seed)
    if rec["framework"] != fw or int(rec["seed"]) != seed:
        raise RuntimeError(f"{fw} returned a record for {rec['framework']} seed "
                           f"{rec['seed']}, expected {fw} seed {seed}")
    if rec.get("data") != dict(options.data):
        raise RuntimeError(f"{fw}'s record of seed {seed} does not carry the data identity it "
                           f"was given ({rec.get('data')} != {dict(options.data)})")
    rec.update(preset=config["preset"], wall_seconds=wall)
    test_data = options.test_data
    if preds is not None:
        preds = np.asarray(preds)
        if test_data is not None and preds.shape != (len(test_data[0]),):
            raise RuntimeError(f"predictions of shape {preds.shape}, expected "
                               f"({len(test_data[0])},)")
    try:  # how busy the machine was: shared machines make timings noisy
        rec["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        rec.setdefault("machine", {}).setdefault("cpu_count", os.cpu_count())
    except (OSError, AttributeError):
        pass
    return rec, folder.add_run(rec, preds, config, once=once)
