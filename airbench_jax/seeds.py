"""Many seeds of one recipe as one jitted program: `jax.vmap` over the TrainState and the keys.

Seed s of a group draws exactly what a sequential `run_recipe(recipe, s)` draws: the same three
keys split from PRNGKey(s) (init, altflip's pre-flip, epochs), hence the same initial weights,
the same per-epoch order and the same crops, flips and cutouts. What is shared is what does not
depend on the seed: the normalized, reflect-padded training set is held once (K seeds cost one
copy, not K); each seed's random pre-flip (altflip) is a bool per image applied as batches are
gathered (`train._train_epoch(..., preflip=...)`), the same pixels as a flipped copy.

The stacked program computes the same functions as K separate runs; XLA may order a batched
reduction differently, so seed k matches its sequential run to float32 rounding over the first
steps (tests/test_seeds.py), after which training's chaos takes over and whole runs are compared
as distributions.

Groups are chunked: `group_size` seeds at a time (None: as many as fit in about half the memory
the device has, measured from the compiled one-seed program, see `auto_group_size`). Each seed
yields its own run record (the same fields as a sequential one) marked
`vmapped = {group_size, seeds, group_train_seconds, per_seed_train_seconds}`; its
`train_seconds` is the wall time of the group's training (the seed did take that long), so a
timing comparison against sequential runs must use `per_seed_train_seconds` or leave vmapped
records out, never mix the two.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import outcome
from airbench_common.errors import UsageError
from airbench_common import validate as V
from airbench_common.timing import Stopwatch

from . import augment as aug
from . import precision as prec
from .compile_clock import compile_clock
from .train import (_finite_state, _train_epoch, accuracy, compile_eval, init_train_state,
                    last_batch_row, predict_both, prepare_run, run_record)

# the fraction of the device's memory a group may plan to use (the rest: XLA's own buffers,
# evaluation, the other process on a shared machine)
MEMORY_FRACTION = 0.5


class SeedsError(UsageError):
    """Bad seeds or group size (one line, exit 2 on the command line)."""


def check_seed_list(seeds) -> list[int]:
    """airbench_common.validate.check_seed_list (ints, not bools, in [0, 2**32), each once)."""
    return V.check_seed_list(seeds)


def seed_keys(seed: int):
    """(init, pre-flip, epochs) keys of a run: the split `train.run_recipe_with_state` makes."""
    return jax.random.split(jax.random.PRNGKey(seed), 3)


# ----------------------------------------------------------------------------- stacking
def stack_states(states):
    """K TrainStates of one recipe -> one TrainState whose array leaves have a leading seed
    axis. The static fields (graphdef, optax transforms, recipe) are the first state's: the
    transforms are closures built per state, equal in what they compute but not as objects."""
    leaves = [jax.tree.leaves(s) for s in states]
    treedef = jax.tree.structure(states[0])
    return jax.tree.unflatten(treedef, [jnp.stack(xs) for xs in zip(*leaves)])


def unstack_state(state, k: int):
    """Seed k's TrainState out of a stacked one."""
    return jax.tree.map(lambda v: v[k], state)


def preflip_mask(recipe, key, n: int):
    """altflip's random pre-flip as a bool per image (what `augment.random_flip` flips), or
    None when the recipe has no pre-flip."""
    if not (recipe.flip and recipe.altflip):
        return None
    return jax.random.uniform(key, (n,)) < 0.5


def _group_epoch(state, padded, labels, epoch, keys, preflip):
    return jax.vmap(_train_epoch, in_axes=(0, None, None, None, 0, 0))(
        state, padded, labels, epoch, keys, preflip)


group_epoch = jax.jit(_group_epoch)


