"""Upstream airbench's library API on JAX: CifarLoader, train9x, infer, evaluate, checkpoints.

Differences from upstream: loaders yield jnp NHWC arrays; `infer` returns jnp logits (use
jax.nn.log_softmax(logits, 1).max(1) for upstream's `.log_softmax(1).amax(1)`); `train*` accept
an optional `seed` and `test_loader` besides upstream's argument names.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common.data import atomic_write_bytes, load_cifar10
from airbench_common.recipes import Recipe, get_recipe

from . import augment as aug
from .convert import from_torch_arrays, to_torch_arrays
from .model import CifarNet, make_net as _make_net
from .train import _split, infer_arrays, net_from_state, resolve_device, run_recipe_with_state


class CifarLoader:
    """Upstream-compatible loader. `path` is the data directory, read or downloaded into as
    upstream does (None: $AIRBENCH_DATA or the default cache); `data=(images_uint8_nhwc, labels)`
    uses arrays instead of files."""

    def __init__(self, path=None, train=True, batch_size=500, aug=None, drop_last=None,
                 shuffle=None, altflip=False, seed=None, device=None, data=None):
        if data is None:
            data = load_cifar10("train" if train else "test", path)
        images, labels = (np.asarray(a) for a in data)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 NHWC (N, 32, 32, 3), got {images.shape} "
                             f"{images.dtype}")
        self.epoch = 0
        dev = resolve_device(device)
        self.images = jax.device_put(images, dev)      # uint8 NHWC, on device
        self.labels = jax.device_put(labels.astype(np.int32), dev)
        self.aug = dict(aug or {})
        for k in self.aug:
            if k not in ("flip", "translate", "cutout"):
                raise ValueError(f"unrecognized augmentation {k!r}")
        self.batch_size = batch_size
        self.drop_last = train if drop_last is None else drop_last
        self.shuffle = train if shuffle is None else shuffle
        self.altflip = altflip
        self.key = jax.random.PRNGKey(0 if seed is None else seed)
        self._base = None

    def __setattr__(self, k, v):
        if k in ("images", "labels") and getattr(self, "epoch", 0) != 0:
            raise AttributeError("images/labels can only be changed before iteration")
        super().__setattr__(k, v)

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, images):
        return aug.normalize(images)

    def __iter__(self):
        k_flip, k_epoch = jax.random.split(self.key)
        if self.epoch == 0 or self._base is None:
            base = aug.normalize(self.images)
            if self.aug.get("flip", False):
                base = aug.random_flip(k_flip, base)
            self._base = aug.pad_reflect(base, self.aug.get("translate", 0))
        k_crop, k_f, k_cut, k_order = jax.random.split(jax.random.fold_in(k_epoch, self.epoch), 4)
        images = aug.random_crop(k_crop, self._base, 32)
        if self.aug.get("flip", False):
            if self.altflip:
                images = aug.flip_lr(images) if self.epoch % 2 == 1 else images
            else:
                images = aug.random_flip(k_f, images)
        images = aug.cutout(k_cut, images, self.aug.get("cutout", 0))
        self.epoch += 1
        n = len(images)
        order = jax.random.permutation(k_order, n) if self.shuffle else jnp.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idx], self.labels[idx]


# ----------------------------------------------------------------------------- nets
def make_net(recipe="airbench94", key=None, **kw) -> CifarNet:
    r = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    return _make_net(r, key, **kw)


def make_net93(**kw):
    return make_net("airbench93", **kw)


def make_net94(**kw):
    return make_net("airbench94", **kw)


def make_net95(**kw):
    return make_net("airbench95", **kw)


def make_net96(**kw):
    return make_net("airbench96", **kw)


# ----------------------------------------------------------------------------- inference
def infer(net: CifarNet, loader: CifarLoader, tta_level: int = 0):
    g, p, r = _split(net)
    return infer_arrays(g, p, r, aug.normalize(loader.images), tta_level)


def evaluate(net: CifarNet, loader: CifarLoader, tta_level: int = 0) -> float:
    logits = infer(net, loader, tta_level)
    return float((logits.argmax(1) == loader.labels).mean())


# ----------------------------------------------------------------------------- training
def train(recipe="airbench94", loader: CifarLoader | None = None, *, seed: int = 0,
          test_loader: CifarLoader | None = None, verbose: bool = True, **overrides) -> CifarNet:
    """Train `recipe` (with overrides) on the loader's images/labels/augmentation; the trained
    net is returned. Without a loader, the recipe's own augmentation on the full training set."""
    train_data = test_data = None
    if loader is not None:
        a = loader.aug
        overrides = dict(dict(batch_size=loader.batch_size, flip=bool(a.get("flip", False)),
                              altflip=bool(loader.altflip), translate=int(a.get("translate", 0)),
                              cutout=int(a.get("cutout", 0))), **overrides)
        train_data = (np.asarray(loader.images), np.asarray(loader.labels))
    if test_loader is not None:
        test_data = (np.asarray(test_loader.images), np.asarray(test_loader.labels))
    rec, state = run_recipe_with_state(recipe, seed, overrides=overrides, train_data=train_data,
                                       test_data=test_data, verbose=verbose)
    if rec["status"] != "ok":
        raise FloatingPointError(rec.get("error", "training diverged"))
    return net_from_state(state)


def _upstream_train(recipe, train_loader, epochs, label_smoothing, learning_rate, bias_scaler,
                    momentum, weight_decay, whiten_bias_epochs, tta_level, make_net, run,
                    verbose, **kw):
    ov = {}
    for k, v in dict(epochs=epochs, label_smoothing=label_smoothing, lr=learning_rate,
                     bias_scaler=bias_scaler, momentum=momentum, weight_decay=weight_decay,
                     whiten_bias_epochs=whiten_bias_epochs, tta_level=tta_level).items():
        if v is not None:
            ov[k] = v
    seed = kw.pop("seed", run if isinstance(run, int) and run >= 0 else 0)
    return train(recipe, train_loader, seed=seed, verbose=bool(verbose), **ov, **kw)


def _make_train(name):
    def fn(train_loader=None, epochs=None, label_smoothing=None, learning_rate=None,
           bias_scaler=None, momentum=None, weight_decay=None, whiten_bias_epochs=None,
           tta_level=None, make_net=None, run=None, verbose=True, **kw):
        return _upstream_train(name, train_loader, epochs, label_smoothing, learning_rate,
                               bias_scaler, momentum, weight_decay, whiten_bias_epochs,
                               tta_level, make_net, run, verbose, **kw)
    fn.__name__ = "train" + name.replace("airbench", "")
    fn.__doc__ = f"Upstream-style entry point for the {name} recipe (None = recipe default)."
    return fn


train93 = _make_train("airbench93")
train94 = _make_train("airbench94")
train95 = _make_train("airbench95")
train96 = _make_train("airbench96")
train94_muon = _make_train("airbench94_muon")
train96_faster = _make_train("airbench96_faster")


# ----------------------------------------------------------------------------- checkpoints
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402,F401
