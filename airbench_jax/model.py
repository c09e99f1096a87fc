"""CifarNet in Flax NNX (NHWC), matching upstream airbench's network and PyTorch's init.

Whitening: a 2x2 VALID conv 3->24 with bias; its kernel is a `WhitenKernel` variable (not an
`nnx.Param`), so it never receives gradients or optimizer updates. It is set from the eigh of
the 2x2 patch covariance of normalized training images. Ordering: upstream's *library*
(airbench 0.1.8 utils.get_whitening_parameters) flips eigh's output to descending eigenvalue
order, while airbench94_muon.py keeps eigh's ascending order. We follow the library (descending);
the PyTorch reference must do the same. Filters 0..11 are +v_i/sqrt(l_i+eps), 12..23 their
negatives. The whitening bias starts at zero (the library's Conv) or, with recipe.whiten_bias_init ==
'default' (airbench94_muon), PyTorch's uniform init.

BatchNorm is our own module so that it matches PyTorch exactly: normalize with the biased batch
variance (two-pass), update running_var with the unbiased one (n/(n-1)), running = m*running +
(1-m)*batch with m = recipe.bn_momentum ("keep" sense), weight frozen at 1 (absent), bias
trained, statistics in float32.
"""
from __future__ import annotations

import functools

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from airbench_common.recipes import Recipe, get_recipe

from .conv import conv2d, resolve_impl

WHITEN_WIDTH = 24


class WhitenKernel(nnx.Variable):
    """A frozen, data-derived conv kernel: neither a Param nor a BatchStat."""


class Counter(nnx.Variable):
    """Integer bookkeeping (BatchNorm's num_batches_tracked); not averaged by lookahead."""


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_jvp
def gelu(x):
    """Exact GELU as PyTorch computes it, x/2 (1 + erf(x/sqrt 2)), in >= float32 (its opmath).

    The derivative is written out (PyTorch's gelu_backward: cdf + x pdf) rather than left to
    autodiff: autodiff of erfc made XLA:CPU keep five full-size intermediates and two broadcast
    constants for the whitening bias's gradient reduction (~120 ms per step at batch 500, ~60
    with this form). On GPU, 16-bit inputs are computed in float32 as PyTorch's kernels do."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (xf * 0.5 * (1.0 + jax.lax.erf(xf * _SQRT_HALF))).astype(x.dtype)


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    cdf = 0.5 * (1.0 + jax.lax.erf(xf * _SQRT_HALF))
    slope = cdf + xf * jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
    return (xf * cdf).astype(x.dtype), (t.astype(xf.dtype) * slope).astype(x.dtype)


def _torch_uniform(key, shape, fan_in, dtype=jnp.float32):
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in)), PyTorch's default init. Drawn flat and reshaped: the
    same bits as drawing `shape` directly (threefry counts over the flattened index), but XLA:CPU
    compiles a flat draw far faster than a small 4-D one (such as 3x3x8x16)."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def _maxpool_value(x, k: int):
    # the elementwise max of the k*k strided taps: one fused loop over x on XLA:CPU, where a
    # reshape + reduce-max first copied the cropped input (31x31 -> 30x30) and then reduced it
    ho, wo = x.shape[1] // k, x.shape[2] // k
    taps = [x[:, i:ho * k:k, j:wo * k:k, :] for i in range(k) for j in range(k)]
    return functools.reduce(jnp.maximum, taps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def maxpool(x, k: int):
    """k x k max-pool, stride k, floor mode (PyTorch's default).

    The gradient goes to the FIRST maximum of each window in row-major order, as in PyTorch;
    autodiff of a reshape-max would split it equally between tied maxima, and ties are common
    here (GELU's flat minimum), which made gradients differ from PyTorch's by tens of percent.
    lax.reduce_window has PyTorch's semantics too but was ~8% slower on CPU."""
    return _maxpool_value(x, k)


def _maxpool_fwd(x, k):
    y = _maxpool_value(x, k)
    return y, (x, y)


def _maxpool_bwd(k, res, g):
    x, y = res
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for i in range(k):                  # window positions in row-major order
        cols = []
        for j in range(k):
            hit = (x[:, i:ho * k:k, j:wo * k:k, :] == y) & ~taken
            taken = taken | hit
            cols.append(jnp.where(hit, g, jnp.zeros_like(g)))
        rows.append(jnp.stack(cols, axis=3))          # (n, ho, wo, k_j, c)
    dx = jnp.stack(rows, axis=2).reshape(n, ho * k, wo * k, c)  # (n, ho, k_i, wo, k_j, c)
    return (jnp.pad(dx, ((0, 0), (0, h - ho * k), (0, w - wo * k), (0, 0))),)


maxpool.defvjp(_maxpool_fwd, _maxpool_bwd)


class BatchNorm(nnx.Module):
    def __init__(self, features: int, momentum: float, eps: float):
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.running_mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.running_var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
        self.num_batches_tracked = Counter(jnp.zeros((), jnp.int32))
        self.momentum = momentum  # keep sense
        self.eps = eps

    def __call__(self, x, train: bool):
        dtype = x.dtype
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in >= float32
        if train:
            mean = xf.mean(axis=(0, 1, 2))
            var = jnp.square(xf - mean).mean(axis=(0, 1, 2))
            n = xf.size // xf.shape[-1]
            a = 1.0 - self.momentum  # PyTorch's momentum
            self.running_mean[...] = self.running_mean[...] * (1 - a) + a * mean
            self.running_var[...] = self.running_var[...] * (1 - a) + a * var * (n / max(n - 1, 1))
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        else:
            mean, var = self.running_mean[...], self.running_var[...]
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) + self.bias[...]
        return y.astype(dtype)


class Conv(nnx.Module):
    """3x3 'same' conv, no bias; PyTorch default init then Dirac on the first Cin filters (made in
    float32, then stored in `param_dtype`, as PyTorch's net.half() after its float32 init)."""

    def __init__(self, cin: int, cout: int, key, impl: str, dtype, param_dtype=jnp.float32,
                 precision=None):
        w = _torch_uniform(key, (3, 3, cin, cout), cin * 9)
        n = min(cin, cout)
        w = w.at[:, :, :, :n].set(0.0)
        w = w.at[1, 1, jnp.arange(n), jnp.arange(n)].set(1.0)
        self.kernel = nnx.Param(w.astype(param_dtype))
        self.impl = impl
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x):
        return conv2d(x, self.kernel[...].astype(self.dtype), "SAME", self.impl, self.precision)


