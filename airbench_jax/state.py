"""The train state and one training step, as pure functions over an explicit TrainState pytree.

The net is split into (graphdef, params, rest) (model.split_net): params are the nnx.Param leaves
(trained), rest the other state (BatchNorm running stats, the whitening kernel, counters), both
kept as pure dicts. `take_step` is one step on an already augmented and normalized NHWC batch:
the proxy's selection (airbench96_faster), the loss, the optimizer update and the lookahead.
Static parts (graphdefs, optax transforms, recipe) are static pytree fields, so the state can be
vmapped over seeds (airbench_jax.seeds) and scanned over an epoch (airbench_jax.loop).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from airbench_common.precision import Precision
from airbench_common.recipes import Recipe
from airbench_common.schedules import LOOKAHEAD_EVERY, lookahead_decays

from . import precision as prec
from .model import CifarNet, make_net, set_whitening, split_net
from .optim import build_optimizer


@struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    rest: Any
    opt_state: Any
    ema: Any                      # lookahead EMA of (params, float rest), or None
    la_decays: Any                # lookahead decay per step (float32), or None
    proxy_params: Any = None
    proxy_rest: Any = None
    proxy_opt_state: Any = None
    graphdef: Any = struct.field(pytree_node=False, default=None)
    tx: Any = struct.field(pytree_node=False, default=None)
    proxy_graphdef: Any = struct.field(pytree_node=False, default=None)
    proxy_tx: Any = struct.field(pytree_node=False, default=None)
    recipe: Any = struct.field(pytree_node=False, default=None)
    n_train: int = struct.field(pytree_node=False, default=0)
    total_steps: int = struct.field(pytree_node=False, default=0)


def init_train_state(recipe: Recipe, n_train: int, key, whiten_images=None, net=None,
                     ns_dtype=None, *, conv_impl: str = "auto", dtype=None, precision=None,
                     param_dtype=None, whiten_kernel=None) -> TrainState:
    """A fresh TrainState. whiten_images: normalized NHWC float images for the whitening conv
    (the recipe's first `whiten_images` training images), or `whiten_kernel`, the whitening
    kernel already computed from them (model.whitening_kernel); with `net` given, its weights
    are used as-is (its whitening too, unless one of those is also given) in its dtypes.
    precision: a policy name or airbench_common.precision.Precision (None: the device's
    default); dtype (params and compute), param_dtype and ns_dtype override its parts."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    policy = prec.resolve(precision, dtype=dtype, param_dtype=param_dtype, ns_dtype=ns_dtype)
    own_dtypes = net is not None and precision is None and dtype is None and param_dtype is None
    return build_state(recipe, n_train, key, policy, net=net, net_dtypes=own_dtypes,
                       conv_impl=conv_impl, whiten_images=whiten_images,
                       whiten_kernel=whiten_kernel)


def build_state(recipe: Recipe, n_train: int, key, policy: Precision, *, net=None,
                net_dtypes: bool = False, conv_impl: str = "auto", whiten_images=None,
                whiten_kernel=None) -> TrainState:
    """init_train_state under an already resolved precision `policy` (a run resolves it once,
    where it starts). `net_dtypes`: a given `net` keeps its own dtypes and the proxy net follows
    them, not the policy's (the optimizer's Newton-Schulz dtype is the policy's either way)."""
    dt = prec.dtypes(policy)
    pkw = dict(dtype=dt["compute"], param_dtype=dt["params"], tf32=policy.tf32)
    if net_dtypes:
        pkw = dict(dtype=net.dtype, param_dtype=getattr(net, "param_dtype", net.dtype),
                   tf32=getattr(net, "tf32", "off"))
    k_net, k_proxy = jax.random.split(key)
    whiten = whiten_images is not None or whiten_kernel is not None
    if net is None:
        net = make_net(recipe, k_net, conv_impl=conv_impl, **pkw)
    if whiten:
        set_whitening(net, whiten_images, recipe.whiten_eps, whiten_kernel)
    graphdef, params, rest = split_net(net)
    tx = build_optimizer(recipe, n_train, params, ns_dtype=dt["newton_schulz"])
    total = recipe.total_steps(n_train)
    ema = la = None
    if recipe.lookahead:
        ema = (params, float_only(rest))
        la = jnp.asarray(lookahead_decays(recipe, n_train).astype(np.float32))
    state = dict(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                 opt_state=tx.init(params), ema=ema, la_decays=la, graphdef=graphdef, tx=tx,
                 recipe=recipe, n_train=n_train, total_steps=total)
    if recipe.filter_keep:
        pnet = make_net(recipe, k_proxy, conv_impl=net.conv_impl, proxy=True, **pkw)
        if whiten:
            set_whitening(pnet, whiten_images, recipe.whiten_eps, whiten_kernel)
        pg, pp, pr = split_net(pnet)
        ptx = build_optimizer(recipe, n_train, pp, ns_dtype=dt["newton_schulz"],
                              stride=recipe.proxy_train_every, freeze_whiten_bias=True)
        state.update(proxy_params=pp, proxy_rest=pr, proxy_opt_state=ptx.init(pp),
                     proxy_graphdef=pg, proxy_tx=ptx)
    return TrainState(**state)


def float_only(tree):
    """The tree with its non-float leaves (integer counters) replaced by None."""
    return jax.tree.map(lambda v: v if jnp.issubdtype(v.dtype, jnp.floating) else None, tree)


def net_from_state(state: TrainState) -> CifarNet:
    return nnx.merge(state.graphdef, state.params, state.rest)


def per_example_loss(logits, labels, label_smoothing: float):
    """PyTorch CrossEntropyLoss(label_smoothing=ls, reduction='none')."""
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)


