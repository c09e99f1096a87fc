"""Optimizers: Nesterov SGD groups built from airbench_common.param_groups, airbench's Muon
(Newton-Schulz orthogonalized Nesterov momentum on conv filters), and the lookahead EMA."""
from __future__ import annotations

import torch
from torch import nn

from airbench_common import NS_COEFFS, ParamGroup, Recipe
from airbench_common.params import group_lr, group_of


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
    """The parameters of one param_groups() group name for a CifarNet, by upstream state-dict
    name (airbench_common.params; 'other' exists only for SGD recipes, 'filters'/'head' only
    for Muon ones, so the name alone decides)."""
    optimizer = "sgd" if name == "other" else "muon"
    if name not in ("whiten_bias", "norm_biases", "other", "filters", "head"):
        raise ValueError(f"unknown parameter group {name!r}")
    return [p for k, p in net.named_parameters() if group_of(k, optimizer) == name]


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
    """lr of every group at `step`: airbench_common.params.group_lr (its ParamGroup.lr times its
    schedule, exactly 0 once the group is frozen: the freezing mechanism of both sides)."""
    for opt in optimizers:
        for pg in opt.param_groups:
            pg["lr"] = float(group_lr(pg["spec"], schedules, step))