class ConvGroup(nnx.Module):
    def __init__(self, cin, cout, depth, r: Recipe, key, impl, dtype, param_dtype=jnp.float32,
                 precision=None):
        keys = jax.random.split(key, 3)
        self.depth = depth
        kw = dict(param_dtype=param_dtype, precision=precision)
        self.conv1 = Conv(cin, cout, keys[0], impl, dtype, **kw)
        self.norm1 = BatchNorm(cout, r.bn_momentum, r.bn_eps)
        self.conv2 = Conv(cout, cout, keys[1], impl, dtype, **kw)
        self.norm2 = BatchNorm(cout, r.bn_momentum, r.bn_eps)
        if depth == 3:
            self.conv3 = Conv(cout, cout, keys[2], impl, dtype, **kw)
            self.norm3 = BatchNorm(cout, r.bn_momentum, r.bn_eps)

    def __call__(self, x, train: bool):
        x = gelu(self.norm1(maxpool(self.conv1(x), 2), train))
        x0 = x
        x = gelu(self.norm2(self.conv2(x), train))
        if self.depth == 3:
            # legacy airbench96.py: conv3 -> norm3, add the block input, then GELU
            x = gelu(self.norm3(self.conv3(x), train) + x0)
        return x


def _precisions(dtype, tf32: str):
    """(conv precision, head precision) for a TF32 mode (see CifarNet)."""
    if jnp.dtype(dtype) != jnp.float32:
        return None, None
    if tf32 not in ("off", "conv", "on"):
        from airbench_common.precision import PrecisionError
        raise PrecisionError(f"tf32 {tf32!r} is not one of off, conv, on")
    return ("highest" if tf32 == "off" else "default",
            "default" if tf32 == "on" else "highest")


