"""One batch stream for both frameworks, generated in numpy from a seed.

Lockstep and numerics runs need the two frameworks to see *identical* batches: same order, same
augmentation draws, same float32 values. This module makes them once, in numpy, and hands them to
torch as NCHW and to JAX as NHWC (`to_nchw` / the NHWC arrays as they are).

Semantics follow upstream's CifarLoader (airbench94_muon.py / legacy airbench96.py), per epoch e:

1. normalize: (uint8 / 255 - CIFAR_MEAN) / CIFAR_STD in float32;
2. alternating flip (``recipe.altflip``): a random half of the images is mirrored once, with the
   *same* mask in every epoch ("base flips", drawn once); plain random flip (``flip`` without
   ``altflip``): a fresh 50% mask each epoch;
3. translate r: reflect-pad by r, take a 32x32 crop at shift (sy, sx), each uniform in [-r, r],
   drawn per image per epoch (sy on the H axis, sx on the W axis);
4. alternating flip, epoch parity: on odd epochs the whole set is mirrored;
5. cutout s: a random s x s square per image per epoch is set to 0 (after normalization), top-left
   corner (cy, cx) uniform in [0, 32 - s];
6. order: a random permutation per epoch; batch i of the epoch is perm[i*B:(i+1)*B]; the last
   partial batch is dropped; the stream stops after ``recipe.total_steps(n)`` batches.

"Mirror" is always the W axis: NHWC axis 2, NCHW axis 3. All operations act per image, so the
stream builds each batch lazily from the uint8 images (no 600 MB float copy of the dataset), and
the result equals augmenting the whole set first, as upstream does.

Each random quantity has its own generator, ``np.random.default_rng([seed, epoch, PURPOSE])``, so a
batch does not depend on which batches were built before it.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from airbench_common.recipes import CIFAR_MEAN, CIFAR_STD, Recipe

# stream ids for the per-purpose generators
_ORDER, _BASE_FLIP, _FLIP, _SHIFT, _CUTOUT = range(5)

MEAN = np.asarray(CIFAR_MEAN, dtype=np.float32)
STD = np.asarray(CIFAR_STD, dtype=np.float32)


def normalize(images_u8: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> normalized float32 NHWC."""
    x = images_u8.astype(np.float32) / np.float32(255)
    return (x - MEAN) / STD


def to_nchw(x: np.ndarray) -> np.ndarray:
    """NHWC -> contiguous NCHW (for torch)."""
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> contiguous NHWC (for JAX)."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def mirror(x: np.ndarray) -> np.ndarray:
    """Horizontal flip of an NHWC batch (W = axis 2)."""
    return x[:, :, ::-1, :]


@dataclass(frozen=True)
class EpochDraws:
    epoch: int
    perm: np.ndarray          # (N,) int64, the epoch's order
    flip: np.ndarray          # (N,) bool, per-image mirror applied before the crop
    parity_flip: bool         # whole-set mirror after the crop (odd epochs under altflip)
    shifts: np.ndarray        # (N, 2) int64 (sy, sx) in [-r, r]; zeros when translate == 0
    corners: np.ndarray | None  # (N, 2) int64 (cy, cx) cutout top-left, or None


