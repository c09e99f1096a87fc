"""Optimizers built from airbench_common.schedules.param_groups / lr_schedules (no restated
hyper-parameters). Each group is PyTorch-style Nesterov SGD with coupled weight decay
    g' = g + wd*p; buf = m*buf + g'; p -= lr_t*(g' + m*buf)
= optax.add_decayed_weights(wd) -> optax.trace(m, nesterov=True) -> optax.scale_by_schedule(-lr_t),
or Muon (airbench_jax.muon); groups are combined with optax.partition over parameter labels, which
airbench_common.params decides from each parameter's upstream state-dict name.
lr_t is airbench_common.params.group_lr: exactly 0 once a group is frozen (`frozen_after`, the
whitening bias), the same freezing mechanism as the PyTorch side's.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from airbench_common.params import group_lr, group_of
from airbench_common.recipes import Recipe
from airbench_common.schedules import lr_schedules, param_groups

from .convert import upstream_name
from .precision import dtype_name


def lr_array(group, schedules, stride: int = 1) -> jnp.ndarray:
    """The group's lr per step (params.group_lr, in float64 like PyTorch's LambdaLR, then
    float32); stride > 1 keeps every stride-th step (the proxy's own step count)."""
    steps = np.arange(len(schedules[group.schedule]))[::stride]
    return jnp.asarray(group_lr(group, schedules, steps).astype(np.float32))


def scale_by_lr_array(lrs: jnp.ndarray) -> optax.GradientTransformation:
    n = lrs.shape[0]
    return optax.scale_by_schedule(lambda count: -lrs[jnp.minimum(count, n - 1)])


def sgd_group(lr_arr, weight_decay: float, momentum: float) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.trace(decay=momentum, nesterov=True),
                       scale_by_lr_array(lr_arr))


def param_label(path: tuple[str, ...], recipe: Recipe) -> str:
    """The param_groups name of a trained parameter from its path in the net's params."""
    label = group_of(upstream_name(path), recipe.optimizer)
    if label is None:
        raise ValueError(f"{'/'.join(map(str, path))} is not a trained parameter")
    return label


def labels_for(params, recipe: Recipe):
    """The params pytree with each leaf replaced by its group name (optax.partition's labels)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: param_label(path, recipe), params)


def build_optimizer(recipe: Recipe, n_train: int, params, *, ns_dtype=jnp.float32,
                    stride: int = 1, freeze_whiten_bias: bool = False):
    """optax.partition over the recipe's groups. stride>1 subsamples the schedules (the proxy net,
    which steps every `stride`-th batch); freeze_whiten_bias: the proxy's groups
    (param_groups(proxy=True): the whitening bias frozen from the start).

    The transform is a static part of the jitted train state, so it is memoized on everything it
    depends on: another run of the same recipe (any seed) reuses it and hits the jit cache
    instead of recompiling."""
    labels = labels_for(params, recipe)
    leaves, treedef = jax.tree_util.tree_flatten(labels)
    return _build_optimizer(recipe, n_train, dtype_name(ns_dtype), stride, freeze_whiten_bias,
                            treedef, tuple(leaves))


@functools.lru_cache(maxsize=32)
def _build_optimizer(recipe: Recipe, n_train: int, ns_dtype: str, stride: int,
                     freeze_whiten_bias: bool, label_treedef, label_leaves: tuple):
    from .muon import muon
    scheds = lr_schedules(recipe, n_train)
    txs = {}
    for g in param_groups(recipe, n_train, proxy=freeze_whiten_bias):
        lrs = lr_array(g, scheds, stride)
        if g.kind == "muon":
            txs[g.name] = muon(lrs, g.momentum, recipe.muon_ns_steps, recipe.muon_eps,
                               jnp.dtype(ns_dtype))
        else:
            txs[g.name] = sgd_group(lrs, g.weight_decay, g.momentum)
    return optax.partition(txs, jax.tree_util.tree_unflatten(label_treedef, label_leaves))
