"""What a JAX train state does, read from outside it, for parity (through the JAX workload,
airbench_jax.workload): the learning rate each optimizer group is given at every step (probed
from the optax transform itself), the dtypes a state stores and computes in, and what a
benchmark records about where JAX runs.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from airbench_common.recipes import Recipe, get_recipe
from airbench_common.schedules import param_groups


def set_counts(tree, t: int):
    """Every `count` field of an optax state tree set to t (momentum buffers untouched)."""
    if hasattr(tree, "_fields"):
        vals = {f: set_counts(getattr(tree, f), t) for f in tree._fields}
        if "count" in tree._fields:
            vals["count"] = jnp.full_like(tree.count, t)
        return type(tree)(**vals)
    if isinstance(tree, dict):
        return type(tree)({k: set_counts(v, t) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return type(tree)(set_counts(v, t) for v in tree)
    return tree


def learning_rates(r: Recipe, n_train: int) -> dict[str, np.ndarray]:
    """lr per group per step probed from the optax transform of a small net of the recipe:
    counters set to t, zero momentum, gradient of ones, SGD params at 0 (update = -lr*(1+m));
    Muon params of Frobenius norm sqrt(out) (renorm ~ identity) and update = -lr*NS((1+m)*g)."""
    from .model import make_net
    from .muon import muon
    from .optim import build_optimizer, labels_for
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
    state0 = tx.init(pp)

    def gradient_part(tx, state, params):
        # the update for a gradient of ones minus the same update for a zero gradient (NS(0) =
        # 0): leaves -lr*NS((1+m)g) alone, without the renormalization's rounding residue
        with_grad = tx.update(jax.tree.map(jnp.ones_like, params), state, params)[0]
        without = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)[0]
        return jax.tree.map(lambda a, b: a - b, with_grad, without)

    @jax.jit
    def upd(t):
        return gradient_part(tx, set_counts(state0, t), pp)

    @functools.partial(jax.jit, static_argnums=0)
    def unit_step(momentum, p):
        # the group's own Muon transform at lr 1 on the same gradient and params: the direction
        # the lr multiplies, by the same operations as inside the optimizer (a Newton-Schulz run
        # as another program may round differently, by a few float32 ulps, and bias every lr)
        one = muon(1.0, momentum, r.muon_ns_steps, r.muon_eps, jnp.float32)
        return -gradient_part(one, one.init(p), p)

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
                    ns_dir[key] = np.asarray(unit_step(g.momentum, p), np.float64)
                o = ns_dir[key]
                val = -float(np.sum(np.asarray(leaf, np.float64) * o) / np.sum(o * o))
            per.setdefault(lab, []).append(val)
        for lab, vals in per.items():
            out[lab][t] = float(np.mean(vals))
    return out


def stored_dtypes(state) -> dict[str, str]:
    """{upstream name: dtype name} of every float array of the state's net."""
    from .convert import upstream_name
    return {upstream_name(path): str(v.dtype)
            for tree in (state.params, state.rest)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
            if jnp.issubdtype(v.dtype, jnp.floating)}


def ns_dtype(state) -> str | None:
    """The dtype(s) of the matmuls in the optimizer update, read from its jaxpr (only Muon's
    Newton-Schulz multiplies matrices there); None: no matmul."""
    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield from (str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
                yield from dots(sub)
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", None)
                if inner is not None:
                    yield from dots(getattr(inner, "jaxpr", inner))
    jp = jax.make_jaxpr(state.tx.update)(state.params, state.opt_state, state.params)
    found = sorted(set(dots(jp.jaxpr)))
    return ",".join(found) if found else None


def backend_info(conv_impl: str | None, recipe, batch: int | None) -> dict:
    """JAX's device, the CPU (airbench_jax.cpu), and oneDNN's status and version with, where the
    lowering is 'onednn', its kernels for the recipe's first 3x3 conv at `batch` images."""
    from . import onednn
    from .cpu import cpu_info, describe
    st = onednn.status()
    dnnl = dict(available=st.available, reason=st.reason, version=st.onednn_version)
    if conv_impl == "onednn":
        dnnl["kernels_first_conv"] = onednn.kernels(
            (batch, 31, 31, 24), (3, 3, 24, get_recipe(recipe).widths[0]))
    return dict(device=str(jax.devices()[0]), cpu=cpu_info(), summary=describe(), onednn=dnnl)
