"""The optimizer side of a recipe: its parameter groups, learning-rate schedules and lookahead.

Both implementations build their optimizers and their lookahead from these instead of recomputing
them, so the two sides step with the same learning rate, weight decay, momentum and freezing step.
Which parameter goes in which group is airbench_common.params.
"""
from __future__ import annotations

from .recipes import Recipe

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer group, in PyTorch SGD's (coupled) convention.

    update per step t: g' = g + weight_decay * p; buf = momentum*buf + g'; p -= lr_t * (g' + momentum*buf)
    with lr_t = lr * schedules[schedule][t]. The Muon group uses its own rule (see Muon docs).
    """
    name: str            # "whiten_bias", "norm_biases", "head", "filters", or "other" (filters + head)
    kind: str            # "sgd" or "muon"
    lr: float
    weight_decay: float
    momentum: float
    schedule: str        # key into lr_schedules()
    frozen_after: int | None = None  # no update at all from this step on (whitening bias)

    def frozen_at(self, step) -> bool:
        """True when the group takes no update at 0-based `step` (works on ints and arrays)."""
        return False if self.frozen_after is None else step >= self.frozen_after


def param_groups(r: Recipe, n_train: int, proxy: bool = False) -> list[ParamGroup]:
    """The optimizer groups of a recipe, each parameter in exactly one group (which parameter
    goes where: airbench_common.params, by upstream state-dict name).

    'filters' are the trainable 4-D conv weights (the whitening weight is never trained);
    'other' (SGD recipes) is filters + head. The whitening bias has a group of its own so that its
    freezing (frozen_after) touches nothing else; in SGD recipes its hyper-parameters equal
    'other''s, as in upstream where it sits in that group. proxy=True: the groups of
    airbench96_faster's proxy net, whose whitening bias is frozen from the start."""
    wb_steps = 0 if proxy else r.whiten_bias_steps(n_train)
    if r.optimizer == "muon":
        wd = r.weight_decay * r.batch_size
        return [
            ParamGroup("whiten_bias", "sgd", r.bias_lr, wd / r.bias_lr, r.momentum, "whiten_bias",
                       frozen_after=wb_steps),
            ParamGroup("norm_biases", "sgd", r.bias_lr, wd / r.bias_lr, r.momentum, "main"),
            ParamGroup("head", "sgd", r.head_lr, wd / r.head_lr, r.momentum, "main"),
            ParamGroup("filters", "muon", r.muon_lr, 0.0, r.muon_momentum, "main"),
        ]
    kilostep_scale = 1024 * (1 + 1 / (1 - r.momentum))
    lr = r.lr / kilostep_scale
    wd = r.weight_decay * r.batch_size / kilostep_scale
    lr_biases = lr * r.bias_scaler
    return [
        ParamGroup("whiten_bias", "sgd", lr, wd / lr, r.momentum, "main", frozen_after=wb_steps),
        ParamGroup("norm_biases", "sgd", lr_biases, wd / lr_biases, r.momentum, "main"),
        ParamGroup("other", "sgd", lr, wd / lr, r.momentum, "main"),
    ]


def lr_schedules(r: Recipe, n_train: int) -> dict[str, np.ndarray]:
    """Learning-rate multipliers indexed by step (length total_steps + 1), float64.

    'main' for every group but the Muon recipe's whitening bias, whose 'whiten_bias' schedule
    decays to 0 over its own steps (it would go negative afterwards, but the bias is frozen then:
    ParamGroup.frozen_after).
    """
    total = r.total_steps(n_train)
    t = np.arange(total + 1, dtype=np.float64)
    if r.optimizer == "muon":
        wb = r.whiten_bias_steps(n_train)
        return {"main": 1 - t / total, "whiten_bias": 1 - t / wb}
    if r.schedule == "triangle":
        # upstream's triangle(): piecewise linear through (0, start), (int(peak*T), 1), (T, end)
        peak = int(r.warmup_frac * total)
        main = np.interp(t, [0, peak, total], [r.lr_start, 1.0, r.lr_end])
    else:
        # legacy airbench96's get_lr(): warm-up from start to 1 over int(0.1*T) steps, then linear to 0
        warm = int(total * r.warmup_frac)
        main = np.where(t < warm, r.lr_start + (1 - r.lr_start) * t / max(warm, 1),
                        (total - t) / (total - warm))
        main = main if r.lr_end == 0 else main * (1 - r.lr_end) + r.lr_end
    return {"main": main}


def lookahead_decays(r: Recipe, n_train: int) -> np.ndarray:
    """EMA decay applied after step s (1-based) when s % 5 == 0: 0.95**5 * (s/T)**3.
    At the end of training the EMA is copied into the net (decay 1.0); see LOOKAHEAD_EVERY."""
    total = r.total_steps(n_train)
    return 0.95 ** 5 * (np.arange(total + 1, dtype=np.float64) / total) ** 3


LOOKAHEAD_EVERY = 5