def init_group(recipe, n_train: int, seeds: Sequence[int], whiten_src, *, conv_impl, precision):
    """(stacked TrainState, stacked epoch keys, stacked pre-flip masks or None) of `seeds`."""
    states, keys, flips = [], [], []
    for s in seeds:
        k_init, k_flip, k_epochs = seed_keys(s)
        states.append(init_train_state(recipe, n_train, k_init, whiten_images=whiten_src,
                                       conv_impl=conv_impl, precision=precision))
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
def run_seeds(recipe, seeds: Sequence[int], *, overrides=None, data_dir=None, train_data=None,
              test_data=None, device=None, ns_dtype=None, conv_impl: str = "auto", dtype=None,
              precision=None, param_dtype=None, tf32=None,
              eval_every_epoch: bool = True, group_size: int | None = None,
              predictions: bool = False, log: Callable = print,
              verbose: bool = False) -> list[dict]:
    """One run record per seed (in the order of `seeds`), trained `group_size` seeds at a time
    as one vmapped program (None: automatic, by memory)."""
    return list(iter_seeds(recipe, seeds, overrides=overrides, data_dir=data_dir,
                           train_data=train_data, test_data=test_data, device=device,
                           ns_dtype=ns_dtype, conv_impl=conv_impl, dtype=dtype,
                           precision=precision, param_dtype=param_dtype, tf32=tf32,
                           eval_every_epoch=eval_every_epoch, group_size=group_size,
                           predictions=predictions, log=log, verbose=verbose))


def iter_seeds(recipe, seeds: Sequence[int], *, overrides=None, data_dir=None, train_data=None,
               test_data=None, device=None, ns_dtype=None, conv_impl: str = "auto", dtype=None,
               precision=None, param_dtype=None, tf32=None,
               eval_every_epoch: bool = True, group_size: int | None = None,
               predictions: bool = False, log: Callable = print,
               verbose: bool = False) -> Iterator[dict]:
    """run_seeds as a generator: a group's records are yielded as soon as the group ends (so a
    caller can write them before the next group starts)."""
    from .model import resolve_impl
    seeds = check_seed_list(seeds)
    if group_size is not None:
        group_size = V.integer("group_size", group_size)
        if group_size < 1:
            raise SeedsError(f"group_size {group_size} must be at least 1 (seeds trained at once)")
    overrides = dict(overrides or {})
    # recipe, data, device and precision policy exactly as a sequential run resolves them
    r, (tr_x, tr_y), (te_x, te_y), total, dev, pol = prepare_run(
        recipe, overrides, data_dir, train_data, test_data, device, precision=precision,
        dtype=dtype, param_dtype=param_dtype, ns_dtype=ns_dtype, tf32=tf32)
    n_train = len(tr_x)
    dtype = jnp.dtype(pol.compute)
    impl = resolve_impl(conv_impl)

    with jax.default_device(dev), prec.matmul_context(pol):
        t0 = time.perf_counter()
        train_x = jnp.asarray(tr_x)
        train_y = jnp.asarray(tr_y.astype(np.int32))
        test_x = aug.normalize(jnp.asarray(te_x), dtype)
        whiten_src = aug.normalize(train_x[:r.whiten_images])
        # the training set once for every seed: normalized and padded, not pre-flipped
        padded = aug.pad_reflect(aug.normalize(train_x, dtype), r.translate)
        jax.block_until_ready(padded)
        data_seconds = time.perf_counter() - t0
        init = dict(conv_impl=impl, precision=pol)

        compile_seconds = 0.0
        if group_size is None:
            tc = time.perf_counter()
            one = init_group(r, n_train, seeds[:1], whiten_src, **init)
            lowered = group_epoch.lower(one[0], padded, train_y, 0, one[1], one[2])
            k = auto_group_size(len(seeds), per_seed_bytes(lowered.compile()),
                                device_memory_bytes(dev))
            compile_seconds += time.perf_counter() - tc
        else:
            k = min(int(group_size), len(seeds))
        for g in range(0, len(seeds), k):
            yield from _run_group(r, overrides, seeds[g:g + k], padded, train_y, test_x, te_y,
                                  whiten_src, init, total, dev, data_dir, eval_every_epoch,
                                  predictions, log, verbose, data_seconds,
                                  compile_seconds if g == 0 else 0.0,
                                  arrays=train_data is not None)


