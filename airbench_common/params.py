"""Which optimizer group each parameter belongs to, decided from its upstream state-dict name.

Both implementations (and the parity suite) name parameters the way upstream airbench's
nn.Sequential does -- `0.weight`/`0.bias` (whitening conv), `{2,3,4}.conv{k}.weight`,
`{2,3,4}.norm{k}.{weight,bias}`, `7.weight` (head) -- the PyTorch side natively, the JAX side
through airbench_jax.convert.upstream_name. This module is the one place that maps those names to
the group names of airbench_common.schedules.param_groups, so the two sides cannot group
differently.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import UsageError

# role of a parameter -> group name, per optimizer kind. A role mapped to None is never trained.
_ROLES = (
    ("whiten_kernel", re.compile(r"0\.weight")),             # set from data, never trained
    ("whiten_bias", re.compile(r"0\.bias")),
    ("norm_weight", re.compile(r"[234]\.norm[123]\.weight")),  # BatchNorm scale, frozen at 1
    ("norm_bias", re.compile(r"[234]\.norm[123]\.bias")),
    ("filter", re.compile(r"[234]\.conv[123]\.weight")),
    ("head", re.compile(r"7\.weight")),
)

GROUP_OF_ROLE = {
    "sgd": {"whiten_bias": "whiten_bias", "norm_bias": "norm_biases", "filter": "other",
            "head": "other"},
    "muon": {"whiten_bias": "whiten_bias", "norm_bias": "norm_biases", "head": "head",
             "filter": "filters"},
}


def role(name: str) -> str:
    """The role of an upstream-named parameter (one of the _ROLES names)."""
    for r, pattern in _ROLES:
        if pattern.fullmatch(name):
            return r
    raise UsageError(f"parameter {name!r} is not an airbench CifarNet parameter; expected a name "
                     "like '0.bias', '2.conv1.weight', '3.norm2.bias' or '7.weight'")


def group_of(name: str, optimizer: str) -> str | None:
    """The param_groups() group name of parameter `name` for a recipe with this optimizer kind
    ('sgd' or 'muon'); None for a parameter that is never trained."""
    if optimizer not in GROUP_OF_ROLE:
        raise UsageError(f"optimizer {optimizer!r} is not one of {sorted(GROUP_OF_ROLE)}")
    return GROUP_OF_ROLE[optimizer].get(role(name))


def group_names(optimizer: str) -> tuple[str, ...]:
    """The group names of this optimizer kind, in param_groups() order."""
    return tuple(dict.fromkeys(GROUP_OF_ROLE[optimizer].values()))


def group_lr(group, schedules, step):
    """The learning rate of `group` (a schedules.ParamGroup) at 0-based `step` (an int or an array
    of steps): group.lr * its schedule, and exactly 0 from group.frozen_after on.

    This is the one freezing mechanism of both implementations: every update of a group is
    scaled by this lr (PyTorch's SGD `lr`, the optax chain's final scale), so a frozen group
    moves by exactly 0 while its optimizer state is never read again."""
    steps = np.asarray(step)
    lr = group.lr * np.asarray(schedules[group.schedule], np.float64)[steps]
    return np.where(group.frozen_at(steps), 0.0, lr)
