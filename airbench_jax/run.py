"""Full runs: `run_recipe` (one seed, or vmapped seeds through airbench_jax.seeds) and `warmup`.

A run resolves its inputs once, where it starts (airbench_jax.prepare.prepare_run: the recipe, the
data, the device, the precision policy, the convolution implementation, the data identity of its
records), then sets up (`start_run`), compiles ahead of time (`compile_run`), trains through the
one epoch loop (airbench_jax.loop.run_epochs) and ends in the one end-of-run block
(airbench_jax.finish).
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import validate as V
from airbench_common.recipes import Recipe, get_recipe
from airbench_common.table import Table
from airbench_common.timing import Stopwatch

from . import augment as aug
from . import precision as prec
from .compile_clock import compile_clock
from .evaluation import accuracy, compile_evals, predict_both
from .finish import finish_run
from .loop import run_epochs, train_epoch
from .model import whitening_kernel
from .prepare import Run, prepare_data, prepare_run, seed_keys
from .state import TrainState, build_state


class RunStart(NamedTuple):
    """What a run's set-up leaves on the device: the train state (whitened), the padded
    training images and labels, the normalized test images, the epochs' key."""
    state: TrainState
    padded: Any
    train_y: Any
    test_x: Any
    k_epochs: Any


def start_run(run: Run, seed: int, watch: Stopwatch) -> tuple[RunStart, float]:
    """A run's set-up: upload, normalisation, init (not upstream's timed work) and the whitening
    (timed, as upstream times it, in `watch`'s whiten part) -> (RunStart, set-up seconds)."""
    r, (tr_x, tr_y), (te_x, _) = run.recipe, run.train, run.test
    dtype = prec.dtypes(run.policy)["compute"]
    k_init, k_flip, k_epochs = seed_keys(seed)
    t0 = time.perf_counter()
    train_x = jnp.asarray(tr_x)
    train_y = jnp.asarray(np.asarray(tr_y).astype(np.int32))
    test_x = aug.normalize(jnp.asarray(te_x), dtype)
    with watch.part("whiten"):
        kernel = jax.block_until_ready(whitening_kernel(
            aug.normalize(train_x[:r.whiten_images]), r.whiten_kernel, r.whiten_eps))
    state = build_state(r, len(tr_x), k_init, run.policy, whiten_kernel=kernel,
                        conv_impl=run.impl)
    padded = prepare_data(r, train_x, dtype, k_flip)
    jax.block_until_ready((state, padded, test_x))
    setup_seconds = time.perf_counter() - t0 - watch.seconds["whiten"]
    return RunStart(state, padded, train_y, test_x, k_epochs), setup_seconds


def compile_run(r: Recipe, start: RunStart, eval_every_epoch: bool):
    """Compile the epoch and the evaluations a run will call, at its shapes, before any timing
    -> (compiled epoch, compile seconds, of which evaluation's)."""
    tc = time.perf_counter()
    compiled = train_epoch.lower(start.state, start.padded, start.train_y, 0,
                                 start.k_epochs).compile()
    eval_seconds = compile_evals(start.state, start.test_x.shape[0], r.tta_level,
                                 eval_every_epoch, start.test_x.dtype)
    return compiled, time.perf_counter() - tc, eval_seconds


def run_recipe(recipe, seed: int, *, overrides=None, data_dir=None, train_data=None,
               test_data=None, device=None, ns_dtype=None, conv_impl: str = "auto",
               verbose: bool = False, eval_every_epoch: bool = True, log: Callable = print,
               dtype=None, predictions: bool = False, run_label=None, precision=None,
               param_dtype=None, tf32=None, seeds=None, group_size: int | None = None,
               data: dict | None = None):
    """A full run -> run record (airbench_common.records.make_record). Timing: train_seconds
    excludes compilation (AOT lower+compile first, reported as compile_seconds). precision: the
    policy (airbench_common.precision; None: the device's default), parts overridden by dtype,
    param_dtype, ns_dtype, tf32; recorded as the record's `precision`. `data`: the record's
    `data` field as is (None: airbench_common.records.data_identity of the images used).
    With `seeds=[...]` (and seed None): those seeds trained together as one vmapped program,
    `group_size` at a time (None: as many as fit in memory) -> a list of records, one per seed
    (airbench_jax.seeds)."""
    if seeds is not None:
        if seed is not None:
            raise V.OptionError(f"give seed or seeds, not both (seed {V.show(seed)}, seeds "
                                f"{V.show(seeds)})")
        from .seeds import run_seeds
        return run_seeds(recipe, seeds, overrides=overrides, data_dir=data_dir,
                         train_data=train_data, test_data=test_data, device=device,
                         ns_dtype=ns_dtype, conv_impl=conv_impl, dtype=dtype,
                         precision=precision, param_dtype=param_dtype, tf32=tf32,
                         eval_every_epoch=eval_every_epoch, group_size=group_size,
                         predictions=predictions, log=log, verbose=verbose, data=data)
    rec, _ = run_recipe_with_state(recipe, seed, overrides=overrides, data_dir=data_dir,
                                   train_data=train_data, test_data=test_data, device=device,
                                   ns_dtype=ns_dtype, conv_impl=conv_impl, verbose=verbose,
                                   eval_every_epoch=eval_every_epoch, log=log, dtype=dtype,
                                   run_label=run_label, precision=precision,
                                   param_dtype=param_dtype, tf32=tf32, data=data)
    if not predictions:  # the per-example predictions only when asked (parity.compare)
        rec.pop("_predictions", None)
    return rec