def _run_group(r, overrides, seeds, padded, train_y, test_x, te_y, whiten_src, init, total, dev,
               data_dir, eval_every_epoch, predictions, log, verbose, data_seconds,
               probe_seconds, *, arrays: bool):
    K = len(seeds)
    n_train = padded.shape[0]
    t0 = time.perf_counter()
    state, keys, pre = init_group(r, n_train, seeds, whiten_src, **init)
    jax.block_until_ready(state)
    setup_seconds = data_seconds + time.perf_counter() - t0

    tc = time.perf_counter()
    compiled = group_epoch.lower(state, padded, train_y, 0, keys, pre).compile()
    compile_seconds = probe_seconds + time.perf_counter() - tc
    one = unstack_state(state, 0)
    levels = sorted({r.tta_level} | ({0} if eval_every_epoch else set()))
    eval_compile_seconds = sum(compile_eval(one.graphdef, one.params, one.rest, len(te_y), lv,
                                            dtype=test_x.dtype) for lv in levels)
    compile_seconds += eval_compile_seconds

    # airbench_common.timing, for a group: its epochs are one timed part, shared by its seeds (the
    # whitening is inside init_group, in setup_seconds); each seed's evaluation is its own
    watch = Stopwatch(compile_clock=compile_clock)
    per_epoch = [[] for _ in seeds]
    # per seed, once its loss is non-finite: the reason and its step count then. A diverged seed
    # goes on computing inside the group (vmap has no per-seed early exit; its NaNs stay its
    # own), but its record is what its sequential run records: that epoch's row, then stop.
    diverged = [None] * K
    diverged_at = [None] * K
    if verbose:
        log(f"seeds {seeds[0]}..{seeds[-1]}: {K} trained at once (vmapped)")
    for epoch in range(math.ceil(r.epochs)):
        before = watch.seconds["epochs"]
        with watch.part("epochs"):
            state, (losses, correct, active) = compiled(state, padded, train_y, epoch, keys, pre)
            losses, correct, active = jax.device_get((losses, correct, active))
        dt = watch.seconds["epochs"] - before
        for j in range(K):
            if diverged[j]:
                continue
            act = active[j]
            row = last_batch_row(r, epoch, losses[j], correct[j], act, seconds=dt)
            if not np.all(np.isfinite(losses[j][act])):
                diverged[j] = f"non-finite training loss in epoch {epoch}"
                diverged_at[j] = int(state.step[j])
            elif eval_every_epoch:
                row["val_acc"] = accuracy(unstack_state(state, j), test_x, jnp.asarray(te_y), 0)
            per_epoch[j].append(row)
        if int(state.step[0]) >= total:
            break

    train_seconds = watch.seconds["epochs"]
    group = dict(group_size=K, seeds=list(seeds), group_train_seconds=train_seconds,
                 per_seed_train_seconds=train_seconds / K)
    for j, seed in enumerate(seeds):
        st = unstack_state(state, j)
        status, error, acc, acc_tta, preds, eval_seconds = "ok", diverged[j], None, None, None, None
        c0 = compile_clock()
        if error is None:
            te = time.perf_counter()
            plain, preds = predict_both(st, test_x, r.tta_level)
            eval_seconds = time.perf_counter() - te
            acc_tta = float((preds == te_y).mean())
            acc = float((plain == te_y).mean())
            error = outcome.collapse_reason(preds)
            if error is None and not _finite_state(st):
                error = "non-finite weights after training"
        if error:
            status = outcome.DIVERGED
        rec = run_record(r, overrides, seed, dev, init["precision"], init["conv_impl"],
                         acc=acc, acc_tta=acc_tta, train_seconds=train_seconds,
                         eval_seconds=eval_seconds,
                         steps=int(st.step) if diverged_at[j] is None else diverged_at[j],
                         status=status,
                         compile_seconds=compile_seconds,
                         eval_compile_seconds=eval_compile_seconds, per_epoch=per_epoch[j],
                         data_dir=data_dir, n_train=n_train, n_test=len(te_y),
                         setup_seconds=setup_seconds, arrays=arrays, error=error,
                         timed_compile_seconds=watch.timed_compile + compile_clock() - c0)
        rec["vmapped"] = dict(group)
        if predictions and preds is not None:
            rec["_predictions"] = preds
        if verbose and status == "ok":
            log(f"seed {seed}: acc {acc:.4f} acc_tta {acc_tta:.4f}")
        yield rec
