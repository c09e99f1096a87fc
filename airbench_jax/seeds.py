"""Many seeds of one recipe as one jitted program: `jax.vmap` over the TrainState and the keys.

Seed s of a group draws exactly what a sequential `run_recipe(recipe, s)` draws: the same three
keys split from PRNGKey(s) (init, altflip's pre-flip, epochs), hence the same initial weights,
the same per-epoch order and the same crops, flips and cutouts. What is shared is what does not
depend on the seed: the normalized, reflect-padded training set is held once (K seeds cost one
copy, not K); each seed's random pre-flip (altflip) is a bool per image applied as batches are
gathered (`loop.epoch_scan(..., preflip=...)`), the same pixels as a flipped copy.

The stacked program computes the same functions as K separate runs; XLA may order a batched
reduction differently, so seed k matches its sequential run to float32 rounding over the first
steps (tests/test_seeds.py), after which training's chaos takes over and whole runs are compared
as distributions.

A group trains through the one epoch loop (airbench_jax.loop.run_epochs) and each seed ends in
the one end-of-run block (airbench_jax.finish.finish_run), as a sequential run does.

Groups are chunked: `group_size` seeds at a time (None: as many as fit in about half the memory
the device has, measured from the compiled one-seed program, see `auto_group_size`). Each seed
yields its own run record (the same fields as a sequential one) marked
`vmapped = {group_size, seeds, group_train_seconds, per_seed_train_seconds}`; its
`train_seconds` is the wall time of the group's training (the seed did take that long), so a
timing comparison against sequential runs must use `per_seed_train_seconds` or leave vmapped
records out, never mix the two.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common.errors import UsageError
from airbench_common import validate as V
from airbench_common.precision import Precision
from airbench_common.timing import Stopwatch

from . import augment as aug
from . import precision as prec
from .compile_clock import compile_clock
from .evaluation import accuracy, compile_evals
from .finish import finish_run
from .loop import epoch_scan, run_epochs, unstack_state
from .prepare import Run, prepare_run, seed_keys
from .state import build_state

# the fraction of the device's memory a group may plan to use (the rest: XLA's own buffers,
# evaluation, the other process on a shared machine)
MEMORY_FRACTION = 0.5


class SeedsError(UsageError):
    """Bad seeds or group size (one line, exit 2 on the command line)."""


def check_seed_list(seeds) -> list[int]:
    """airbench_common.validate.check_seed_list (ints, not bools, in [0, 2**32), each once)."""
    return V.check_seed_list(seeds)


# ----------------------------------------------------------------------------- stacking
def stack_states(states):
    """K TrainStates of one recipe -> one TrainState whose array leaves have a leading seed
    axis. The static fields (graphdef, optax transforms, recipe) are the first state's: the
    transforms are closures built per state, equal in what they compute but not as objects."""
    leaves = [jax.tree.leaves(s) for s in states]
    treedef = jax.tree.structure(states[0])
    return jax.tree.unflatten(treedef, [jnp.stack(xs) for xs in zip(*leaves)])


def preflip_mask(recipe, key, n: int):
    """altflip's random pre-flip as a bool per image (what `augment.random_flip` flips), or
    None when the recipe has no pre-flip."""
    if not (recipe.flip and recipe.altflip):
        return None
    return jax.random.uniform(key, (n,)) < 0.5


def _group_epoch(state, padded, labels, epoch, keys, preflip):
    return jax.vmap(epoch_scan, in_axes=(0, None, None, None, 0, 0))(
        state, padded, labels, epoch, keys, preflip)


group_epoch = jax.jit(_group_epoch)


def init_group(recipe, n_train: int, seeds: Sequence[int], whiten_src, *, conv_impl, precision):
    """(stacked TrainState, stacked epoch keys, stacked pre-flip masks or None) of `seeds`.
    `precision`: the run's resolved Precision (a policy name is resolved here)."""
    policy = precision if isinstance(precision, Precision) else prec.resolve(precision)
    states, keys, flips = [], [], []
    for s in seeds:
        k_init, k_flip, k_epochs = seed_keys(s)
        states.append(build_state(recipe, n_train, k_init, policy, whiten_images=whiten_src,
                                  conv_impl=conv_impl))
        keys.append(k_epochs)
        flips.append(preflip_mask(recipe, k_flip, n_train))
    pre = None if flips[0] is None else jnp.stack(flips)
    return stack_states(states), jnp.stack(keys), pre


