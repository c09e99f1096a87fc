"""Presets: documented scalings of an exact recipe, so a comparison fits the machine at hand.

A preset is (recipe overrides) + (training/test subset sizes) + a description. The subsets are
always the FIRST n_train training images and the FIRST n_test test images of the dataset, in the
dataset's own (official) order. User ``--set key=value`` overrides are applied on top of a
preset's. Only documented knobs are touched: widths, epochs, batch_size, the subset sizes,
whiten_images (capped at n_train: the whitening covariance is estimated from the first
whiten_images training images), and for airbench96_faster filter_keep (must stay below the batch
size) and proxy_widths.

A scaled recipe need not train at all (upstream's airbench94_muon.py at widths (16,64,64), its
hyper-parameters otherwise unchanged, stays at chance), so each preset says whether it is
expected to be accurate at all (``trains``); the cpu preset's sizes were chosen from pilot runs of
their run-to-run spread (benchmarks/preset_spread.py), so that its plan decides within its
wall-time cap at the spread it has.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from airbench_common.recipes import RecipeError, get_recipe


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    overrides: dict = field(default_factory=dict)          # applied to every recipe
    per_recipe: dict = field(default_factory=dict)         # recipe name -> extra overrides
    n_train: int | None = None                             # None: all training images
    n_test: int | None = None                              # None: all test images
    trains: bool = True                                    # expected to learn (not a smoke test)
    # the sequential plan, fixed in advance (parity.study.plan): equivalence margin in accuracy points,
    # most runs per side (the plan's N), and a wall-time cap in minutes (None: none)
    margin: float = 0.1
    max_runs: int = 30
    wall_minutes: float | None = None
    eval_every_epoch: bool = True                          # per-epoch validation (untimed)

    def recipe_overrides(self, recipe: str, user: dict | None = None) -> dict:
        """The effective overrides for `recipe`: preset, then per-recipe, then the user's."""
        out: dict[str, Any] = dict(self.overrides)
        out.update(self.per_recipe.get(recipe, {}))
        base = get_recipe(recipe)
        if self.n_train is not None and base.whiten_images > self.n_train \
                and "whiten_images" not in out:
            out["whiten_images"] = self.n_train
        if base.filter_keep and "batch_size" in out and "filter_keep" not in out:
            bs = int(out["batch_size"])
            if base.filter_keep >= bs:
                out["filter_keep"] = bs // 2
        out.update(user or {})
        return out

    def label(self) -> str:
        sub = []
        if self.n_train is not None:
            sub.append(f"first {self.n_train} train")
        if self.n_test is not None:
            sub.append(f"first {self.n_test} test")
        tail = f" ({', '.join(sub)})" if sub else ""
        return f"preset {self.name}{tail}" + ("" if self.trains else " [NOT expected to be accurate]")


PRESETS: dict[str, Preset] = {
    p.name: p for p in [
        Preset(
            name="full",
            description="The exact recipe on all the data (50000 train, 10000 test images). "
                        "What a GPU comparison should use.",
            trains=True, margin=0.1, max_runs=200, wall_minutes=None),
        Preset(
            name="smoke",
            description="Seconds per run, for tests: widths (16,32,32), 1 epoch, batch 500 on "
                        "the first 2000 training / 1000 test images, TTA as the recipe. Checks "
                        "the plumbing only; its accuracy is NOT expected to mean anything.",
            overrides={"widths": (16, 32, 32), "epochs": 1, "batch_size": 500,
                       "proxy_widths": (8, 16, 16)},
            n_train=2000, n_test=1000, trains=False, margin=0.5, max_runs=3),
        Preset(
            name="cpu",
            description="Sized for a 2-core CPU: widths (32,64,64) instead of (64,256,256), "
                        "batch 250, 4 epochs, on the first 10000 training images; evaluated "
                        "(TTA as the recipe) on all 10000 test images, the primary endpoint; no "
                        "per-epoch evaluation (it would cost more than the training); every "
                        "other hyper-parameter (learning rates, momenta, weight decay per "
                        "example, TTA) as the recipe. Sequential plan: margin +/-0.5 points, at "
                        "most 20 runs per side, 30 minutes of wall time.",
            # 4 epochs rather than 2: twice the training about halves the run-to-run spread
            # (mostly distribution-wise in an under-trained net), which is what lets the plan
            # decide at margin 0.5 within the ~14 pairs that fit in 30 minutes on 2 cores
            overrides={"widths": (32, 64, 64), "epochs": 4, "batch_size": 250,
                       "proxy_widths": (16, 32, 32)},
            n_train=10000, n_test=None, trains=True, margin=0.5, max_runs=20, wall_minutes=30.0,
            eval_every_epoch=False),
    ]
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise RecipeError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def gpu_available() -> tuple[bool, str]:
    """(is a GPU usable?, how we know), importing torch/jax lazily and only if installed."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False, "CUDA_VISIBLE_DEVICES is empty"
    try:
        import torch  # noqa: PLC0415
        if torch.cuda.is_available():
            return True, f"torch sees CUDA device {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - torch missing or broken: try jax
        pass
    try:
        import jax  # noqa: PLC0415
        gpus = [d for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]
        if gpus:
            return True, f"jax sees {gpus[0].device_kind}"
    except Exception:  # noqa: BLE001
        pass
    return False, "no GPU visible to torch or jax"


def default_preset() -> tuple[str, str]:
    """('full' if a GPU is present else 'cpu', the reason)."""
    has_gpu, why = gpu_available()
    return ("full", why) if has_gpu else ("cpu", why)
