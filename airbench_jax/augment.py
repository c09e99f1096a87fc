"""On-device data augmentation with explicit PRNG keys (NHWC; horizontal flip = axis 2)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from airbench_common.recipes import CIFAR_MEAN, CIFAR_STD


def normalize(images, dtype=jnp.float32):
    """uint8 (or 0-1 float) NHWC -> (x/255 - mean)/std."""
    x = jnp.asarray(images)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    mean = jnp.asarray(CIFAR_MEAN, jnp.float32)
    std = jnp.asarray(CIFAR_STD, jnp.float32)
    return ((x - mean) / std).astype(dtype)


def flip_lr(x):
    return x[:, :, ::-1, :]


def random_flip(key, x):
    """Flip a random half (each image with probability 1/2)."""
    mask = jax.random.uniform(key, (x.shape[0],)) < 0.5
    return jnp.where(mask[:, None, None, None], flip_lr(x), x)


def pad_reflect(x, r: int):
    return x if r == 0 else jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")


def random_crop(key, padded, size: int = 32):
    """Per-image shifts in [-r, r] on each axis from a reflect-padded batch (r = (H-size)/2)."""
    r = (padded.shape[1] - size) // 2
    if r == 0:
        return padded
    shifts = jax.random.randint(key, (padded.shape[0], 2), 0, 2 * r + 1)

    def one(img, s):
        return jax.lax.dynamic_slice(img, (s[0], s[1], 0), (size, size, img.shape[-1]))

    return jax.vmap(one)(padded, shifts)


def cutout(key, x, size: int):
    """Zero a random size x size square lying fully inside each image."""
    if size <= 0:
        return x
    n, h, w, _ = x.shape
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n,), 0, h - size + 1)
    cx = jax.random.randint(kx, (n,), 0, w - size + 1)
    ys = jnp.arange(h)[None, :]
    xs = jnp.arange(w)[None, :]
    my = (ys >= cy[:, None]) & (ys < cy[:, None] + size)
    mx = (xs >= cx[:, None]) & (xs < cx[:, None] + size)
    mask = my[:, :, None] & mx[:, None, :]
    return jnp.where(mask[..., None], jnp.zeros_like(x), x)


def augment_batch(key, padded_batch, epoch, *, flip: bool, altflip: bool, cutout_size: int,
                  size: int = 32):
    """Crop (translate), flip (altflip: whole batch on odd epochs, the base having been
    pre-flipped at random once; else a fresh random flip) and cutout, in upstream's order."""
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    x = random_crop(k_crop, padded_batch, size)
    if flip:
        if altflip:
            x = jnp.where(epoch % 2 == 1, flip_lr(x), x)
        else:
            x = random_flip(k_flip, x)
    return cutout(k_cut, x, cutout_size)


def epoch_order(key, n: int):
    return jax.random.permutation(key, n)
