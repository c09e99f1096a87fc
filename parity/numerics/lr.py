"""The learning rate each framework applies to each optimizer group at every step of a whole run,
against each other and against the recipe's schedule (airbench_common.lr_schedules)."""
from __future__ import annotations

import numpy as np

from airbench_common import lr_schedules, param_groups
from airbench_common.recipes import Recipe
from airbench_common.workload import get_workload

from .rows import Report


def check_lrs(rep: Report, name, r: Recipe, n_train: int = 50000):
    """Per group: JAX's lr against torch's at every step, and torch's against the recipe's
    (torch: what train_step sets on each param group; JAX: probed from its optax transform; a
    frozen group's lr must itself be 0 from its frozen_after on, which is how both sides
    freeze, airbench_common.params.group_lr)."""
    tl = get_workload("torch").learning_rates(r, n_train)
    jl = get_workload("jax").learning_rates(r, n_train)
    sched = lr_schedules(r, n_train)
    total = r.total_steps(n_train)
    for g in param_groups(r, n_train):
        ref = g.lr * sched[g.schedule][:total]
        if g.frozen_after is not None:
            ref = np.where(np.arange(total) >= g.frozen_after, 0.0, ref)
        scale = float(np.abs(ref).max())
        rep.add(name, f"lr schedule [{g.name}] jax vs torch ({total} steps)", jl[g.name],
                tl[g.name], "lr", scale=scale)
        rep.add(name, f"lr schedule [{g.name}] torch vs recipe", tl[g.name], ref, "lr",
                scale=scale)
