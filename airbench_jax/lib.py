"""Upstream airbench's library API on JAX: CifarLoader, make_net93-96, train93-96, warmup93-96,
infer, evaluate (the published `airbench` package's names and parameter order; our extra
parameters come after upstream's and are keyword-only), plus train94_muon, train96_faster,
train(recipe, loader) and checkpoints.

Differences from upstream: loaders yield jnp NHWC arrays; `infer` returns jnp logits (use
jax.nn.log_softmax(logits, 1).max(1) for upstream's `.log_softmax(1).amax(1)`); randomness comes
from explicit keys: a loader's `seed` and train's `seed` (None: drawn at random, as upstream's
unseeded runs are).
"""
from __future__ import annotations

import functools
import math
import secrets
import time

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import validate as V
from airbench_common.data import load_cifar10
from airbench_common.library import check_loader_args, check_train_args, upstream_api
from airbench_common.outcome import EVAL_BATCH_ACCELERATOR
from airbench_common.recipes import Recipe, get_recipe
from airbench_common.table import Table
from airbench_common.validate import check_tta_level

from . import augment as aug
from . import model as _model
from . import precision as prec
from .evaluation import infer_arrays
from .finish import conclude
from .loop import loss_verdict
from .model import CifarNet, make_net, split_net
from .prepare import resolve_device
from .state import build_state, net_from_state, train_step


def _draw_seed() -> int:
    return secrets.randbits(31)


class CifarLoader:
    """Upstream-compatible loader. `path` is the data directory, read or downloaded into as
    upstream does (None: $AIRBENCH_DATA or the default cache); `gpu`: upstream's accelerator
    index (None: JAX's default device). Keyword-only extras: `device` (a jax.Device or a
    platform name such as 'cpu', overriding gpu), `seed` (the loader's PRNG key; None draws one),
    `data=(images_uint8_nhwc, labels)` to use arrays instead of files."""

    def __init__(self, path=None, train=True, batch_size=500, aug=None, drop_last=None,
                 shuffle=None, altflip=False, gpu=None, *, device=None, seed=None, data=None):
        # every argument checked before the data is read (airbench_common.library)
        settings = check_loader_args(path, train, batch_size, aug, drop_last, shuffle, altflip,
                                     seed)
        gpu = None if gpu is None else V.integer("gpu", gpu, low=0)
        if device is None and gpu is not None:
            if gpu >= len(jax.devices()):
                raise V.unknown_device(f"gpu {gpu}", [f"gpu {i}" for i in
                                                      range(len(jax.devices()))])
            device = jax.devices()[gpu]
        self.device = resolve_device(device)
        if data is None:
            images, labels = load_cifar10("train" if train else "test", path)
        else:
            images, labels = V.check_data_pair(data, "data")
        self.epoch = 0
        self.path = path
        self.images = jax.device_put(images, self.device)      # uint8 NHWC, on device
        self.labels = jax.device_put(labels.astype(np.int32), self.device)
        settings.settle(self, _draw_seed)
        self.key = jax.random.PRNGKey(self.seed)
        self._base = None

    def __setattr__(self, k, v):
        if k in ("images", "labels") and getattr(self, "epoch", 0) != 0:
            raise AttributeError("images/labels can only be changed before iteration")
        if k in ("images", "labels"):
            self.__dict__["_base"] = None
        super().__setattr__(k, v)

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def normalize(self, images):
        return aug.normalize(images)

    def __iter__(self):
        """One epoch: upstream's order (normalize, pre-flip a random half once, reflect-pad once;
        then per epoch crop, flip, cutout: augment.augment_batch on the whole split), then
        batches in a random (shuffle) or the stored order."""
        k_flip, k_epoch = jax.random.split(self.key)
        flip = bool(self.aug.get("flip", False))
        if self.epoch == 0 or self._base is None:
            base = aug.normalize(self.images)
            if flip:
                base = aug.random_flip(k_flip, base)
            self._base = aug.pad_reflect(base, int(self.aug.get("translate", 0)))
        k_aug, k_order = jax.random.split(jax.random.fold_in(k_epoch, self.epoch))
        images = aug.augment_batch(k_aug, self._base, self.epoch, flip=flip,
                                   altflip=bool(self.altflip),
                                   cutout_size=int(self.aug.get("cutout", 0)))
        self.epoch += 1
        n = len(images)
        order = jax.random.permutation(k_order, n) if self.shuffle else jnp.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idx], self.labels[idx]


