"""A torch net's weights <-> upstream-named numpy arrays (the state dict's own names, so an
upstream airbench state dict loads as it is)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def to_arrays(net_or_state) -> dict[str, np.ndarray]:
    """A torch module or state dict -> {name: numpy array} with each tensor's own dtype (a copy;
    bfloat16, which numpy lacks, widened exactly to float32)."""
    sd = net_or_state.state_dict() if hasattr(net_or_state, "state_dict") else net_or_state
    out = {}
    for k, v in sd.items():
        t = v.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        out[k] = t.numpy().copy()
    return out


def load_arrays(arrays: Mapping[str, np.ndarray], net) -> None:
    """{name: array} into a torch module in place, cast to each target tensor's dtype and device.
    Strict: the key sets and the shapes must match."""
    sd = net.state_dict()
    missing, extra = sorted(set(sd) - set(arrays)), sorted(set(arrays) - set(sd))
    if missing or extra:
        raise KeyError(f"state-dict keys differ: missing {missing}, unexpected {extra}")
    new = {}
    for k, t in sd.items():
        a = np.asarray(arrays[k])
        if tuple(a.shape) != tuple(t.shape):
            raise ValueError(f"{k}: shape {tuple(a.shape)} vs the net's {tuple(t.shape)}")
        new[k] = torch.from_numpy(np.array(a, order="C")).to(device=t.device, dtype=t.dtype)
    net.load_state_dict(new, strict=True)
