"""The parameters of a net by optimizer group, from their upstream names (airbench_common.params
decides, for both frameworks alike), and a step's change of them."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from airbench_common.params import group_of
from airbench_common.recipes import Recipe
from airbench_common.schedules import param_groups

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm state, no params


def group_names(names: Iterable[str], r: Recipe, n_train: int) -> dict[str, list[str]]:
    """{param_groups() group name: the upstream names in it}, in the order of `names`."""
    out = {g.name: [] for g in param_groups(r, n_train)}
    for k in names:
        g = None if k.endswith(BUFFERS) else group_of(k, r.optimizer)
        if g is not None:
            out[g].append(k)
    return out


def trainable_names(names: Iterable[str], r: Recipe) -> list[str]:
    """The names of `names` some optimizer group trains, in their order."""
    return [k for k in names if not k.endswith(BUFFERS) and group_of(k, r.optimizer) is not None]


def deltas(after: dict, before: dict, names) -> dict:
    """after - before of each name, in float64."""
    return {k: np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64) for k in names}
