"""Convolutions for CifarNet, with the lowering chosen per backend and per CPU.

A training step runs each 3x3 convolution three times: forward, input gradient (dx) and weight
gradient (dw). XLA:CPU has no fast convolution: it lowers `lax.conv_general_dilated` to Eigen's
spatial convolution (fair for the forward pass and dx, up to 4x slower than a matmul for dw),
and im2col (the kh*kw shifted slices of the padded input concatenated on the channel axis, then
one matmul) makes dw one large GEMM but writes a 9x larger column buffer in every pass. Both ran
each pass 2-3x slower than the oneDNN convolutions PyTorch uses (docs/perf/). Implementations:

- 'onednn': oneDNN's direct convolutions as XLA custom calls (`airbench_jax.onednn`), float32 on
  CPU; other dtypes take 'matmul'. Needs the `onednn` extra and a C++ compiler (built once).
- 'native': `lax.conv_general_dilated` for all three passes (cuDNN on GPU).
- 'matmul': im2col + one matmul for all three passes (autodiff of the im2col graph).
- 'hybrid': native forward and dx, im2col dw (`jax.custom_vjp`), except for layers with a small
  output (fewer than `HYBRID_MIN_PIXELS` output pixels per image) where native dw is faster.

'auto' reads $AIRBENCH_JAX_CONV, else picks 'native' off the CPU, and on the CPU 'onednn' when
`airbench_jax.onednn.status()` says it is available, else 'matmul' (the fastest XLA-only lowering
on this project's CPUs). The measurements behind this choice are in docs/perf/. All
implementations compute the same convolution in the input dtype (float32 accumulation on CPU);
they differ only in summation order. Layout: NHWC activations, HWIO kernels, stride 1.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

from airbench_common.errors import UsageError

from . import onednn

IMPLS = ("auto", "onednn", "native", "matmul", "hybrid")
ENV_VAR = "AIRBENCH_JAX_CONV"
# 'hybrid' takes dw by im2col only where the output has at least this many pixels: below about
# 5x5 the column buffer costs more than XLA's own dw kernel (timings: docs/perf/README.md)
HYBRID_MIN_PIXELS = 25


def resolve_impl(impl: str | None = "auto") -> str:
    impl = impl or "auto"
    if impl == "auto":
        impl = os.environ.get(ENV_VAR, "auto") or "auto"
    if impl not in IMPLS:
        raise UsageError(f"conv_impl {impl!r} is not one of {', '.join(IMPLS)}")
    on_cpu = jax.default_backend() == "cpu"
    if impl == "auto" and on_cpu:
        onednn.warn_fallback()
        impl = "onednn" if onednn.status().available else "matmul"
    elif impl == "auto":
        impl = "native"
    elif impl == "onednn":
        if not on_cpu:
            raise UsageError(f"conv_impl 'onednn' runs on the CPU only (JAX's default backend is "
                             f"{jax.default_backend()}); choose auto or native")
        st = onednn.status()
        if not st.available:
            raise UsageError(f"conv_impl 'onednn' is not available: {st.reason}; "
                             f"{onednn.INSTALL_HINT}, or choose matmul")
    return impl


# Evaluation's convolutions: where training used im2col ('matmul'/'hybrid', chosen for their
# autodiff), a forward pass alone is faster with XLA's own kernel ('native'); where training used
# oneDNN, evaluation keeps it, faster again than 'native' (timings: docs/perf/README.md). 'native'
# and 'onednn' on GPU are unchanged. $AIRBENCH_JAX_EVAL_CONV overrides: 'as-trained' keeps the
# training form, an implementation name forces it.
EVAL_ENV_VAR = "AIRBENCH_JAX_EVAL_CONV"


def eval_impl(trained: str, choice: str = "auto") -> str:
    """The implementation a forward pass alone (evaluation) uses for a net trained with
    `trained`: `choice` ($AIRBENCH_JAX_EVAL_CONV) when it names one, else oneDNN and native as
    they are and native in place of the im2col forms."""
    if choice != "auto":
        return choice
    return trained if trained in ("onednn", "native") else "native"


def conv_native(x, w, padding: str = "SAME", precision=None):
    return lax.conv_general_dilated(x, w, (1, 1), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


def im2col(x, kh: int, kw: int, padding: str = "SAME"):
    """(n, ho, wo, kh*kw*cin) columns: the shifted slices of the padded input, in HWI order."""
    ph, pw = onednn.padding_amounts(kh, kw, padding)
    if ph != (0, 0) or pw != (0, 0):
        x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                           axis=-1)


def conv_matmul(x, w, padding: str = "SAME", precision=None):
    """im2col, then one matmul."""
    kh, kw, cin, cout = w.shape
    cols = im2col(x, kh, kw, padding)
    n, ho, wo, k = cols.shape
    out = jnp.matmul(cols.reshape(n * ho * wo, k), w.reshape(k, cout), precision=precision)
    return out.reshape(n, ho, wo, cout)


def weight_grad_matmul(x, g, kernel_shape, padding: str = "SAME"):
    """dL/dw of a stride-1 conv as one GEMM: im2col(x)^T @ g, contracted over batch and space."""
    kh, kw, cin, cout = kernel_shape
    cols = im2col(x, kh, kw, padding)
    dw = cols.reshape(-1, kh * kw * cin).T @ g.reshape(-1, cout)
    return dw.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_hybrid(x, w, padding: str = "SAME"):
    return conv_native(x, w, padding)


def _hybrid_fwd(x, w, padding):
    return conv_native(x, w, padding), (x, w)


def _hybrid_bwd(padding, res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda x_: conv_native(x_, w, padding), x)
    (dx,) = vjp_x(g)
    if g.shape[1] * g.shape[2] >= HYBRID_MIN_PIXELS:
        dw = weight_grad_matmul(x, g, w.shape, padding)
    else:
        _, vjp_w = jax.vjp(lambda w_: conv_native(x, w_, padding), w)
        (dw,) = vjp_w(g)
    return dx, dw.astype(w.dtype)


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)

def conv_onednn(x, w, padding: str = "SAME", precision=None):
    """oneDNN for float32 (where `precision` has no effect), im2col for other dtypes."""
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        return conv_matmul(x, w, padding, precision)
    return onednn.conv2d_onednn(x, w, padding)


_CONVS = dict(native=conv_native, matmul=conv_matmul, hybrid=conv_hybrid, onednn=conv_onednn)


def conv2d(x, w, padding: str = "SAME", impl: str = "auto", precision: str | None = None):
    """`precision`: None (JAX's default matmul precision, the process's setting) or a
    lax.Precision name ('default' allows TF32 for float32 on Ampere+, 'highest' does not);
    'hybrid' and float32 'onednn' ignore it (CPU-only, where precision has no effect)."""
    fn = _CONVS[resolve_impl(impl)]
    if precision is None or fn is conv_hybrid:
        return fn(x, w, padding)
    return fn(x, w, padding, lax.Precision[precision.upper()] if isinstance(precision, str)
              else precision)
