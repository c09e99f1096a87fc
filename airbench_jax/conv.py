"""Convolutions for CifarNet, fast on every backend.

XLA:CPU's native convolution gradient is several times slower than PyTorch's oneDNN path on this
kind of net, so on CPU each convolution is written as im2col (the kh*kw shifted slices of the
padded input, concatenated on the channel axis) followed by one matmul. Autodiff of that graph is
itself a pad/slice/concat plus two matmuls, which XLA:CPU runs on its fast GEMM. On GPU the native
`lax.conv_general_dilated` (cuDNN) is used. Selection: argument `impl` in {'auto', 'native',
'matmul'}; 'auto' reads $AIRBENCH_JAX_CONV, else picks 'matmul' on CPU and 'native' elsewhere.
Layout: NHWC activations, HWIO kernels, stride 1.

Measured (benchmarks/bench_conv_jax.py, airbench94 widths, batch 200, float32, 2-core EPYC shared
with other jobs, same conditions): matmul 44.1 img/s, native 30.1 img/s, PyTorch 2.13 44.2 img/s;
matmul peak 58.8 GFLOP/s, matmul conv at ~53% of it. XLA_FLAGS=--xla_cpu_use_onednn=true is
accepted by jax 0.10.2 but gave no gain (42.3 img/s), so no flag is set by default. Plain
autodiff of the im2col graph was already at PyTorch's speed, so no custom_vjp is used.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "native", "matmul")


def resolve_impl(impl: str | None = "auto") -> str:
    impl = impl or "auto"
    if impl == "auto":
        impl = os.environ.get("AIRBENCH_JAX_CONV", "auto") or "auto"
    if impl not in IMPLS:
        raise ValueError(f"conv_impl {impl!r} is not one of {list(IMPLS)}")
    if impl == "auto":
        impl = "matmul" if jax.default_backend() == "cpu" else "native"
    return impl


def _pads(kh: int, kw: int, padding: str):
    if padding == "VALID":
        return (0, 0), (0, 0)
    # 'SAME' for stride 1, as PyTorch's padding='same' (extra pad at the end for even kernels)
    return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def conv_native(x, w, padding: str = "SAME"):
    return lax.conv_general_dilated(x, w, (1, 1), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_matmul(x, w, padding: str = "SAME"):
    """im2col as kh*kw shifted slices concatenated on channels, then one matmul."""
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x.shape
    ph, pw = _pads(kh, kw, padding)
    if ph != (0, 0) or pw != (0, 0):
        x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                           axis=-1)
    out = cols.reshape(n * ho * wo, kh * kw * cin) @ w.reshape(kh * kw * cin, cout)
    return out.reshape(n, ho, wo, cout)


def conv2d(x, w, padding: str = "SAME", impl: str = "auto"):
    impl = resolve_impl(impl)
    return (conv_matmul if impl == "matmul" else conv_native)(x, w, padding)
