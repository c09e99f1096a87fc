"""The weight conversion's cross-check: an independent map between upstream's state-dict names
and the Flax NNX CifarNet, and bit-exact comparison of two sets of named arrays.

Names are upstream airbench's state-dict keys (``0.weight``, ``2.conv1.weight``,
``2.norm1.{weight,bias,running_mean,running_var,num_batches_tracked}``, ..., ``7.weight``).
Layouts: conv OIHW (torch) <-> HWIO (Flax), transpose (2, 3, 1, 0); Linear (out, in) <-> head
kernel (in, out); BatchNorm bias/running_mean/running_var copied; num_batches_tracked int64 <->
int32 counter; BatchNorm weight: frozen at 1 in both frameworks, absent from the Flax module (a
torch weight that is not all ones cannot be represented and is refused).

The conversions the checks use are the packages' own, behind their workloads' trainers
(`Trainer.arrays` / `load_arrays`: airbench_torch.convert, airbench_jax.convert); the map here
(``local_from_torch_arrays`` / ``local_to_torch_arrays``) is written against the Flax module
tree instead, a cross-check of airbench_jax.convert's (parity.numerics' "convert local map" row,
tests/test_parity_convert.py), on the net a JAX trainer holds (`JaxTrainer.net()`).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np


# ---------------------------------------------------------------------- JAX side (local map)
_GROUP = {"2": "group1", "3": "group2", "4": "group3"}
_CONV_RE = re.compile(r"^([234])\.conv([123])\.weight$")
_NORM_RE = re.compile(r"^([234])\.norm([123])\.(\w+)$")


def _var(net, path):
    obj = net
    for p in path:
        obj = getattr(obj, p)
    return obj


def _set(var, value, name):
    import jax.numpy as jnp
    cur = var[...]
    if tuple(cur.shape) != tuple(value.shape):
        raise ValueError(f"{name}: shape {tuple(value.shape)} does not fit the Flax net's "
                         f"{tuple(cur.shape)}")
    var[...] = jnp.asarray(value, dtype=cur.dtype)


def local_from_torch_arrays(net, arrays: Mapping[str, np.ndarray]) -> None:
    """Set a Flax NNX CifarNet (airbench_jax.model) from upstream-named arrays, in place."""
    depth = getattr(net.group1, "depth", 2)
    expected = set(local_to_torch_arrays(net))
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise KeyError(f"state-dict keys differ from a depth-{depth} net: missing {missing}, "
                       f"unexpected {extra}")
    for k, a in arrays.items():
        a = np.asarray(a)
        if k == "0.weight":
            _set(net.whiten_kernel, a.astype(np.float32).transpose(2, 3, 1, 0), k)
        elif k == "0.bias":
            _set(net.whiten_bias, a.astype(np.float32), k)
        elif k == "7.weight":
            _set(net.head, a.astype(np.float32).T, k)
        elif m := _CONV_RE.match(k):
            _set(_var(net, (_GROUP[m[1]], f"conv{m[2]}", "kernel")),
                 a.astype(np.float32).transpose(2, 3, 1, 0), k)
        elif m := _NORM_RE.match(k):
            norm = _var(net, (_GROUP[m[1]], f"norm{m[2]}"))
            field = m[3]
            if field == "weight":
                if not np.all(a == 1):
                    raise ValueError(f"{k}: BatchNorm weight is frozen at 1 in airbench; this one "
                                     "is not, and the Flax net has no weight to hold it")
            elif field == "num_batches_tracked":
                _set(norm.num_batches_tracked, a.astype(np.int64), k)
            else:
                _set(getattr(norm, field), a.astype(np.float32), k)
        else:  # unreachable after the key check
            raise KeyError(k)


def local_to_torch_arrays(net) -> dict[str, np.ndarray]:
    """Upstream-named numpy arrays (torch layouts and dtypes) of a Flax NNX CifarNet."""
    out = {"0.weight": np.asarray(net.whiten_kernel[...]).transpose(3, 2, 0, 1),
           "0.bias": np.asarray(net.whiten_bias[...])}
    for idx, gname in _GROUP.items():
        g = getattr(net, gname)
        depth = getattr(g, "depth", 2)
        for j in range(1, depth + 1):
            out[f"{idx}.conv{j}.weight"] = np.asarray(
                getattr(g, f"conv{j}").kernel[...]).transpose(3, 2, 0, 1)
            norm = getattr(g, f"norm{j}")
            bias = np.asarray(norm.bias[...])
            out[f"{idx}.norm{j}.weight"] = np.ones_like(bias, dtype=np.float32)
            out[f"{idx}.norm{j}.bias"] = bias
            out[f"{idx}.norm{j}.running_mean"] = np.asarray(norm.running_mean[...])
            out[f"{idx}.norm{j}.running_var"] = np.asarray(norm.running_var[...])
            out[f"{idx}.norm{j}.num_batches_tracked"] = np.asarray(
                norm.num_batches_tracked[...]).astype(np.int64)
    out["7.weight"] = np.asarray(net.head[...]).T
    return {k: np.array(v, order="C") for k, v in out.items()}  # (ascontiguousarray makes 0-d 1-d)


def bitwise_equal(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> list[str]:
    """Keys whose arrays are not bit-identical (after casting b to a's dtype, which must be
    exact: it is checked)."""
    bad = []
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            bad.append(k)
            continue
        y2 = y.astype(x.dtype)
        if not np.array_equal(y2.astype(y.dtype), y) or x.tobytes() != y2.tobytes():
            bad.append(k)
    return bad
