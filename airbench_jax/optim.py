"""Optimizers built from airbench_common.recipes.param_groups / lr_schedules (no restated
hyper-parameters). Each group is PyTorch-style Nesterov SGD with coupled weight decay
    g' = g + wd*p; buf = m*buf + g'; p -= lr_t*(g' + m*buf)
= optax.add_decayed_weights(wd) -> optax.trace(m, nesterov=True) -> optax.scale_by_schedule(-lr*s[t]),
or Muon (airbench_jax.muon); groups are combined with optax.partition over parameter labels.
A group with `frozen_after` is wrapped in `freeze_after`: from that step on its update is exactly
zero (no stale momentum, no weight decay) and its inner state stops changing.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from airbench_common.recipes import Recipe, lr_schedules, param_groups


class FreezeState(NamedTuple):
    count: jnp.ndarray
    inner: optax.OptState


def freeze_after(inner: optax.GradientTransformation, step: int) -> optax.GradientTransformation:
    """Apply `inner` on steps [0, step); afterwards the update is zero and the state is kept."""

    def init_fn(params):
        return FreezeState(jnp.zeros((), jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None):
        new_u, new_inner = inner.update(updates, state.inner, params)
        live = state.count < step
        new_u = jax.tree.map(lambda u: jnp.where(live, u, jnp.zeros_like(u)), new_u)
        new_inner = jax.tree.map(lambda a, b: jnp.where(live, a, b), new_inner, state.inner)
        return new_u, FreezeState(state.count + 1, new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


def lr_array(lr: float, schedule: np.ndarray, stride: int = 1) -> jnp.ndarray:
    """lr * multiplier per step (computed in float64 like PyTorch's LambdaLR, then float32)."""
    return jnp.asarray((lr * np.asarray(schedule, np.float64)[::stride]).astype(np.float32))


def scale_by_lr_array(lrs: jnp.ndarray) -> optax.GradientTransformation:
    n = lrs.shape[0]
    return optax.scale_by_schedule(lambda count: -lrs[jnp.minimum(count, n - 1)])


def sgd_group(lr_arr, weight_decay: float, momentum: float) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.trace(decay=momentum, nesterov=True),
                       scale_by_lr_array(lr_arr))


def param_label(path: tuple[str, ...], recipe: Recipe) -> str:
    """The param_groups name of a parameter from its path in the net's state."""
    name = "/".join(str(p) for p in path)
    if "whiten_bias" in name:
        return "whiten_bias"
    if "norm" in name:
        return "norm_biases"
    if recipe.optimizer == "muon":
        return "head" if "head" in name else "filters"
    return "other"


def labels_for(params, recipe: Recipe):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: param_label(tuple(getattr(k, "key", getattr(k, "name", k)) for k in path),
                                    recipe), params)


def build_optimizer(recipe: Recipe, n_train: int, params, *, ns_dtype=jnp.float32,
                    stride: int = 1, freeze_whiten_bias: bool = False):
    """optax.partition over the recipe's groups. stride>1 subsamples the schedules (the proxy net,
    which steps every `stride`-th batch); freeze_whiten_bias freezes it from the start.

    The transform is a static part of the jitted train state, so it is memoized on everything it
    depends on: another run of the same recipe (any seed) reuses it and hits the jit cache
    instead of recompiling."""
    labels = labels_for(params, recipe)
    leaves, treedef = jax.tree_util.tree_flatten(labels)
    return _build_optimizer(recipe, n_train, jnp.dtype(ns_dtype).name, stride, freeze_whiten_bias,
                            treedef, tuple(leaves))


@functools.lru_cache(maxsize=32)
def _build_optimizer(recipe: Recipe, n_train: int, ns_dtype: str, stride: int,
                     freeze_whiten_bias: bool, label_treedef, label_leaves: tuple):
    from .muon import muon
    scheds = lr_schedules(recipe, n_train)
    txs = {}
    for g in param_groups(recipe, n_train):
        lrs = lr_array(g.lr, scheds[g.schedule], stride)
        if g.kind == "muon":
            tx = muon(lrs, g.momentum, recipe.muon_ns_steps, recipe.muon_eps, jnp.dtype(ns_dtype))
        else:
            tx = sgd_group(lrs, g.weight_decay, g.momentum)
        if g.name == "whiten_bias" and freeze_whiten_bias:
            tx = optax.set_to_zero()
        elif g.frozen_after is not None:
            tx = freeze_after(tx, -(-g.frozen_after // stride))
        txs[g.name] = tx
    return optax.partition(txs, jax.tree_util.tree_unflatten(label_treedef, label_leaves))