# ----------------------------------------------------------------------------- nets
def _make_net9x(name, widths, batchnorm_momentum, key, conv_impl, dtype) -> CifarNet:
    over = {}
    if widths is not None:
        over["widths"] = V.check_widths(widths)
    if batchnorm_momentum is not None:
        over["bn_momentum"] = batchnorm_momentum    # the recipe checks it (a number in [0, 1))
    return make_net(get_recipe(name, **over), key, conv_impl=conv_impl, dtype=dtype)


def _checks_model_and_loader(fn):
    """infer/evaluate: `model` is a CifarNet and `loader` a CifarLoader (one-line errors)."""
    @functools.wraps(fn)
    def checked(model, loader, *args, **kwargs):
        V.check_instance("model", model, CifarNet, "a CifarNet (airbench_jax's make_net9x or "
                         "train9x return one)")
        V.check_instance("loader", loader, CifarLoader, "an airbench_jax.CifarLoader")
        return fn(model, loader, *args, **kwargs)
    return checked


def make_net93(widths=None, batchnorm_momentum=None, *, key=None, conv_impl="auto",
               dtype=jnp.float32) -> CifarNet:
    """Upstream's make_net93(widths=dict(block1=, block2=, block3=), batchnorm_momentum=);
    None takes the recipe table's value. key: the init's PRNG key (None: PRNGKey(0))."""
    return _make_net9x("airbench93", widths, batchnorm_momentum, key, conv_impl, dtype)


def make_net94(widths=None, batchnorm_momentum=None, *, key=None, conv_impl="auto",
               dtype=jnp.float32) -> CifarNet:
    """As make_net93, for airbench94."""
    return _make_net9x("airbench94", widths, batchnorm_momentum, key, conv_impl, dtype)


def make_net95(widths=None, batchnorm_momentum=None, *, key=None, conv_impl="auto",
               dtype=jnp.float32) -> CifarNet:
    """As make_net93, for airbench95."""
    return _make_net9x("airbench95", widths, batchnorm_momentum, key, conv_impl, dtype)


def make_net96(widths=None, batchnorm_momentum=None, *, key=None, conv_impl="auto",
               dtype=jnp.float32) -> CifarNet:
    """As make_net93, for airbench96. Defaults follow the paper script (widths 128/384/512, BN
    keep-momentum 0.9); upstream's library make_net96 defaults to 128/512/512 and 0.6."""
    return _make_net9x("airbench96", widths, batchnorm_momentum, key, conv_impl, dtype)


# ----------------------------------------------------------------------------- inference
@_checks_model_and_loader
def infer(model: CifarNet, loader: CifarLoader, tta_level: int = 0):
    """Logits for all of the loader's images (in stored order), with test-time augmentation
    (`tta_level` 0, 1 or 2; anything else is a UsageError)."""
    tta_level = check_tta_level(tta_level)
    g, p, r = split_net(model)
    return infer_arrays(g, p, r, aug.normalize(loader.images), tta_level)


@_checks_model_and_loader
def evaluate(model: CifarNet, loader: CifarLoader, tta_level: int = 0) -> float:
    tta_level = check_tta_level(tta_level)
    logits = infer(model, loader, tta_level)
    return float((logits.argmax(1) == loader.labels).mean())