def _forward_train(graphdef, params, rest, x):
    net = nnx.merge(graphdef, params, rest)
    logits = net(x, train=True)
    return logits, split_net(net)[2]


def _proxy_select(state: TrainState, x, y):
    """airbench96_faster: the proxy scores the batch (training on every k-th step) and the
    `filter_keep` highest-loss examples (in batch order) are returned for the main net."""
    r = state.recipe
    keep = r.filter_keep
    ls = r.label_smoothing

    def select(l1):
        idx = jax.lax.top_k(jax.lax.stop_gradient(l1), keep)[1]
        return jnp.sort(idx)

    def train_branch(pp, pr, po):
        def f(p):
            logits, new_rest = _forward_train(state.proxy_graphdef, p, pr, x)
            l1 = per_example_loss(logits, y, ls)
            idx = select(l1)
            mask = jnp.zeros_like(l1).at[idx].set(1.0)
            return (l1 * mask).sum(), (idx, new_rest)
        (_, (idx, new_rest)), g = jax.value_and_grad(f, has_aux=True)(pp)
        upd, po = state.proxy_tx.update(g, po, pp)
        return optax.apply_updates(pp, upd), new_rest, po, idx

    def score_branch(pp, pr, po):
        logits, new_rest = _forward_train(state.proxy_graphdef, pp, pr, x)
        return pp, new_rest, po, select(per_example_loss(logits, y, ls))

    pp, pr, po, idx = jax.lax.cond(state.step % r.proxy_train_every == 0, train_branch,
                                   score_branch, state.proxy_params, state.proxy_rest,
                                   state.proxy_opt_state)
    state = state.replace(proxy_params=pp, proxy_rest=pr, proxy_opt_state=po)
    return state, x[idx], y[idx]


def lookahead(state: TrainState, params, rest, step):
    """Upstream's Lookahead after step `step`: every LOOKAHEAD_EVERY steps the average (`ema`)
    moves toward the net by 1 - decay[step] and the net takes the average's values; at the last
    step the net takes them too. In between both stay as they are. Written with `where`, not
    `cond`, so that vmapped seeds share one program -> (ema, params, rest)."""
    every = (step % LOOKAHEAD_EVERY) == 0
    last = step >= state.total_steps
    rate = jnp.where(every, 1.0 - state.la_decays[jnp.minimum(step, state.total_steps)], 0.0)
    net = (params, float_only(rest))          # integer leaves (counters) are not averaged
    ema = jax.tree.map(lambda e, n: e + rate.astype(e.dtype) * (n - e), state.ema, net)
    sync = every | last
    new_params, new_float_rest = jax.tree.map(lambda e, n: jnp.where(sync, e, n), ema, net)
    rest = jax.tree.map(lambda new, old: old if new is None else new, new_float_rest, rest,
                        is_leaf=lambda v: v is None)
    return ema, new_params, rest


def take_step(state: TrainState, x, y):
    """One training step (traced inside a jit: train_step, the epoch scan) on an augmented,
    normalized NHWC batch -> (state, summed loss, #correct), on the `filter_keep` examples the
    proxy selected where the recipe filters."""
    r = state.recipe
    if r.filter_keep:
        state, x, y = _proxy_select(state, x, y)

    def loss_fn(params):
        logits, new_rest = _forward_train(state.graphdef, params, state.rest, x)
        loss = per_example_loss(logits, y, r.label_smoothing).sum()
        return loss, (new_rest, logits)

    (loss, (rest, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    s = state.step + 1
    ema = state.ema
    if ema is not None:
        ema, params, rest = lookahead(state, params, rest, s)
    correct = (logits.argmax(-1) == y).sum()
    state = state.replace(step=s, params=params, rest=rest, opt_state=opt_state, ema=ema)
    return state, loss, correct


@jax.jit
def train_step(state: TrainState, images, labels):
    """One step on an already augmented + normalized NHWC batch -> (state, summed loss)."""
    state, loss, _ = take_step(state, images, labels)
    return state, loss