def run_recipe_with_state(recipe, seed: int, *, overrides=None, data_dir=None, train_data=None,
                          test_data=None, device=None, ns_dtype=None, conv_impl: str = "auto",
                          verbose: bool = False, eval_every_epoch: bool = True,
                          log: Callable = print, dtype=None, run_label=None, precision=None,
                          param_dtype=None, tf32=None, data: dict | None = None):
    """run_recipe, also returning the final TrainState. `run_label`: the run column of the
    per-epoch table (the table's head is printed for the first run only, as upstream)."""
    seed = V.check_seed(seed)
    run = prepare_run(recipe, overrides, data_dir, train_data, test_data, device,
                      precision=precision, dtype=dtype, param_dtype=param_dtype,
                      ns_dtype=ns_dtype, tf32=tf32, conv_impl=conv_impl, data=data)
    r = run.recipe
    watch = Stopwatch(compile_clock=compile_clock)
    table = Table(log) if verbose else None

    def table_row(epoch, row):
        table.row(run=(run_label or 0) if epoch == 0 else None, epoch=epoch,
                  train_loss=row["train_loss"], train_acc=row["train_acc"], val_acc=row["val_acc"],
                  time_seconds=watch.seconds["whiten"] + watch.seconds["epochs"])

    with prec.run_context(run.policy, run.device):
        start, setup_seconds = start_run(run, seed, watch)
        compiled, compile_seconds, eval_compile_seconds = compile_run(r, start, eval_every_epoch)
        if table is not None and run_label in (None, 0):
            table.head()
        trained = run_epochs(
            r, lambda st, e: compiled(st, start.padded, start.train_y, e, start.k_epochs),
            start.state, watch=watch,
            validate=(lambda st: accuracy(st, start.test_x, run.test[1], 0))
            if eval_every_epoch else None,
            on_row=table_row if table is not None else None)
    rec, out = finish_run(run, seed, trained.state, start.test_x, watch, error=trained.errors[0],
                          steps=trained.steps[0], per_epoch=trained.per_epoch[0],
                          setup_seconds=setup_seconds, compile_seconds=compile_seconds,
                          eval_compile_seconds=eval_compile_seconds)
    if table is not None and out.status == "ok":
        table.row(final=True, epoch="eval", tta_val_acc=out.acc_tta,
                  time_seconds=rec["time_seconds"])
    return rec, trained.state


def warmup(recipe, *, n_train: int | None = None, seed: int = 0, steps: int = 2,
           conv_impl: str = "auto", ns_dtype=None, dtype=None, overrides=None, train_data=None,
           test_data=None, device=None, precision=None, param_dtype=None, tf32=None,
           eval_every_epoch: bool = True) -> float:
    """Compile what a run calls, at the shapes of the runs to come, so that no timed run
    compiles (airbench_common.timing): the set-up and whitening, the epoch function and the
    evaluations (plain and TTA), on random images of the same shapes as `train_data` /
    `test_data` (else `n_train` training images, default `steps` batches, and 1 test image), under
    the same device and precision policy as run_recipe. Returns the seconds it took."""
    t = time.perf_counter()
    r = get_recipe(recipe, **dict(overrides or {}))
    n = len(train_data[0]) if train_data is not None else (n_train or r.batch_size * max(steps, 1))
    n_test = len(test_data[0]) if test_data is not None else 1
    rng = np.random.default_rng(seed)
    fake_train = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 10, (n,)).astype(np.int64))
    fake_test = (rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                 rng.integers(0, 10, (n_test,)).astype(np.int64))
    run = prepare_run(r, {}, None, fake_train, fake_test, device, precision=precision,
                      dtype=dtype, param_dtype=param_dtype, ns_dtype=ns_dtype, tf32=tf32,
                      conv_impl=conv_impl)
    with prec.run_context(run.policy, run.device):   # as run_recipe: the same programs
        start, _ = start_run(run, seed, Stopwatch())
        compile_run(run.recipe, start, eval_every_epoch)
        predict_both(start.state, start.test_x, run.recipe.tta_level)   # the eval's host-side ops
    return time.perf_counter() - t