# ----------------------------------------------------------------------------- training
def train(recipe="airbench94", loader: CifarLoader | None = None, *, make_net=None, run=0,
          verbose: bool = True, seed: int | None = None, test_loader: CifarLoader | None = None,
          ns_dtype=None, conv_impl: str = "auto", dtype=None, **overrides) -> CifarNet:
    """Train `recipe` (a name or Recipe; overrides are recipe fields) on `loader`, as upstream's
    train(): the loader's images, labels, augmentation, order (shuffle) and randomness (seed)
    are what is trained on, and its batch size is the recipe's. Without a loader: the recipe's
    augmented training loader on $AIRBENCH_DATA. make_net: a no-argument callable returning the
    CifarNet to train (upstream's make_net); None builds the recipe's net from `seed`. run: the
    run number printed in the table (upstream's meaning); -1 or 'warmup' takes one step only.
    seed: the net's init and the proxy's (None: drawn at random). With verbose, the per-epoch
    table is evaluated on `test_loader` or the test split of the loader's folder."""
    r, seed = check_train_args(recipe, loader, test_loader, make_net, seed, overrides,
                               loader_type=CifarLoader, loader_name="an airbench_jax.CifarLoader")
    if loader is None:
        loader = CifarLoader(None, train=True, batch_size=r.batch_size, aug=r.loader_aug(),
                             altflip=r.altflip)
    loader.epoch = 0
    seed = _draw_seed() if seed is None else int(seed)
    k_net, k_state = jax.random.split(jax.random.PRNGKey(seed))
    # the device's default policy (resolved once here), in `dtype` where given
    policy = prec.resolve(None, dtype=dtype, ns_dtype=ns_dtype)
    dtype = prec.dtypes(policy)["compute"]
    with jax.default_device(loader.device or jax.devices()[0]):
        net = (V.check_instance("make_net()", make_net(), CifarNet, "a CifarNet")
               if make_net is not None
               else _model.make_net(r, k_net, conv_impl=conv_impl, dtype=dtype,
                                    param_dtype=dtype))
        state = build_state(r, len(loader.images), k_state, policy, net=net, conv_impl=conv_impl,
                            whiten_images=loader.normalize(loader.images[:r.whiten_images]))
        if run in (-1, "warmup"):
            for inputs, labels in loader:
                state, _ = train_step(state, inputs, labels)
                break
            return net_from_state(state)
        return _fit(state, loader, test_loader, r, run, verbose)


def _fit(state, loader, test_loader, r: Recipe, run, verbose) -> CifarNet:
    """The loader-driven loop (upstream's order of batches and augmentation): train_step per
    batch, the per-epoch table when verbose; a FloatingPointError on the end-of-run verdict
    (airbench_jax.finish.conclude) where the run diverged, as upstream's library raises."""
    total, steps, seconds, error = state.total_steps, 0, 0.0, None
    if verbose:
        if test_loader is None:
            test_loader = CifarLoader(loader.path, train=False, batch_size=EVAL_BATCH_ACCELERATOR,
                                      device=loader.device)
        if run == 0:
            Table().head()
    for epoch in range(math.ceil(total / len(loader))):
        t0 = time.perf_counter()
        for inputs, labels in loader:
            state, loss = train_step(state, inputs, labels)
            steps += 1
            if steps >= total:
                break
        loss = float(loss)                        # waits for the epoch's last step
        seconds += time.perf_counter() - t0
        error = loss_verdict(epoch, [loss])
        if error:
            break
        if verbose:
            net = net_from_state(state)
            used = r.filter_keep or len(labels)
            train_acc = evaluate_arrays(net, inputs, labels)
            Table().row(run=run if epoch == 0 else None, epoch=epoch, train_loss=loss / used,
                        train_acc=train_acc, val_acc=evaluate(net, test_loader, 0),
                        time_seconds=seconds)
        if steps >= total:
            break
    verdict = conclude(state, error=error)
    if verdict.error:
        raise FloatingPointError(f"{r.name}: {verdict.error}; try a lower learning rate")
    net = net_from_state(state)
    if verbose:
        Table().row(final=True, epoch="eval", tta_val_acc=evaluate(net, test_loader, r.tta_level),
                    time_seconds=seconds)
    return net


def evaluate_arrays(net: CifarNet, inputs, labels) -> float:
    """Accuracy on already normalized NHWC inputs (the table's train_acc on the last batch)."""
    g, p, rest = split_net(net)
    return float((infer_arrays(g, p, rest, inputs, 0).argmax(1) == labels).mean())


(train93, train94, train95, train96, train94_muon, train96_faster,
 warmup93, warmup94, warmup95, warmup96) = upstream_api(train)


# ----------------------------------------------------------------------------- checkpoints
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402,F401
