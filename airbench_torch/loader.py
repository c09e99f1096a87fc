"""CifarLoader: the whole split lives on the device as float NCHW in [0, 1]; augmentation is
done on the device, a whole epoch at a time, as in upstream's library loader. All randomness
comes from the loader's own torch.Generator (seeded by `seed`), so runs are reproducible."""
from __future__ import annotations

from math import ceil

import numpy as np
import torch
import torch.nn.functional as F

from airbench_common import CIFAR_MEAN, CIFAR_STD, load_cifar10
from airbench_common import validate as V
from airbench_common.library import check_loader_args

from .device import compute_dtype, resolve_device, to_memory_format, uses_channels_last


def _draw_seed() -> int:
    return int(torch.randint(0, 2 ** 62, (1,)).item())


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally (W axis) with probability 1/2."""
    mask = torch.rand(len(images), generator=gen, device=images.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def random_translate(padded: torch.Tensor, r: int, gen: torch.Generator, return_shifts=False):
    """Random size x size crops of images reflect-padded by r: shift (dy, dx) in [-r, r]^2,
    drawn per image. Done as two passes of per-shift slicing (rows, then columns)."""
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * r, wp - 2 * r
    dev = padded.device
    shifts = torch.randint(-r, r + 1, (n, 2), generator=gen, device=dev)
    rows = torch.empty((n, c, h, wp), dtype=padded.dtype, device=dev)
    for s in range(-r, r + 1):
        idx = (shifts[:, 0] == s).nonzero().squeeze(1)
        rows[idx] = padded[idx, :, r + s:r + s + h, :]
    out = torch.empty((n, c, h, w), dtype=padded.dtype, device=dev)
    for s in range(-r, r + 1):
        idx = (shifts[:, 1] == s).nonzero().squeeze(1)
        out[idx] = rows[idx, :, :, r + s:r + s + w]
    return (out, shifts) if return_shifts else out


def random_cutout(images: torch.Tensor, size: int, gen: torch.Generator, return_corners=False):
    """Zero a random size x size square lying fully inside each image (all channels)."""
    n, _, h, w = images.shape
    dev = images.device
    y0 = torch.randint(0, h - size + 1, (n,), generator=gen, device=dev)
    x0 = torch.randint(0, w - size + 1, (n,), generator=gen, device=dev)
    ys = torch.arange(h, device=dev).view(1, h) - y0.view(-1, 1)
    xs = torch.arange(w, device=dev).view(1, w) - x0.view(-1, 1)
    my = (ys >= 0) & (ys < size)
    mx = (xs >= 0) & (xs < size)
    mask = (my.view(n, 1, h, 1) & mx.view(n, 1, 1, w))
    out = images.masked_fill(mask, 0)
    return (out, torch.stack([y0, x0], 1)) if return_corners else out


class CifarLoader:
    """Upstream-compatible loader. `path` is the data directory (None: $AIRBENCH_DATA or the
    default cache); `gpu`: upstream's CUDA device index (None: see `device`). Extras after
    upstream's parameters: `device` (overrides gpu; None: CUDA if available, else CPU), `seed`
    (the loader's torch.Generator; None draws one), `data=(images_uint8_nhwc, labels)` to use
    arrays instead of files, `channels_last` (memory format; None: the device's policy)."""

    def __init__(self, path=None, train=True, batch_size=500, aug=None, drop_last=None,
                 shuffle=None, altflip=False, gpu=None, device=None, seed=None, data=None,
                 channels_last=None):
        # every argument checked before the data is read (airbench_common.library)
        settings = check_loader_args(path, train, batch_size, aug, drop_last, shuffle, altflip,
                                     seed, flags=(("channels_last", channels_last),))
        self.epoch = 0
        self.path = path
        if gpu is not None and not isinstance(gpu, (str, torch.device)):
            gpu = f"cuda:{V.integer('gpu', gpu, low=0)}"    # upstream's CUDA index
        if device is None and gpu is not None:
            device = gpu
        self.device = resolve_device(device)
        self.dtype = compute_dtype(self.device)
        if data is None:
            images, labels = load_cifar10("train" if train else "test", path)
        else:  # arrays (numpy or torch, on any device) get the checks a dataset file gets
            images, labels = V.check_data_pair(data, "data")
        images = torch.as_tensor(images)
        imgs = images.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255
        self.channels_last = uses_channels_last(self.device, channels_last)
        self.images = to_memory_format(imgs, self.channels_last)
        self.labels = torch.as_tensor(np.asarray(labels)).to(self.device, torch.int64)
        self.mean = torch.tensor(CIFAR_MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.proc_images = {}
        settings.settle(self, _draw_seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else ceil(n / self.batch_size)

    def __setattr__(self, k, v):
        if k in ("images", "labels") and "images" in self.__dict__ and "labels" in self.__dict__:
            assert self.epoch == 0, "Changing images or labels is only supported before iteration."
        super().__setattr__(k, v)

    def epoch_images(self) -> torch.Tensor:
        """This epoch's augmented, normalized images (advances no counter)."""
        g = self.generator
        flip = self.aug.get("flip", False)
        pad = int(self.aug.get("translate", 0))
        if self.epoch == 0 or "norm" not in self.proc_images:
            images = self.proc_images["norm"] = self.normalize(self.images)
            if flip:  # flip a random half once; alternating flip then flips everything on odd epochs
                images = self.proc_images["flip"] = random_flip(images, g)
            if pad > 0:
                self.proc_images["pad"] = F.pad(images, (pad,) * 4, mode="reflect")
        if pad > 0:
            images = random_translate(self.proc_images["pad"], pad, g)
        elif flip:
            images = self.proc_images["flip"]
        else:
            images = self.proc_images["norm"]
        if flip:
            if self.altflip:
                if self.epoch % 2 == 1:
                    images = images.flip(-1)
            else:
                images = random_flip(images, g)
        cut = int(self.aug.get("cutout", 0))
        if cut > 0:
            images = random_cutout(images, cut, g)
        return images

    def __iter__(self):
        images = self.epoch_images()
        self.epoch += 1
        n = len(images)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idx], self.labels[idx]
