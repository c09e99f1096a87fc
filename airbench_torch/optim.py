"""Optimizers: Nesterov SGD groups built from airbench_common.param_groups, airbench's Muon
(Newton-Schulz orthogonalized Nesterov momentum on conv filters), and the lookahead EMA."""
from __future__ import annotations

import torch
from torch import nn

from airbench_common import NS_COEFFS, ParamGroup, Recipe


def newton_schulz(G: torch.Tensor, steps: int, eps: float = 1e-7,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Quintic Newton-Schulz "zeroth power" of a 2-D matrix (approximately U V^T of its SVD,
    singular values landing roughly in [0.5, 1.5] after 3 steps). Computed in `dtype`."""
    if G.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFS
    X = G.to(dtype)
    X = X / (X.norm() + eps)
    tall = G.shape[0] > G.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.T
    return X


class Muon(torch.optim.Optimizer):
    """airbench94_muon's Muon: buf = m*buf + g; g_eff = g + m*buf (Nesterov) or buf;
    p *= sqrt(out)/||p||_F; p -= lr * NS(g_eff as (out, -1))."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool = True,
                 ns_steps: int = 3, eps: float = 1e-7, ns_dtype: torch.dtype = torch.float32):
        if lr < 0 or momentum < 0:
            raise ValueError(f"Muon needs lr >= 0 and momentum >= 0 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, eps=eps, ns_dtype=ns_dtype))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            m = group["momentum"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(m).add_(g)
                g_eff = g.add(buf, alpha=m) if group["nesterov"] else buf
                p.mul_(len(p) ** 0.5 / p.norm())
                update = newton_schulz(g_eff.reshape(len(g_eff), -1), group["ns_steps"],
                                       group["eps"], group["ns_dtype"])
                p.add_(update.view(g_eff.shape).to(p.dtype), alpha=-group["lr"])


class Lookahead:
    """EMA of every float tensor of the state dict (parameters and BatchNorm running stats);
    update(decay): ema = lerp(ema, net, 1 - decay); net = ema."""

    def __init__(self, net: nn.Module):
        self.ema = {k: v.detach().clone() for k, v in net.state_dict().items()
                    if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        sd = net.state_dict()
        for k, e in self.ema.items():
            e.lerp_(sd[k], 1 - decay)
            sd[k].copy_(e)


def group_params(net: nn.Module, name: str) -> list[torch.Tensor]:
    """The parameters of one param_groups() group name for a CifarNet."""
    named = [(k, p) for k, p in net.named_parameters()]
    whiten_w, whiten_b, head = net[0].weight, net[0].bias, net[7].weight
    filters = [p for k, p in named if p.ndim == 4 and p is not whiten_w]
    if name == "whiten_bias":
        return [whiten_b]
    if name == "norm_biases":
        return [p for k, p in named if "norm" in k and k.endswith(".bias")]
    if name == "head":
        return [head]
    if name == "filters":
        return filters
    if name == "other":
        return filters + [head]
    raise ValueError(f"unknown parameter group {name!r}")


def build_optimizers(net: nn.Module, groups: list[ParamGroup], recipe: Recipe,
                     ns_dtype: torch.dtype) -> list[torch.optim.Optimizer]:
    """One torch.optim.SGD (Nesterov) holding every SGD group, plus a Muon for a 'muon' group.
    Each torch param group remembers its ParamGroup (key 'spec') for lr scheduling/freezing."""
    sgd, muon = [], []
    for g in groups:
        params = group_params(net, g.name)
        if not params:
            continue
        d = dict(params=params, lr=g.lr, momentum=g.momentum, weight_decay=g.weight_decay,
                 spec=g)
        (muon if g.kind == "muon" else sgd).append(d)
    opts: list[torch.optim.Optimizer] = []
    if sgd:
        opts.append(torch.optim.SGD(sgd, lr=sgd[0]["lr"], momentum=recipe.momentum, nesterov=True))
    if muon:
        for d in muon:
            d.pop("weight_decay")
        opts.append(Muon(muon, lr=muon[0]["lr"], momentum=muon[0]["momentum"], nesterov=True,
                         ns_steps=recipe.muon_ns_steps, eps=recipe.muon_eps, ns_dtype=ns_dtype))
    return opts


def set_learning_rates(optimizers, schedules: dict, step: int) -> None:
    """lr of every group = its ParamGroup.lr * schedules[its schedule][step]."""
    for opt in optimizers:
        for pg in opt.param_groups:
            spec = pg["spec"]
            pg["lr"] = spec.lr * float(schedules[spec.schedule][step])