class CifarNet(nnx.Module):
    """`dtype`: activations and convolutions (the policy's `compute`); `param_dtype`: the stored
    conv kernels, whitening kernel and bias, and head (`params`; BatchNorm stays float32);
    `tf32`: the policy's TF32 mode, which sets the explicit `precision` of float32 convolutions
    and of the head ('off': HIGHEST everywhere; 'conv': convolutions DEFAULT, which lets cuDNN use
    TF32 on Ampere and later, the head HIGHEST; 'on': both DEFAULT), so it does not depend on
    the process's jax_default_matmul_precision. 16-bit compute passes no precision (TF32 is a
    float32 mode); neither has any effect on CPU."""

    def __init__(self, widths, depth: int, r: Recipe, key, *, conv_impl: str = "auto",
                 dtype=jnp.float32, head_scale: float | None = None, param_dtype=jnp.float32,
                 tf32: str = "off"):
        k_wb, k1, k2, k3, k_head = jax.random.split(key, 5)
        impl = resolve_impl(conv_impl)
        self.conv_impl = impl
        self.dtype = jnp.dtype(dtype)
        self.param_dtype = pdt = jnp.dtype(param_dtype)
        self.tf32 = tf32
        conv_precision, self.head_precision = _precisions(self.dtype, tf32)
        self.conv_precision = conv_precision
        kk = r.whiten_kernel
        self.whiten_kernel = WhitenKernel(
            _torch_uniform(k_wb, (kk, kk, 3, WHITEN_WIDTH), 3 * kk * kk).astype(pdt))
        if getattr(r, "whiten_bias_init", "zero") == "default":  # airbench94_muon: nn.Conv2d init
            k_wb, k_b = jax.random.split(k_wb)
            wb = _torch_uniform(k_b, (WHITEN_WIDTH,), 3 * kk * kk)
        else:                                                  # library Conv: zero bias
            wb = jnp.zeros((WHITEN_WIDTH,), jnp.float32)
        self.whiten_bias = nnx.Param(wb.astype(pdt))
        w1, w2, w3 = (int(w) for w in widths)
        kw = dict(param_dtype=pdt, precision=conv_precision)
        self.group1 = ConvGroup(WHITEN_WIDTH, w1, depth, r, k1, impl, self.dtype, **kw)
        self.group2 = ConvGroup(w1, w2, depth, r, k2, impl, self.dtype, **kw)
        self.group3 = ConvGroup(w2, w3, depth, r, k3, impl, self.dtype, **kw)
        head = _torch_uniform(k_head, (w3, 10), w3)
        if r.head_unit_std:
            head = head / jnp.std(head, ddof=1)  # torch's w.std() is the unbiased one
        self.head = nnx.Param(head.astype(pdt))
        self.head_scale = float(r.head_scale if head_scale is None else head_scale)

    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        x = conv2d(x, self.whiten_kernel[...].astype(self.dtype), "VALID", self.conv_impl,
                   self.conv_precision)
        # the bias added in >= float32 (as a conv's fused bias), so that its gradient, a sum over
        # batch x 31 x 31 positions, accumulates in float32: XLA:CPU sums float16 in float16,
        # which made the 16-bit policies' whitening-bias step 0.7 (relative) off PyTorch's
        wide = jnp.promote_types(self.dtype, jnp.float32)
        x = gelu((x.astype(wide) + self.whiten_bias[...].astype(wide)).astype(self.dtype))
        x = self.group1(x, train)
        x = self.group2(x, train)
        x = self.group3(x, train)
        x = maxpool(x, 3).reshape(x.shape[0], -1)
        # the head in the compute dtype, as PyTorch's half Linear (the loss widens to float32)
        logits = jnp.matmul(x, self.head[...].astype(self.dtype), precision=self.head_precision)
        return logits * jnp.asarray(self.head_scale, self.dtype)


