"""PyTorch state dict <-> Flax NNX CifarNet, both ways, exactly.

Names are upstream airbench's state-dict keys (``0.weight``, ``2.conv1.weight``,
``2.norm1.{weight,bias,running_mean,running_var,num_batches_tracked}``, ..., ``7.weight``), so an
upstream ``airbench`` state dict converts too (its float16 conv/linear weights widen to float32
exactly; converting back casts to the target tensor's dtype, exact again for values that came from
float16).

Layouts: conv OIHW (torch) <-> HWIO (Flax), transpose (2, 3, 1, 0); Linear (out, in) <-> head
kernel (in, out); BatchNorm bias/running_mean/running_var copied; num_batches_tracked int64 <->
int32 counter; BatchNorm weight: frozen at 1 in both frameworks, absent from the Flax module (a
torch weight that is not all ones cannot be represented and is refused).

The array mappings are the packages' own: airbench_jax.convert's (``from_torch_arrays`` /
``to_torch_arrays``) and airbench_torch.convert's (torch tensors <-> numpy); this file adds a strict
key/shape check on the JAX side (the expected key set comes from ``local_to_torch_arrays``), the
conversions both ways, and an independent mapping (``local_from_torch_arrays`` /
``local_to_torch_arrays``) written against the Flax module tree, a cross-check of
airbench_jax.convert's (parity.numerics' "convert local map" row, tests/test_parity_convert.py).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np


# ---------------------------------------------------------------------- torch side
def torch_to_arrays(net_or_state) -> dict[str, np.ndarray]:
    """A torch module or state dict -> {name: numpy array} (airbench_torch.convert.to_arrays)."""
    from airbench_torch.convert import to_arrays
    return to_arrays(net_or_state)


def arrays_to_torch(arrays: Mapping[str, np.ndarray], net) -> None:
    """{name: array} into a torch module in place, strictly (airbench_torch.convert.load_arrays)."""
    from airbench_torch.convert import load_arrays
    load_arrays(arrays, net)


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


def jax_from_arrays(net, arrays: Mapping[str, np.ndarray]) -> None:
    """Load upstream-named arrays into a Flax NNX CifarNet in place. Strict: the key set must be
    exactly the net's (a depth-3 state dict does not load into a depth-2 net)."""
    expected = set(local_to_torch_arrays(net))
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise KeyError(f"state-dict keys differ from the Flax net's: missing {missing}, "
                       f"unexpected {extra}")
    from airbench_jax import convert as jconv
    jconv.from_torch_arrays(net, dict(arrays))


def jax_to_arrays(net) -> dict[str, np.ndarray]:
    from airbench_jax import convert as jconv
    return {k: np.asarray(v) for k, v in jconv.to_torch_arrays(net).items()}


# ---------------------------------------------------------------------- both
def torch_to_jax(torch_net_or_state, jax_net) -> None:
    """Copy a torch CifarNet (or an upstream state dict) into a Flax NNX CifarNet, in place."""
    jax_from_arrays(jax_net, torch_to_arrays(torch_net_or_state))


def jax_to_torch(jax_net, torch_net) -> None:
    """Copy a Flax NNX CifarNet into a torch CifarNet, in place."""
    arrays_to_torch(jax_to_arrays(jax_net), torch_net)


def widths_depth_of(arrays: Mapping[str, np.ndarray]) -> tuple[tuple[int, int, int], int]:
    """(widths, depth) of an upstream-named state dict."""
    widths = tuple(int(np.shape(arrays[f"{i}.conv1.weight"])[0]) for i in (2, 3, 4))
    depth = 3 if "2.conv3.weight" in arrays else 2
    return widths, depth


def jax_net_like(recipe, arrays: Mapping[str, np.ndarray], conv_impl: str = "auto", key=0):
    """A Flax NNX CifarNet shaped like the given arrays (widths/depth read from them), loaded with
    them. `recipe` supplies the rest (BatchNorm momentum/eps, head scale)."""
    from airbench_common import get_recipe
    from airbench_jax import make_net
    widths, depth = widths_depth_of(arrays)
    r = get_recipe(recipe, widths=widths, depth=depth)
    net = make_net(r, key, conv_impl=conv_impl)
    jax_from_arrays(net, arrays)
    return net


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
