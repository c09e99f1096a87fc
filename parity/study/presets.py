"""Presets: documented scalings of an exact recipe, so a comparison fits the machine at hand.

A preset is (recipe overrides) + (training/test subset sizes) + a description. The subsets are
always the FIRST n_train training images and the FIRST n_test test images of the dataset, in the
dataset's own (official) order. User ``--set key=value`` overrides are applied on top of a
preset's. Only documented knobs are touched: widths, epochs, batch_size, the subset sizes,
whiten_images (capped at n_train: the whitening covariance is estimated from the first
whiten_images training images), and for airbench96_faster filter_keep (must stay below the batch
size) and proxy_widths.

Upstream airbench94_muon.py with widths (16,64,64) and its hyper-parameters otherwise unchanged
stayed at chance (10% after 2 epochs, measured here), so a preset is only trustworthy once measured
to train; each preset says what
was measured (``measured``) and whether it is expected to be accurate at all (``trains``).
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
    measured: str = "not measured yet"
    # the sequential plan, fixed in advance (parity.plan): equivalence margin in accuracy points,
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


# What the cpu preset was measured to do (airbench94_muon, JPEG CIFAR-10, TTA accuracy on all
# 10,000 test images; see the README for the commit and CPU):
CPU_MEASURED = (
    "airbench94_muon, JPEG CIFAR-10, all 10000 test images. This preset (first 10000 training "
    "images, 4 epochs), pilot runs before it was fixed (benchmarks/preset_spread.py, 2-core "
    "AVX-512 EPYC, 85aa02f): PyTorch 77.11 +/- 0.32% (6 runs), JAX 77.19 +/- 0.14% (4 runs), "
    "about 46 s (PyTorch) and 80 s (JAX) per run on an idle machine. At sd 0.32 and the ~14 pairs "
    "that fit in 30 minutes, the plan decides 'equivalent' at d = 0 with probability 0.97 "
    "(python -m parity.plan --simulate --sd 0.32 0.32 --margin 0.5 --max-runs 20 --max-pairs "
    "14); at sd 0.40, 0.85. The earlier 2-epoch preset (70.6%) spread 0.57 / 0.64 points per run "
    "(18 runs per side): too spread to decide within 30 minutes (probability 0.51); twice the "
    "training halved the spread, which is mostly distribution-wise (the runs themselves "
    "differ) in an under-trained net. Other recipes: not measured.")

PRESETS: dict[str, Preset] = {
    p.name: p for p in [
        Preset(
            name="full",
            description="The exact recipe on all the data (50000 train, 10000 test images). "
                        "What a GPU comparison should use.",
            trains=True, margin=0.1, max_runs=200, wall_minutes=None,
            measured="upstream: ~94% (airbench94*) on exact CIFAR-10 on an A100"),
        Preset(
            name="smoke",
            description="Seconds per run, for tests: widths (16,32,32), 1 epoch, batch 500 on "
                        "the first 2000 training / 1000 test images, TTA as the recipe. Checks "
                        "the plumbing only; its accuracy is NOT expected to mean anything.",
            overrides={"widths": (16, 32, 32), "epochs": 1, "batch_size": 500,
                       "proxy_widths": (8, 16, 16)},
            n_train=2000, n_test=1000, trains=False, margin=0.5, max_runs=3,
            measured="not meaningful (plumbing check)"),
        Preset(
            name="cpu",
            description="Sized for a 2-core CPU: widths (32,64,64) instead of (64,256,256), "
                        "batch 250, 4 epochs, on the first 10000 training images; evaluated "
                        "(TTA as the recipe) on all 10000 test images, the primary endpoint; no "
                        "per-epoch evaluation (it would cost more than the training); every "
                        "other hyper-parameter (learning rates, momenta, weight decay per "
                        "example, TTA) as the recipe. Sequential plan: margin +/-0.5 points, at "
                        "most 20 runs per side, 30 minutes of wall time.",
            overrides={"widths": (32, 64, 64), "epochs": 4, "batch_size": 250,
                       "proxy_widths": (16, 32, 32)},
            n_train=10000, n_test=None, trains=True, margin=0.5, max_runs=20, wall_minutes=30.0,
            eval_every_epoch=False,
            measured=CPU_MEASURED),
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