# ----------------------------------------------------------------------------- memory
def device_memory_bytes(device) -> int | None:
    """Memory the device can give: an accelerator's allocator limit, or on CPU the host's
    available memory (/proc/meminfo), None when unknown."""
    try:
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - backends without memory_stats
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def per_seed_bytes(compiled_one) -> int | None:
    """Bytes one more seed adds to a group, from XLA's memory analysis of the compiled one-seed
    program: its temporaries and its outputs (the state); the shared training set is an
    argument held once and not counted."""
    try:
        m = compiled_one.memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def auto_group_size(n_seeds: int, seed_bytes: int | None, free_bytes: int | None,
                    cap: int | None = None) -> int:
    """How many seeds to train at once: all of them, at most `cap`, and at most what fits in
    MEMORY_FRACTION of `free_bytes` at `seed_bytes` each (1 at least)."""
    k = n_seeds if cap is None else min(n_seeds, int(cap))
    if seed_bytes and free_bytes:
        k = min(k, int(MEMORY_FRACTION * free_bytes // seed_bytes))
    return max(1, k)


# ----------------------------------------------------------------------------- runs
def run_seeds(recipe, seeds: Sequence[int], **options) -> list[dict]:
    """One run record per seed (in the order of `seeds`), trained `group_size` seeds at a time
    as one vmapped program (None: automatic, by memory). The keywords are iter_seeds's."""
    return list(iter_seeds(recipe, seeds, **options))


class Shared(NamedTuple):
    """What every group of a run shares on the device: the training set normalized and padded
    (not pre-flipped), its labels, the normalized test images, the whitening's source images."""
    padded: Any
    train_y: Any
    test_x: Any
    whiten_src: Any


def iter_seeds(recipe, seeds: Sequence[int], *, overrides=None, data_dir=None, train_data=None,
               test_data=None, device=None, ns_dtype=None, conv_impl: str = "auto", dtype=None,
               precision=None, param_dtype=None, tf32=None,
               eval_every_epoch: bool = True, group_size: int | None = None,
               predictions: bool = False, log: Callable = print,
               verbose: bool = False, data: dict | None = None) -> Iterator[dict]:
    """run_seeds as a generator: a group's records are yielded as soon as the group ends (so a
    caller can write them before the next group starts). `data`: the records' `data` field as
    is (None: airbench_common.records.data_identity of the images used)."""
    seeds = check_seed_list(seeds)
    if group_size is not None:
        group_size = V.integer("group_size", group_size)
        if group_size < 1:
            raise SeedsError(f"group_size {group_size} must be at least 1 (seeds trained at once)")
    # recipe, data, device and precision policy exactly as a sequential run resolves them
    run = prepare_run(recipe, overrides, data_dir, train_data, test_data, device,
                      precision=precision, dtype=dtype, param_dtype=param_dtype,
                      ns_dtype=ns_dtype, tf32=tf32, conv_impl=conv_impl, data=data)
    r, (tr_x, tr_y) = run.recipe, run.train
    dtype = prec.dtypes(run.policy)["compute"]
    init = dict(conv_impl=run.impl, precision=run.policy)
    with prec.run_context(run.policy, run.device):
        t0 = time.perf_counter()
        train_x = jnp.asarray(tr_x)
        # the training set once for every seed: normalized and padded, not pre-flipped
        shared = Shared(aug.pad_reflect(aug.normalize(train_x, dtype), r.translate),
                        jnp.asarray(tr_y.astype(np.int32)),
                        aug.normalize(jnp.asarray(run.test[0]), dtype),
                        aug.normalize(train_x[:r.whiten_images]))
        jax.block_until_ready(shared.padded)
        data_seconds = time.perf_counter() - t0
        probe_seconds = 0.0
        if group_size is None:
            tc = time.perf_counter()
            one = init_group(r, len(tr_x), seeds[:1], shared.whiten_src, **init)
            lowered = group_epoch.lower(one[0], shared.padded, shared.train_y, 0, one[1], one[2])
            k = auto_group_size(len(seeds), per_seed_bytes(lowered.compile()),
                                device_memory_bytes(run.device))
            probe_seconds += time.perf_counter() - tc
        else:
            k = min(int(group_size), len(seeds))
    for g in range(0, len(seeds), k):
        yield from _run_group(run, seeds[g:g + k], shared, init, eval_every_epoch, predictions,
                              log, verbose, data_seconds, probe_seconds if g == 0 else 0.0)


def _run_group(run: Run, seeds, shared: Shared, init: dict, eval_every_epoch, predictions, log,
               verbose, data_seconds, probe_seconds):
    """One group: trained on the run's device (the epochs one timed part, shared by its seeds;
    the whitening is inside init_group, in setup_seconds), then each seed's end of run (its own
    evaluation), outside the run's device context, as a sequential run ends."""
    r, k = run.recipe, len(seeds)
    with prec.run_context(run.policy, run.device):
        t0 = time.perf_counter()
        state, keys, pre = init_group(r, shared.padded.shape[0], seeds, shared.whiten_src, **init)
        jax.block_until_ready(state)
        setup_seconds = data_seconds + time.perf_counter() - t0
        tc = time.perf_counter()
        compiled = group_epoch.lower(state, shared.padded, shared.train_y, 0, keys, pre).compile()
        eval_compile_seconds = compile_evals(unstack_state(state, 0), len(run.test[1]),
                                             r.tta_level, eval_every_epoch, shared.test_x.dtype)
        compile_seconds = probe_seconds + time.perf_counter() - tc
        watch = Stopwatch(compile_clock=compile_clock)
        if verbose:
            log(f"seeds {seeds[0]}..{seeds[-1]}: {k} trained at once (vmapped)")
        trained = run_epochs(
            r, lambda st, e: compiled(st, shared.padded, shared.train_y, e, keys, pre), state,
            watch=watch, seeds=k,
            validate=(lambda st: accuracy(st, shared.test_x, run.test[1], 0))
            if eval_every_epoch else None)
    train_seconds = watch.seconds["epochs"]
    group = dict(group_size=k, seeds=list(seeds), group_train_seconds=train_seconds,
                 per_seed_train_seconds=train_seconds / k)
    for j, seed in enumerate(seeds):
        rec, out = finish_run(run, seed, unstack_state(trained.state, j), shared.test_x, watch,
                              error=trained.errors[j], steps=trained.steps[j],
                              per_epoch=trained.per_epoch[j], setup_seconds=setup_seconds,
                              compile_seconds=compile_seconds,
                              eval_compile_seconds=eval_compile_seconds)
        preds = rec.pop("_predictions", None)
        rec["vmapped"] = dict(group)
        if predictions and preds is not None:
            rec["_predictions"] = preds
        if verbose and out.status == "ok":
            log(f"seed {seed}: acc {out.acc:.4f} acc_tta {out.acc_tta:.4f}")
        yield rec
