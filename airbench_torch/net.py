"""CifarNet: the airbench network, laid out exactly like upstream's library (nn.Sequential with
indices 0 whiten conv, 1 GELU, 2-4 ConvGroups, 5 MaxPool2d(3), 6 Flatten, 7 Linear head,
8 Mul(scale)), so that state-dict keys match airbench 0.1.8's make_net93/94/95/96."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from airbench_common import Recipe, get_recipe

from .device import apply_precision, resolve_device

WHITEN_IN = 3


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Mul(nn.Module):
    """Multiply by a constant (a plain attribute, so it adds no state-dict entry)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale

    def extra_repr(self):
        return f"scale={self.scale}"


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with `momentum` in the "keep" sense (running = m*running + (1-m)*batch), weight
    frozen at 1 and a trained bias."""

    def __init__(self, num_features: int, momentum: float, eps: float):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)


class Conv(nn.Conv2d):
    """Conv with PyTorch's default init, then a Dirac (identity) kernel on the first Cin output
    filters; a bias, if any, starts at zero."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, padding="same", bias: bool = False):
        super().__init__(cin, cout, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()
        with torch.no_grad():
            n = min(self.weight.shape[0], self.weight.shape[1])
            nn.init.dirac_(self.weight[:n])


class ConvGroup(nn.Module):
    """conv -> maxpool 2 -> BN -> GELU -> conv -> BN -> GELU (depth 3: -> conv -> BN -> GELU,
    plus the output of the first GELU)."""

    def __init__(self, cin: int, cout: int, momentum: float, eps: float, depth: int = 2):
        super().__init__()
        if depth not in (2, 3):
            raise ValueError(f"depth must be 2 or 3, got {depth}")
        self.depth = depth
        self.conv1 = Conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(cout, momentum, eps)
        self.conv2 = Conv(cout, cout)
        self.norm2 = BatchNorm(cout, momentum, eps)
        if depth == 3:
            self.conv3 = Conv(cout, cout)
            self.norm3 = BatchNorm(cout, momentum, eps)
        self.activ = nn.GELU()  # exact erf GELU, as upstream

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        if self.depth == 3:
            x0 = x
        x = self.activ(self.norm2(self.conv2(x)))
        if self.depth == 3:
            # the paper script's order (legacy/airbench96.py, airbench96_faster.py): BN, add the
            # block input, then GELU (the pip library's lib_airbench96 applies GELU before the add)
            x = self.activ(self.norm3(self.conv3(x)) + x0)
        return x


class CifarNet(nn.Sequential):
    def __init__(self, widths=(64, 256, 256), depth: int = 2, bn_momentum: float = 0.6,
                 bn_eps: float = 1e-12, scale: float = 1 / 9, whiten_kernel: int = 2):
        w1, w2, w3 = _widths_tuple(widths)
        whiten_width = 2 * WHITEN_IN * whiten_kernel ** 2
        super().__init__(
            Conv(WHITEN_IN, whiten_width, whiten_kernel, padding=0, bias=True),
            nn.GELU(),
            ConvGroup(whiten_width, w1, bn_momentum, bn_eps, depth),
            ConvGroup(w1, w2, bn_momentum, bn_eps, depth),
            ConvGroup(w2, w3, bn_momentum, bn_eps, depth),
            nn.MaxPool2d(3),
            Flatten(),
            nn.Linear(w3, 10, bias=False),
            Mul(scale),
        )
        self[0].weight.requires_grad_(False)

    @property
    def whiten(self) -> nn.Conv2d:
        return self[0]

    @property
    def head(self) -> nn.Linear:
        return self[7]

    def forward(self, x):
        # the stored images may be float32/half while the net is the other: follow the net
        w = self[0].weight
        if x.dtype != w.dtype:
            x = x.to(w.dtype)
        return super().forward(x)


def _widths_tuple(widths) -> tuple[int, int, int]:
    from airbench_common.validate import check_widths
    return check_widths(widths)


def net_for_recipe(recipe: Recipe, widths=None, depth=None) -> CifarNet:
    """A float32 CPU CifarNet with the recipe's architecture (default init + Dirac, not whitened)."""
    net = CifarNet(widths=recipe.widths if widths is None else widths,
                   depth=recipe.depth if depth is None else depth,
                   bn_momentum=recipe.bn_momentum, bn_eps=recipe.bn_eps,
                   scale=recipe.head_scale if widths is None else _scale_for(recipe, widths),
                   whiten_kernel=recipe.whiten_kernel)
    if recipe.whiten_bias_init == "default":
        # upstream airbench94_muon.py's whitening layer is a plain nn.Conv2d: its bias keeps
        # PyTorch's default uniform init instead of the library Conv's zero
        with torch.no_grad():
            bound = 1 / math.sqrt(net[0].weight[0].numel())
            net[0].bias.uniform_(-bound, bound)
    if recipe.head_unit_std:
        with torch.no_grad():
            net[7].weight.mul_(1 / net[7].weight.std())
    return net


def _scale_for(recipe: Recipe, widths) -> float:
    return 1.0 / _widths_tuple(widths)[2] if recipe.scaling_factor is None else recipe.scaling_factor


def make_net(recipe: str | Recipe = "airbench94", device=None, channels_last=None) -> CifarNet:
    """The recipe's net on `device` (auto: CUDA if available) with the precision policy."""
    from airbench_common.validate import check_flag
    recipe = get_recipe(recipe)
    check_flag("channels_last", channels_last)
    return apply_precision(net_for_recipe(recipe), resolve_device(device), channels_last)


# ---------------------------------------------------------------------- whitening
def patch_matrix(images: torch.Tensor, k: int) -> torch.Tensor:
    """All k x k patches of NCHW images as rows (n_patches, C*k*k), flattened in (c, h, w) order."""
    c = images.shape[1]
    p = images.float().unfold(2, k, 1).unfold(3, k, 1)      # N, C, H', W', k, k
    return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)