@dataclass
class BatchStream:
    images: np.ndarray        # uint8 (N, 32, 32, 3)
    labels: np.ndarray        # int (N,)
    batch_size: int
    seed: int = 0
    flip: bool = True
    altflip: bool = True
    translate: int = 0
    cutout: int = 0
    total_steps: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def for_recipe(cls, recipe: Recipe, images: np.ndarray, labels: np.ndarray, seed: int = 0,
                   steps: int | None = None) -> "BatchStream":
        total = recipe.total_steps(len(images))
        return cls(images=images, labels=labels, batch_size=recipe.batch_size, seed=seed,
                   flip=recipe.flip, altflip=recipe.altflip, translate=recipe.translate,
                   cutout=recipe.cutout, total_steps=total if steps is None else steps)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 NHWC (N,H,W,3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if len(self.images) < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} > {len(self.images)} images")
        if self.total_steps is None:
            self.total_steps = self.steps_per_epoch

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    def __len__(self) -> int:
        return int(self.total_steps)

    def _rng(self, epoch: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), int(epoch), purpose])

    def draws(self, epoch: int) -> EpochDraws:
        if epoch in self._cache:
            return self._cache[epoch]
        n, h = self.n, self.images.shape[1]
        perm = self._rng(epoch, _ORDER).permutation(n)
        if self.flip and self.altflip:
            flip = self._rng(0, _BASE_FLIP).random(n) < 0.5   # same base mask every epoch
            parity = epoch % 2 == 1
        elif self.flip:
            flip = self._rng(epoch, _FLIP).random(n) < 0.5
            parity = False
        else:
            flip, parity = np.zeros(n, bool), False
        r = self.translate
        shifts = (self._rng(epoch, _SHIFT).integers(-r, r + 1, size=(n, 2)) if r > 0
                  else np.zeros((n, 2), np.int64))
        corners = (self._rng(epoch, _CUTOUT).integers(0, h - self.cutout + 1, size=(n, 2))
                   if self.cutout > 0 else None)
        d = EpochDraws(epoch, perm, flip, parity, shifts, corners)
        if len(self._cache) > 2:
            self._cache.clear()
        self._cache[epoch] = d
        return d

    def augment(self, idx: np.ndarray, d: EpochDraws) -> np.ndarray:
        """The normalized, augmented float32 NHWC images of dataset indices `idx` in epoch d."""
        x = normalize(self.images[idx])
        f = d.flip[idx]
        x[f] = mirror(x[f])
        r = self.translate
        if r > 0:
            h, w = x.shape[1:3]
            xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
            out = np.empty_like(x)
            sy, sx = d.shifts[idx, 0], d.shifts[idx, 1]
            for k in range(len(idx)):
                out[k] = xp[k, r + sy[k]:r + sy[k] + h, r + sx[k]:r + sx[k] + w]
            x = out
        if d.parity_flip:
            x = mirror(x)
        if d.corners is not None:
            s = self.cutout
            for k, (cy, cx) in enumerate(d.corners[idx]):
                x[k, cy:cy + s, cx:cx + s, :] = 0
        return np.ascontiguousarray(x, dtype=np.float32)

    def indices(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, dataset indices) of global step `step`."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} outside [0, {len(self)})")
        epoch, i = divmod(step, self.steps_per_epoch)
        d = self.draws(epoch)
        return epoch, d.perm[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 NHWC normalized+augmented, labels int64) of global step `step`."""
        epoch, idx = self.indices(step)
        return self.augment(idx, self.draws(epoch)), self.labels[idx].astype(np.int64)

    def __iter__(self):
        for s in range(len(self)):
            yield self.batch(s)

    @property
    def epochs(self) -> int:
        return math.ceil(len(self) / self.steps_per_epoch)


def synthetic_images(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images with some spatial structure (smoothed noise) and random labels, for
    tests that need no dataset."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, size + 2, size + 2, 3)).astype(np.float32)
    smooth = (raw[:, :-2, :-2] + raw[:, 1:-1, 1:-1] + raw[:, 2:, 2:] + raw[:, 1:-1, :-2]) / 4
    return smooth.astype(np.uint8), rng.integers(0, 10, size=n).astype(np.int64)


def load_images(n: int, data: str = "auto", seed: int = 0, n_test: int = 0,
                tag: str = "numerics"):
    """(uint8 NHWC training images, labels, test images, test labels, source label): the first
    n CIFAR-10 training images (and n_test test images) if a dataset is configured
    (data='auto'/'real'), else synthetic ones (one draw of n + n_test, split); `tag` names the
    command in the message saying it fell back to synthetic images."""
    if data in ("auto", "real"):
        try:
            from airbench_common.data import dataset_label, load_cifar10
            tr = load_cifar10("train", download=False)
            te = load_cifar10("test", download=False) if n_test else (tr[0][:0], tr[1][:0])
            return (tr[0][:n], tr[1][:n].astype(np.int64), te[0][:n_test],
                    te[1][:n_test].astype(np.int64), dataset_label())
        except Exception as exc:  # noqa: BLE001 - any missing/corrupt dataset -> synthetic
            if data == "real":
                raise
            print(f"[{tag}] no dataset ({type(exc).__name__}); using synthetic images",
                  file=sys.stderr)
    xi, yi = synthetic_images(n + n_test, seed)
    return xi[:n], yi[:n], xi[n:], yi[n:], "synthetic"
