"""The precision policy (airbench_common.precision) on the JAX side: which policy a run uses and
how its parts map onto JAX.

- params / compute: CifarNet's `param_dtype` / `dtype` (kernels stored in params, cast per op to
  compute; with params == compute, as in every named policy, the cast is the identity);
- batchnorm: statistics in float32 (airbench_jax.model.BatchNorm);
- newton_schulz: Muon's `ns_dtype`;
- tf32: explicit `precision` of float32 convolutions and of the head (CifarNet's `tf32`), and
  `jax_default_matmul_precision` for the other float32 matmuls during a run (`matmul_context`).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from airbench_common import precision as P


def on_accelerator(device=None) -> bool:
    platform = device.platform if device is not None else jax.default_backend()
    return platform != "cpu"


def dtype_name(d) -> str | None:
    """The name of a dtype given as a JAX/numpy dtype, a type or a name (None stays None)."""
    return None if d is None else jnp.dtype(d).name


def resolve(policy=None, *, device=None, dtype=None, param_dtype=None, bn_dtype=None,
            ns_dtype=None, tf32=None) -> P.Precision:
    """The run's Precision: `policy` (a name, a Precision, None: the device's default) with parts
    overridden; dtypes may be given as JAX dtypes or names. A run resolves it once, where it
    starts, and passes the Precision down."""
    return P.resolve(policy, accelerator=on_accelerator(device), dtype=dtype_name(dtype),
                     param_dtype=dtype_name(param_dtype), bn_dtype=dtype_name(bn_dtype),
                     ns_dtype=dtype_name(ns_dtype), tf32=tf32)


def dtypes(p: P.Precision) -> dict:
    """The JAX dtypes of a policy's parts (the one map from its part names to JAX dtypes)."""
    return dict(params=jnp.dtype(p.params), compute=jnp.dtype(p.compute),
                batchnorm=jnp.dtype(p.batchnorm), newton_schulz=jnp.dtype(p.newton_schulz))


def matmul_context(p: P.Precision):
    """The default precision of float32 matmuls/convs that pass none (whitening covariance,
    Newton-Schulz in float32): TF32 only with tf32='on' (PyTorch's matmuls do not use TF32 by
    default, and upstream leaves that as it is)."""
    return jax.default_matmul_precision("tensorfloat32" if p.tf32 == "on" else "highest")


@contextlib.contextmanager
def run_context(policy: P.Precision, device=None):
    """What a run computes under: its device as JAX's default (None: JAX's own default) and its
    policy's matmul precision (`matmul_context`)."""
    with jax.default_device(device), matmul_context(policy):
        yield
