"""Weights <-> upstream PyTorch state-dict names, as dicts of numpy arrays (no torch import).

Names follow upstream's library nn.Sequential: `0.weight`/`0.bias` (whitening, OIHW),
`{2,3,4}.conv{k}.weight` (OIHW), `{2,3,4}.norm{k}.{weight,bias,running_mean,running_var,
num_batches_tracked}` (weight is all ones: frozen at 1), `7.weight` (Linear, (10, in)).
Kernels are transposed OIHW <-> HWIO and (out, in) <-> (in, out); the round trip is exact.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .model import CifarNet

GROUPS = {"group1": "2", "group2": "3", "group3": "4"}


def _convs(net: CifarNet):
    for gname, idx in GROUPS.items():
        group = getattr(net, gname)
        for k in range(1, group.depth + 1):
            yield f"{idx}.conv{k}", getattr(group, f"conv{k}"), f"{idx}.norm{k}", getattr(group, f"norm{k}")


def to_torch_arrays(net: CifarNet) -> dict[str, np.ndarray]:
    out = {"0.weight": np.asarray(net.whiten_kernel[...]).transpose(3, 2, 0, 1).copy(),
           "0.bias": np.asarray(net.whiten_bias[...]).copy()}
    for cname, conv, nname, norm in _convs(net):
        out[f"{cname}.weight"] = np.asarray(conv.kernel[...]).transpose(3, 2, 0, 1).copy()
        out[f"{nname}.weight"] = np.ones_like(np.asarray(norm.bias[...]))
        out[f"{nname}.bias"] = np.asarray(norm.bias[...]).copy()
        out[f"{nname}.running_mean"] = np.asarray(norm.running_mean[...]).copy()
        out[f"{nname}.running_var"] = np.asarray(norm.running_var[...]).copy()
        out[f"{nname}.num_batches_tracked"] = np.asarray(norm.num_batches_tracked[...]).astype(np.int64)
    out["7.weight"] = np.asarray(net.head[...]).T.copy()
    return out


def from_torch_arrays(net: CifarNet, arrays: dict) -> CifarNet:
    """Load upstream-named arrays into `net` in place (and return it). The BatchNorm weight
    must be all ones (it is frozen at 1 in airbench)."""
    a = {k: np.asarray(v) for k, v in arrays.items()}

    def put(var, value, name):
        if tuple(var[...].shape) != tuple(value.shape):
            raise ValueError(f"{name}: shape {value.shape} does not fit {var[...].shape}")
        var[...] = jnp.asarray(value, dtype=var[...].dtype)

    put(net.whiten_kernel, a["0.weight"].transpose(2, 3, 1, 0), "0.weight")
    put(net.whiten_bias, a["0.bias"], "0.bias")
    for cname, conv, nname, norm in _convs(net):
        put(conv.kernel, a[f"{cname}.weight"].transpose(2, 3, 1, 0), f"{cname}.weight")
        if f"{nname}.weight" in a and not np.all(a[f"{nname}.weight"] == 1):
            raise ValueError(f"{nname}.weight must be all ones (frozen BatchNorm scale)")
        put(norm.bias, a[f"{nname}.bias"], f"{nname}.bias")
        put(norm.running_mean, a[f"{nname}.running_mean"], f"{nname}.running_mean")
        put(norm.running_var, a[f"{nname}.running_var"], f"{nname}.running_var")
        if f"{nname}.num_batches_tracked" in a:
            put(norm.num_batches_tracked, a[f"{nname}.num_batches_tracked"], "num_batches_tracked")
    put(net.head, a["7.weight"].T, "7.weight")
    return net


def upstream_name(path) -> str:
    """Upstream's state-dict name of a leaf of the net's state, from its path (keys or
    jax.tree_util path entries): ('group1', 'conv1', 'kernel') -> '2.conv1.weight'."""
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if keys == ["whiten_kernel"]:
        return "0.weight"
    if keys == ["whiten_bias"]:
        return "0.bias"
    if keys == ["head"]:
        return "7.weight"
    if len(keys) == 3 and keys[0] in GROUPS:
        leaf = "weight" if keys[2] == "kernel" else keys[2]
        return f"{GROUPS[keys[0]]}.{keys[1]}.{leaf}"
    raise ValueError(f"{'/'.join(keys)} is not a CifarNet state path")
