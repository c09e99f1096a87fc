"""The weights and batches every numerics check runs on, identical on every machine.

A check's verdict must not depend on the CPU it runs on. Float32 results of library kernels do
(reduction order follows the vector width: AVX2 vs AVX-512), and so do eigenvector signs of an
eigendecomposition. So every input of parity.numerics is made here, in numpy float64, by
operations whose result is either exact (integer random draws, elementwise IEEE arithmetic) or
differs between machines only in the last bits of a float64 (BLAS reductions, eigh, exp/log),
then rounded to `KEEP_BITS` significant bits before it becomes float32:

* eigenvectors get a canonical sign (largest-magnitude component positive) and descending order;
* a float64 last-bit difference (2**-52 relative) moves a value across a rounding boundary of the
  20-bit grid with probability ~2**-31 per element, i.e. practically never for the ~10**7
  elements of all recipes; `inputs_sha256` hashes the result so two machines' tables can be
  compared row by row (the JSON of `python -m parity.numerics` records it per recipe).

What the inputs are: PyTorch's default init (uniform in +/-1/sqrt(fan_in)) drawn from numpy's
PCG64, the recipes' Dirac filters and head scaling, the whitening filters of the first images,
and BatchNorm biases / running statistics / the whitening bias at non-trivial values so that the
conversion and eval mode are exercised. The values are not torch's `manual_seed` draws; they only
have to be generic and the same everywhere.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

from airbench_common.recipes import Recipe, get_recipe

KEEP_BITS = 20
"""Significant bits kept of every float64 input value before it becomes float32 (float32 has 24):
the 4 spare bits absorb float64 last-bit differences between machines."""


def quantize(x, bits: int = KEEP_BITS) -> np.ndarray:
    """Round float64 values to `bits` significant bits (exact in float32 for bits <= 24)."""
    x = np.asarray(x, np.float64)
    m, e = np.frexp(x)
    return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e).astype(np.float32)


def patch_covariance64(images_nhwc: np.ndarray, k: int, chunk: int = 500) -> np.ndarray:
    """Covariance (uncentered, as upstream) of all k x k patches of float NHWC images, float64,
    features in (channel, row, col) order -- the order of the whitening conv's OIHW filters."""
    n, h, w, c = images_nhwc.shape
    ho, wo = h - k + 1, w - k + 1
    cov = np.zeros((c * k * k, c * k * k))
    for s in range(0, n, chunk):
        x = np.asarray(images_nhwc[s:s + chunk], np.float64)
        f = np.stack([x[:, i:i + ho, j:j + wo, ch] for ch in range(c) for i in range(k)
                      for j in range(k)], -1).reshape(-1, c * k * k)
        cov += f.T @ f
    return cov / (n * ho * wo)


