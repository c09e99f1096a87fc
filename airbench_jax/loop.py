"""The training loop: an epoch as one `lax.scan` over batches with on-device augmentation
(`epoch_scan`, jitted as `train_epoch`), and the one loop over epochs every run goes through
(`run_epochs`: a sequential run's single state, or a vmapped group's stacked states).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import records
from airbench_common.recipes import Recipe
from airbench_common.timing import Stopwatch

from . import augment as aug
from .state import TrainState, take_step


def epoch_scan(state: TrainState, padded, labels, epoch, key, preflip=None):
    """One epoch as a lax.scan over batches with on-device augmentation. `padded` is the
    normalized (pre-flipped) training set, reflect-padded by recipe.translate. Steps past the
    recipe's total are skipped (the last, partial epoch). `preflip` (bool per image, or None):
    flip these images of `padded` as they are gathered, the same pixels as a pre-flipped copy
    (reflect padding commutes with a horizontal flip), so seeds trained together share one
    unflipped copy of the training set (airbench_jax.seeds) -> (state, per-step (summed loss,
    #correct, whether the step trained))."""
    r = state.recipe
    bs = r.batch_size
    spe = padded.shape[0] // bs
    k_order, k_aug = jax.random.split(jax.random.fold_in(key, epoch))
    order = aug.epoch_order(k_order, padded.shape[0])

    def body(st, i):
        idx = jax.lax.dynamic_slice(order, (i * bs,), (bs,))
        xb = padded[idx]
        if preflip is not None:
            xb = jnp.where(preflip[idx][:, None, None, None], aug.flip_lr(xb), xb)
        x = aug.augment_batch(jax.random.fold_in(k_aug, i), xb, epoch,
                              flip=r.flip, altflip=r.altflip, cutout_size=r.cutout)
        y = labels[idx]

        def run(s):
            return take_step(s, x, y)

        def skip(s):
            return s, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)

        active = st.step < st.total_steps
        st, loss, correct = jax.lax.cond(active, run, skip, st)
        return st, (loss, correct, active)

    return jax.lax.scan(body, state, jnp.arange(spe))


train_epoch = jax.jit(epoch_scan)


def _steps_scan(state: TrainState, images, labels, n: int):
    def body(st, _):
        st, loss, _ = take_step(st, images, labels)
        return st, loss
    return jax.lax.scan(body, state, None, length=n)


# `n` steps on the same batch as one `lax.scan` program, as inside `train_epoch` (one dispatch,
# state buffers reused in place) -> (state, summed loss per step): the throughput benchmarks'
# stepper (parity.bench)
train_steps = jax.jit(_steps_scan, static_argnums=3)


def unstack_state(state, k: int):
    """Seed k's TrainState out of a stacked one (airbench_jax.seeds)."""
    return jax.tree.map(lambda v: v[k], state)


def last_batch_row(r: Recipe, epoch: int, losses, correct, active, *, seconds) -> dict:
    """The epoch's per_epoch entry from its scan's per-step outputs (host arrays): the last
    step that trained (airbench_common.records.epoch_row), on filter_keep examples where the
    recipe filters."""
    last = int(np.flatnonzero(active)[-1]) if active.any() else len(losses) - 1
    return records.epoch_row(epoch, loss_sum=losses[last], correct=correct[last],
                             n=r.filter_keep or r.batch_size, seconds=seconds)


def loss_verdict(epoch: int, losses) -> str | None:
    """Why a run diverged in `epoch` (a non-finite training loss among `losses`, the summed
    losses of the steps that trained), or None."""
    if np.all(np.isfinite(np.asarray(losses))):
        return None
    return f"non-finite training loss in epoch {epoch}"


class Trained(NamedTuple):
    """What the epochs left, per seed (one entry for a sequential run): the per_epoch rows, why
    the seed diverged (None: it did not) and its step count (at divergence, if it diverged)."""
    state: TrainState
    per_epoch: list
    errors: list
    steps: list


def run_epochs(r: Recipe, epoch: Callable, state: TrainState, *, watch: Stopwatch,
               seeds: int | None = None, validate: Callable | None = None,
               on_row: Callable | None = None) -> Trained:
    """The loop over a run's epochs. `epoch(state, e) -> (state, (losses, correct, active))` is
    the compiled epoch; `seeds` None: `state` is one run's, else a vmapped group's with a leading
    axis of `seeds` seeds. Each epoch is timed in `watch`'s epochs part. Per seed: its epoch row
    (last_batch_row); a non-finite loss ends the seed's record there (loss_verdict; a diverged
    seed goes on computing inside its group, vmap has no per-seed exit, but its NaNs stay its
    own); else `validate(seed's state)`, when given, is the row's val_acc and `on_row(epoch,
    row)` follows. The loop ends at the recipe's total steps, or once every seed diverged."""
    k = 1 if seeds is None else seeds
    per_epoch, errors, steps = [[] for _ in range(k)], [None] * k, [None] * k
    step = None
    for e in range(math.ceil(r.epochs)):
        before = watch.seconds["epochs"]
        with watch.part("epochs"):
            state, out = epoch(state, e)
            losses, correct, active = jax.device_get(out)
        seconds = watch.seconds["epochs"] - before
        if seeds is None:
            losses, correct, active = losses[None], correct[None], active[None]
        step = np.asarray(jax.device_get(state.step)).reshape(-1)
        for j in range(k):
            if errors[j]:
                continue
            row = last_batch_row(r, e, losses[j], correct[j], active[j], seconds=seconds)
            per_epoch[j].append(row)
            errors[j] = loss_verdict(e, losses[j][active[j]])
            if errors[j]:
                steps[j] = int(step[j])
                continue
            if validate is not None:
                row["val_acc"] = validate(state if seeds is None else unstack_state(state, j))
            if on_row is not None:
                on_row(e, row)
        if all(errors) or int(step[0]) >= state.total_steps:
            break
    steps = [int(step[j]) if s is None else s for j, s in enumerate(steps)]
    return Trained(state, per_epoch, errors, steps)
