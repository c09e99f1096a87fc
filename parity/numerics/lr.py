"""The learning rate each framework applies to each optimizer group at every step of a whole run,
against each other and against the recipe's schedule (airbench_common.lr_schedules)."""
from __future__ import annotations

import math

import numpy as np

from airbench_common import get_recipe, lr_schedules, param_groups
from airbench_common.recipes import Recipe

from .rows import Report
from ..sides import set_counts, torch_state


def torch_lrs(r: Recipe, n_train: int, tnet) -> dict[str, np.ndarray]:
    """lr per group per step as torch's train_step sets it (set_learning_rates); a frozen group's
    lr must itself be 0 from its frozen_after on (airbench_common.params.group_lr), which is how
    both sides freeze."""
    from airbench_torch.optim import set_learning_rates
    st = torch_state(r, n_train, tnet)
    total = r.total_steps(n_train)
    out = {}
    for t in range(total):
        set_learning_rates(st.optimizers, st.schedules, t)
        for opt in st.optimizers:
            for pg in opt.param_groups:
                spec = pg["spec"]
                out.setdefault(spec.name, np.zeros(total))[t] = pg["lr"]
    return out


def jax_lrs(r: Recipe, n_train: int) -> dict[str, np.ndarray]:
    """lr per group per step probed from airbench_jax's optax transform: counters set to t, zero
    momentum, gradient of ones, SGD params at 0 (update = -lr*(1+m)); Muon params of Frobenius
    norm sqrt(out) (renorm ~ identity) and update = -lr*NS((1+m)*g)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax import make_net
    from airbench_jax.muon import flatten_filter, newton_schulz, unflatten_filter
    from airbench_jax.optim import build_optimizer, labels_for
    small = get_recipe(r, widths=(2, 2, 2), proxy_widths=(2, 2, 2))
    _, params, _ = nnx.split(make_net(small, 0), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    tx = build_optimizer(r, n_train, params, ns_dtype=jnp.float32)
    labels = labels_for(params, r)
    groups = {g.name: g for g in param_groups(r, n_train)}

    def probe_params(p, lab):
        if groups[lab].kind == "muon":
            out = p.shape[-1]
            return jnp.full(p.shape, math.sqrt(out) / math.sqrt(p.size), p.dtype)
        return jnp.zeros_like(p)

    pp = jax.tree.map(probe_params, params, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    state0 = tx.init(pp)

    @jax.jit
    def upd(t):
        # minus the same update with a zero gradient (NS(0) = 0): leaves -lr*NS((1+m)g) alone,
        # without the renormalization's rounding residue
        return jax.tree.map(lambda a, b: a - b, tx.update(grads, set_counts(state0, t), pp)[0],
                            tx.update(zeros, set_counts(state0, t), pp)[0])

    leaves_l = jax.tree.leaves(labels)
    total = r.total_steps(n_train)
    out = {name: np.zeros(total) for name in groups}
    ns_dir = {}
    for t in range(total):
        u = upd(jnp.asarray(t, jnp.int32))
        per = {}
        for lab, leaf, p in zip(leaves_l, jax.tree.leaves(u), jax.tree.leaves(pp)):
            g = groups[lab]
            if g.kind == "sgd":
                val = -float(np.asarray(leaf).ravel()[0]) / (1 + g.momentum)
            else:
                key = p.shape
                if key not in ns_dir:
                    gm = (1 + g.momentum) * jnp.ones(p.shape, jnp.float32)
                    o = unflatten_filter(newton_schulz(flatten_filter(gm), r.muon_ns_steps,
                                                       r.muon_eps, jnp.float32), p.shape)
                    ns_dir[key] = np.asarray(o, np.float64)
                o = ns_dir[key]
                val = -float(np.sum(np.asarray(leaf, np.float64) * o) / np.sum(o * o))
            per.setdefault(lab, []).append(val)
        for lab, vals in per.items():
            out[lab][t] = float(np.mean(vals))
    return out


def check_lrs(rep: Report, name, r: Recipe, tnet, n_train: int = 50000):
    """Per group: JAX's lr against torch's at every step, and torch's against the recipe's."""
    tl = torch_lrs(r, n_train, tnet)
    jl = jax_lrs(r, n_train)
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