def canonical_eigh(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors as rows, each with its largest-magnitude
    component positive: the same on every machine whatever sign LAPACK returns."""
    evals, evecs = np.linalg.eigh(cov)
    evals, rows = evals[::-1], evecs.T[::-1]
    pivot = np.argmax(np.abs(rows), axis=1)
    signs = np.sign(rows[np.arange(len(rows)), pivot])
    return evals.copy(), rows * signs[:, None]


def whitening_filters64(images_nhwc: np.ndarray, k: int, eps: float) -> np.ndarray:
    """(2*C*k*k, C, k, k) float64 whitening filters: eigenvector / sqrt(eigenvalue + eps), largest
    eigenvalue first, then the same negated (upstream's construction, canonical signs)."""
    c = images_nhwc.shape[-1]
    evals, rows = canonical_eigh(patch_covariance64(images_nhwc, k))
    v = rows.reshape(-1, c, k, k) / np.sqrt(evals + eps)[:, None, None, None]
    return np.concatenate([v, -v])


def _conv_init(rng, shape, dirac: bool) -> np.ndarray:
    """PyTorch's default conv init (kaiming_uniform with a=sqrt(5): U(+/-1/sqrt(fan_in))), then
    the Dirac kernel on the first min(out, in) filters, as the recipes' Conv does."""
    fan_in = int(np.prod(shape[1:]))
    w = rng.uniform(-1.0, 1.0, size=shape) / np.sqrt(fan_in)
    if dirac:
        n = min(shape[0], shape[1])
        w[:n] = 0.0
        w[np.arange(n), np.arange(n), shape[2] // 2, shape[3] // 2] = 1.0
    return w


def scaled_recipe(name, width_scale: float = 1.0, **overrides) -> Recipe:
    """The recipe `name` with `overrides`, its widths and proxy widths scaled by width_scale
    (rounded, at least 1): the small nets the checks run on."""
    r = get_recipe(name, **overrides)
    if width_scale != 1.0:
        w = tuple(max(1, int(round(x * width_scale))) for x in r.widths)
        pw = tuple(max(1, int(round(x * width_scale))) for x in r.proxy_widths)
        r = get_recipe(r, widths=w, proxy_widths=pw)
    return r


def net_shapes(r: Recipe) -> dict[str, tuple]:
    """The upstream state-dict names and shapes of the recipe's net, in state-dict order: the
    whitening conv (2 x 3 x k x k filters of 3 x k x k), per group its convs each followed by a
    BatchNorm, the head Linear(width, 10) without bias."""
    k = r.whiten_kernel
    out = {"0.weight": (2 * 3 * k * k, 3, k, k), "0.bias": (2 * 3 * k * k,)}
    c_in = 2 * 3 * k * k
    for idx, width in zip((2, 3, 4), r.widths):
        for j in range(1, r.depth + 1):
            out[f"{idx}.conv{j}.weight"] = (width, c_in if j == 1 else width, 3, 3)
            for field in ("weight", "bias", "running_mean", "running_var"):
                out[f"{idx}.norm{j}.{field}"] = (width,)
            out[f"{idx}.norm{j}.num_batches_tracked"] = ()
        c_in = width
    out["7.weight"] = (10, r.widths[-1])
    return out


def reference_weights(r: Recipe, whiten_images_nhwc: np.ndarray, seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """The shared weights of the recipe's net (reference_arrays over net_shapes): the same
    values on every machine, whitening from the normalized NHWC images."""
    return reference_arrays(r, whiten_images_nhwc, net_shapes(r), seed)


def reference_arrays(r: Recipe, whiten_images_nhwc: np.ndarray, names_shapes: Mapping[str, tuple],
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of the recipe's net (upstream state-dict names -> float32 / int64 arrays),
    made as the module docstring says. `names_shapes`: the net's state-dict names and shapes."""
    rng = np.random.default_rng([seed, 2026])
    out: dict[str, np.ndarray] = {}
    for name, shape in names_shapes.items():
        shape = tuple(shape)
        if name == "0.weight":
            v = whitening_filters64(whiten_images_nhwc, r.whiten_kernel, r.whiten_eps)
        elif name == "0.bias":
            v = 0.05 * rng.standard_normal(shape)
        elif name.endswith("num_batches_tracked"):
            out[name] = np.asarray(7, np.int64)
            continue
        elif name.endswith("running_mean"):
            v = 0.2 * rng.standard_normal(shape)
        elif name.endswith("running_var"):
            v = 0.5 + 1.5 * rng.uniform(size=shape)
        elif "norm" in name and name.endswith(".weight"):
            v = np.ones(shape)                      # frozen at 1 in every recipe
        elif "norm" in name and name.endswith(".bias"):
            v = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 4:
            v = _conv_init(rng, shape, dirac=True)
        elif len(shape) == 2:                       # the head: Linear(width, 10), no bias
            v = rng.uniform(-1.0, 1.0, size=shape) / np.sqrt(shape[1])
            if r.head_unit_std:
                v = v / v.std(ddof=1)
        else:
            raise ValueError(f"reference_arrays: no rule for tensor {name} of shape {shape}")
        out[name] = quantize(v)
    return out


def well_conditioned(x: np.ndarray, seed: int = 0, shrink: float = 0.25,
                     noise: float = 0.02) -> np.ndarray:
    """A well-conditioned copy of a normalized float32 batch, for checks that must pass by their
    tolerance alone. Real batches make some gradients ill-conditioned through exact ties in
    max-pool windows: equal pixels (flat or saturated regions, cutout squares), and GELU
    underflowing to exactly 0 on the strongly negative outputs of the whitening layer (its filters
    scale small-eigenvalue directions by up to 1/sqrt(eps) = 45x), which the Dirac filters then
    copy into the first conv's output; any rounding change breaks such ties differently and
    re-routes the gradient. Shrinking the batch keeps GELU's inputs above its float32 underflow,
    and a small quantized noise removes exactly equal pixels."""
    rng = np.random.default_rng([seed, 7])
    return quantize(shrink * np.asarray(x, np.float64) + noise * rng.standard_normal(x.shape))


def inputs_sha256(arrays: Mapping[str, np.ndarray], *batches: np.ndarray) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the weights and the input batches."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    for b in batches:
        b = np.ascontiguousarray(b)
        h.update(f"batch|{b.dtype.str}|{b.shape}|".encode())
        h.update(b.tobytes())
    return h.hexdigest()