def whitening_filters(images: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """(2*C*k*k, C, k, k) filters: eigenvectors of the patch covariance (largest eigenvalue
    first) scaled by 1/sqrt(eigenvalue + eps), then the same negated."""
    c = images.shape[1]
    x = patch_matrix(images, k)
    cov = x.T @ x / len(x)
    evals, evecs = torch.linalg.eigh(cov, UPLO="U")
    evals, evecs = evals.flip(0), evecs.T.flip(0)             # rows are eigenvectors, descending
    v = evecs.reshape(-1, c, k, k) / torch.sqrt(evals + eps).view(-1, 1, 1, 1)
    return torch.cat([v, -v])


def init_whitening(net: CifarNet, images: torch.Tensor, eps: float) -> None:
    """Set the (frozen) whitening weight from normalized NCHW `images`."""
    conv = net[0]
    filters = whitening_filters(images, conv.weight.shape[-1], eps)
    with torch.no_grad():
        conv.weight.copy_(filters.to(conv.weight.device, conv.weight.dtype))


# ---------------------------------------------------------------------- upstream library names
def make_net9x(name: str, widths=None, batchnorm_momentum=None, device=None) -> CifarNet:
    """Upstream's make_net9x(widths=dict(block1=..), batchnorm_momentum=..) with defaults from
    our recipe table (see make_net96's note)."""
    recipe = get_recipe(name)
    over = {}
    if widths is not None:
        over["widths"] = _widths_tuple(widths)
    if batchnorm_momentum is not None:
        over["bn_momentum"] = batchnorm_momentum    # the recipe checks it (a number in [0, 1))
    recipe = get_recipe(recipe, **over)
    return apply_precision(net_for_recipe(recipe), resolve_device(device))


def make_net93(widths=None, batchnorm_momentum=None, device=None):
    return make_net9x("airbench93", widths, batchnorm_momentum, device)


def make_net94(widths=None, batchnorm_momentum=None, device=None):
    return make_net9x("airbench94", widths, batchnorm_momentum, device)


def make_net95(widths=None, batchnorm_momentum=None, device=None):
    return make_net9x("airbench95", widths, batchnorm_momentum, device)


def make_net96(widths=None, batchnorm_momentum=None, device=None):
    """Defaults follow the paper script (recipe airbench96: widths 128/384/512, BN keep-momentum
    0.9). Upstream's library make_net96 defaults to 128/512/512 and 0.6; to load one of its state
    dicts use make_net96(widths=dict(block1=128, block2=512, block3=512), batchnorm_momentum=0.6)."""
    return make_net9x("airbench96", widths, batchnorm_momentum, device)
