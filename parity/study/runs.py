"""One run of a comparison, wherever it executes (the local engine, an engine task): the runner
called with the comparison's settings, its record checked and completed, then stored.

A *runner* is a callable with run_recipe's signature (parity.runners; the upstream arm's
parity.study.upstream_runner; fakes in tests): runner(recipe, seed, *, overrides, train_data,
test_data, data_dir, verbose, log, predictions, ...) -> a run record whose "_predictions" (in
memory only) are the predicted class of every test image.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

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


def run_kwargs(config: dict, common: dict, verbose: bool, log) -> dict:
    """The runner's keyword arguments: `common` (overrides, train_data, test_data) and the
    comparison's."""
    kwargs = dict(common, data_dir=config["data_dir"], verbose=verbose, log=log,
                  predictions=True)
    if not config.get("eval_every_epoch", True):
        kwargs["eval_every_epoch"] = False
    return kwargs


def one_run(config, folder: RunFolder, runner, fw, seed, common, verbose, log, *,
            once: bool = False) -> tuple[dict, bool]:
    """Run seed `seed` of framework `fw` and store it; (its record, whether it was appended)."""
    t0, c0 = time.perf_counter(), time.process_time()
    rec = dict(runner(config["recipe"], seed, **run_kwargs(config, common, verbose, log)))
    # CPU seconds of all this process's threads: on a shared machine, cpu_seconds / cores
    # estimates what the run would take alone (wall_seconds grows with the other jobs)
    rec["cpu_seconds"] = time.process_time() - c0
    return store_run(config, folder, rec, fw, seed, time.perf_counter() - t0, common,
                     once=once)


def group_run(config, folder: RunFolder, runner, fw, seeds, common, verbose, log) -> list[dict]:
    """`seeds` trained together (run_recipe(..., seeds=...), one vmapped program); each record
    stored as a sequential run's, with wall_seconds its share of the group's wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    recs = runner(config["recipe"], None, seeds=list(seeds), group_size=len(seeds),
                  **run_kwargs(config, common, verbose, log))
    wall = (time.perf_counter() - t0) / len(seeds)
    cpu = (time.process_time() - c0) / len(seeds)
    if not isinstance(recs, list) or len(recs) != len(seeds):
        raise RuntimeError(f"{fw} runner gave no list of {len(seeds)} records for seeds {seeds} "
                           "(does its run_recipe take seeds=?)")
    return [store_run(config, folder, dict(rec, cpu_seconds=cpu), fw, s, wall, common)[0]
            for rec, s in zip(recs, seeds)]


def store_run(config, folder: RunFolder, rec, fw, seed, wall, common, *, once: bool = False
              ) -> tuple[dict, bool]:
    """Check and complete a runner's record (the comparison's preset, data, wall time, machine
    load), then store it with its predictions (RunFolder.add_run). (The record, whether it was
    appended.)"""
    preds = rec.get("_predictions")
    # keys starting with "_" are in-memory extras (predictions, the jax net state)
    rec = {k: v for k, v in rec.items() if not str(k).startswith("_")}
    rec.setdefault("framework", fw)
    rec.setdefault("seed", seed)
    if rec["framework"] != fw or int(rec["seed"]) != seed:
        raise RuntimeError(f"runner returned a record for {rec['framework']} seed "
                           f"{rec['seed']}, expected {fw} seed {seed}")
    rec.update(preset=config["preset"], wall_seconds=wall)
    train_data, test_data = common.get("train_data"), common.get("test_data")
    data = dict(rec.get("data") or {})
    data.update(label=config["data_label"], dir=config["data_dir"])
    if train_data is not None:
        data["n_train"] = len(train_data[0])
    if test_data is not None:
        data["n_test"] = len(test_data[0])
    rec["data"] = data
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