def split_net(net: CifarNet):
    """(graphdef, params, rest) of a net: its structure, its trained `nnx.Param` leaves and the
    rest of its state (BatchNorm statistics, the whitening kernel, counters), both as pure dicts,
    the form the train state, the evaluation and checkpoints keep them in."""
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def make_net(recipe: Recipe | str = "airbench94", key=None, *, conv_impl: str = "auto",
             dtype=jnp.float32, proxy: bool = False, param_dtype=jnp.float32,
             tf32: str = "off") -> CifarNet:
    """The recipe's net (a Recipe or a recipe name; or its airbench96_faster proxy net) with
    PyTorch-default init from `key` (a PRNG key or an int seed; None: PRNGKey(0)). Whitening
    is set later, from data (set_whitening)."""
    recipe = get_recipe(recipe)
    if key is None:
        key = jax.random.PRNGKey(0)
    if not isinstance(key, (jax.Array, np.ndarray)):    # an int seed, checked as seeds are
        from airbench_common.validate import check_seed
        key = jax.random.PRNGKey(check_seed(key, "key"))
    kw = dict(conv_impl=conv_impl, dtype=dtype, param_dtype=param_dtype, tf32=tf32)
    if proxy:
        return CifarNet(recipe.proxy_widths, recipe.proxy_depth, recipe, key, **kw)
    return CifarNet(recipe.widths, recipe.depth, recipe, key, **kw)


# ----------------------------------------------------------------------------- whitening
@functools.partial(jax.jit, static_argnums=1)
def _patch_moments(x, kernel: int):
    """sum over all k x k patches of x of f f^T, features in PyTorch's (c, h, w) order. At module
    level, so that it compiles once per shape (a jit made inside patch_covariance compiled anew on
    every call: ~0.3 s of every run's timed setup)."""
    n, h, w, c = x.shape
    ho, wo = h - kernel + 1, w - kernel + 1
    # feature index = ch*k*k + i*k + j
    feats = jnp.stack([x[:, i:i + ho, j:j + wo, ch] for ch in range(c)
                       for i in range(kernel) for j in range(kernel)], axis=-1)
    f = feats.reshape(-1, c * kernel * kernel)
    return f.T @ f


def patch_covariance(images, kernel: int = 2, chunk: int = 1000) -> np.ndarray:
    """(c*k*k, c*k*k) second-moment matrix of all k x k patches, features in PyTorch's (c, h, w)
    order; images: normalized NHWC float."""
    images = jnp.asarray(images, jnp.float32)
    c = images.shape[-1]
    acc = jnp.zeros((c * kernel * kernel,) * 2, jnp.float32)
    count = 0
    for s in range(0, images.shape[0], chunk):
        x = images[s:s + chunk]
        acc = acc + _patch_moments(x, kernel)
        count += x.shape[0] * (x.shape[1] - kernel + 1) * (x.shape[2] - kernel + 1)
    return np.asarray(acc / count)


def whitening_kernel(images, kernel: int = 2, eps: float = 5e-4) -> jnp.ndarray:
    """HWIO (k, k, c, 2*c*k*k) whitening kernel (library order: descending eigenvalues)."""
    cov = patch_covariance(images, kernel)
    evals, evecs = np.linalg.eigh(cov.astype(np.float64))
    evals, evecs = evals[::-1], evecs[:, ::-1]           # the library's .flip(0)
    c = np.asarray(images).shape[-1]
    filt = (evecs.T / np.sqrt(evals + eps)[:, None]).reshape(-1, c, kernel, kernel)  # OIHW
    w = np.concatenate([filt, -filt]).astype(np.float32)
    return jnp.asarray(w.transpose(2, 3, 1, 0))


def set_whitening(net: CifarNet, images, eps: float, kernel=None) -> None:
    """The whitening conv from `images`, or the `kernel` whitening_kernel already made of them
    (a run times that computation as upstream does, apart from the rest of the set-up)."""
    k = net.whiten_kernel[...]
    if kernel is None:
        kernel = whitening_kernel(images, k.shape[0], eps)
    net.whiten_kernel[...] = jnp.asarray(kernel).astype(k.dtype)
