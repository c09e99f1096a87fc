"""airbench94_muon's Muon as an optax GradientTransformation.

Per filter tensor p (HWIO kernel) with gradient g, at step t with learning rate lr_t:
    buf = m*buf + g                      (no dampening, no bias correction)
    g'  = g + m*buf                      (Nesterov)
    p_r = p * sqrt(out_channels) / ||p||_F          (renormalization BEFORE the step)
    p  <- p_r - lr_t * NS(g' flattened to (out, in*kh*kw))
NS: divide by (||X||_F + eps), transpose if rows > cols, `ns_steps` quintic Newton-Schulz steps
with NS_COEFFS, transpose back, all in `ns_dtype` (bfloat16 on GPU by default as upstream,
float32 on CPU where bfloat16 matmul is slower; recorded in run records).

Because the renormalization rescales p itself, the transform needs the params: its update is
    u = (p_r - p) - lr_t * NS(g')
so that optax.apply_updates(p, u) == p_r - lr_t * NS(g') (exact up to one float rounding).

Why not `optax.contrib.muon` (optax 0.2.8) as is -- it shares the quintic NS coefficients
(3.4445, -4.7750, 2.0315), but:
  * its momentum is an EMA with bias correction: mu = b*mu + (1-b)*g, and the Nesterov step uses
    b*mu_hat + (1-b)*g_hat, each term bias-corrected (divided by 1 - b**k for its count k);
    airbench's is PyTorch's undamped buf = m*buf + g with g + m*buf, no bias correction;
  * it does no weight renormalization (airbench rescales each filter tensor to Frobenius norm
    sqrt(out_channels) before every step);
  * Newton-Schulz runs in the dtype of its input (no choice of ns_dtype; airbench runs it in
    bfloat16 on GPU whatever the gradient dtype), and its Frobenius normalization uses eps=1e-8;
  * it scales the orthogonalized update by sqrt(max(1, fan_out/fan_in)) (or a consistent-RMS
    factor), defaults to 5 NS steps, treats only 2-D leaves as matrices unless given
    MuonDimensionNumbers, and sends every other leaf to AdamW.
Each changes upstream's trajectory, so we write the airbench variant and keep optax's conventions
(state, schedules, partition).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from airbench_common.recipes import NS_COEFFS


def newton_schulz(g, steps: int = 3, eps: float = 1e-7, dtype=jnp.float32):
    """Upstream's zeropower_via_newtonschulz5 on a 2-D matrix."""
    assert g.ndim == 2
    a, b, c = NS_COEFFS
    x = g.astype(dtype)
    wide = jnp.promote_types(dtype, jnp.float32)  # the norm in >= float32 (bfloat16 NS)
    x = x / (jnp.sqrt(jnp.sum(jnp.square(x.astype(wide)))).astype(dtype) + eps)
    transpose = g.shape[0] > g.shape[1]
    if transpose:
        x = x.T
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    if transpose:
        x = x.T
    return x


def flatten_filter(w):
    """HWIO (kh, kw, in, out) -> (out, in*kh*kw) in PyTorch's OIHW flattening order."""
    return jnp.transpose(w, (3, 2, 0, 1)).reshape(w.shape[3], -1)


def unflatten_filter(m, shape):
    kh, kw, cin, cout = shape
    return jnp.transpose(m.reshape(cout, cin, kh, kw), (2, 3, 1, 0))


class MuonState(NamedTuple):
    count: jnp.ndarray
    momentum: optax.Updates


def muon(learning_rates, momentum: float, ns_steps: int = 3, eps: float = 1e-7,
         ns_dtype=jnp.float32, renormalize: bool = True) -> optax.GradientTransformation:
    """learning_rates: array of lr per step (indexed by this transform's own count) or a float."""
    lrs = jnp.asarray(learning_rates, jnp.float32)

    def init_fn(params):
        return MuonState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("muon needs params (for the filter renormalization)")
        lr = lrs if lrs.ndim == 0 else lrs[jnp.minimum(state.count, lrs.shape[0] - 1)]
        buf = jax.tree.map(lambda b, g: momentum * b + g, state.momentum, updates)

        def one(g, b, p):
            g = g + momentum * b
            if g.ndim == 4:
                o = unflatten_filter(newton_schulz(flatten_filter(g), ns_steps, eps, ns_dtype),
                                     g.shape)
            else:
                o = newton_schulz(g.reshape(g.shape[0], -1), ns_steps, eps, ns_dtype).reshape(g.shape)
            o = o.astype(p.dtype)
            if renormalize:
                # as PyTorch's p.mul_(sqrt(out) / p.norm()): the norm accumulated in >= float32,
                # the norm and the scale rounded to p's dtype, the product in p's dtype
                out = p.shape[-1] if p.ndim == 4 else p.shape[0]
                wide = jnp.promote_types(p.dtype, jnp.float32)
                norm = jnp.sqrt(jnp.sum(jnp.square(p.astype(wide)))).astype(p.dtype)
                scale = (jnp.sqrt(jnp.asarray(out, wide)) / norm.astype(wide)).astype(p.dtype)
                pr = p * scale
                return (pr - p) - lr * o
            return -lr * o

        new = jax.tree.map(one, updates, buf, params)
        return new, MuonState(state.count + 1, buf)

    return optax.GradientTransformation(init_fn, update_fn)
