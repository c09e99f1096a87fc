"""Evaluation of a torch net: logits for a loader's (or given, normalized) images with test-time
augmentation, the plain and TTA logits in one pass, and accuracy (upstream's infer / evaluate)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from airbench_common import outcome
from airbench_common import validate as V

from .loader import CifarLoader


def infer(model: nn.Module, loader: CifarLoader, tta_level: int = 0) -> torch.Tensor:
    """Logits for all of loader.images. TTA 0: plain; 1: mean of image and mirror; 2: 0.5*level-1
    + 0.5*mean of level-1 on the reflect-pad-1 crops [0:32] and [2:34]."""
    return infer_both(model, loader, tta_level)[1]


def infer_both(model: nn.Module, loader: CifarLoader, tta_level: int = 0):
    """(plain logits, TTA logits) for all of loader.images, in one pass: the plain forward is
    part of every TTA level, so the plain accuracy costs nothing extra."""
    _check_model_and_loader(model, loader)
    return infer_images(model, loader.normalize(loader.images), tta_level)


def infer_images(model: nn.Module, images: torch.Tensor, tta_level: int = 0):
    """infer_both on already normalized NCHW images (the parity checks' shared inputs)."""
    tta_level = V.check_tta_level(tta_level)

    def mirror(x):
        return 0.5 * model(x) + 0.5 * model(x.flip(-1))

    def both(x):
        plain = model(x)
        if tta_level == 0:
            return plain, plain
        mirrored = 0.5 * plain + 0.5 * model(x.flip(-1))
        if tta_level == 1:
            return plain, mirrored
        p = F.pad(x, (1,) * 4, mode="reflect")
        shifted = [mirror(p[:, :, 0:32, 0:32]), mirror(p[:, :, 2:34, 2:34])]
        return plain, 0.5 * mirrored + 0.5 * torch.stack(shifted).mean(0)

    model.eval()
    with torch.no_grad():
        outs = [both(x) for x in images.split(outcome.eval_batch(images.device.type != "cpu"))]
    return tuple(torch.cat([o[k].clone() for o in outs]) for k in (0, 1))


def _check_model_and_loader(model, loader) -> None:
    V.check_instance("model", model, nn.Module, "a torch nn.Module (airbench_torch's make_net9x "
                     "or train9x return one)")
    V.check_instance("loader", loader, CifarLoader, "an airbench_torch.CifarLoader")


def evaluate(model: nn.Module, loader: CifarLoader, tta_level: int = 0) -> float:
    logits = infer(model, loader, tta_level)
    return (logits.argmax(1) == loader.labels).float().mean().item()
