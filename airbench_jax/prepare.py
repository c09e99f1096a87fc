"""What a run is, resolved once where it starts (one seed in airbench_jax.run, a vmapped group in
airbench_jax.seeds): the device (`resolve_device`), the recipe, data, precision policy,
convolution implementation and data identity (`prepare_run` -> `Run`), each seed's keys
(`seed_keys`) and the training set as the epochs read it (`prepare_data`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from airbench_common import records
from airbench_common import validate as V
from airbench_common.data import DatasetError, load_cifar10
from airbench_common.precision import Precision
from airbench_common.recipes import Recipe, get_recipe

from . import augment as aug
from . import precision as prec
from .conv import resolve_impl


def available_devices() -> list[str]:
    """The device names accepted here: each platform JAX has, and platform:index."""
    names = []
    for platform in ("cpu", "gpu", "tpu"):
        try:
            found = jax.devices(platform)
        except RuntimeError:
            continue
        names += [platform] + [f"{platform}:{i}" for i in range(len(found))]
    return names


def resolve_device(device):
    """None: JAX's default device; a jax.Device as is; a platform name ('cpu', 'gpu', 'cuda',
    'tpu') or 'platform:index' picks from jax.devices(platform); a device that is not there is a
    DeviceError listing those that are."""
    if device is None or isinstance(device, jax.Device):
        return device
    platform, _, index = V.check_device(device, available_devices(),
                                        {"cuda": "gpu"}).partition(":")
    return jax.devices(platform)[int(index or 0)]


class Run(NamedTuple):
    """What a run (one seed, or a vmapped group) is, resolved once where it starts: the recipe,
    its overrides, the host (images, labels) of both splits, the device, the precision policy,
    the resolved convolution implementation and its records' `data` field."""
    recipe: Recipe
    overrides: dict
    train: tuple
    test: tuple
    device: Any
    policy: Precision
    impl: str
    data: dict


def prepare_run(recipe, overrides=None, data_dir=None, train_data=None, test_data=None,
                device=None, *, precision=None, dtype=None, param_dtype=None, ns_dtype=None,
                tf32=None, conv_impl: str = "auto", data: dict | None = None) -> Run:
    """A run's inputs, checked: the recipe with `overrides`, the host arrays (loaded from
    `data_dir` when not given), the device, the precision policy (a name or Precision, parts
    overridden by dtype, param_dtype, ns_dtype, tf32) and `data` (None: what
    airbench_common.records.data_identity says of them)."""
    overrides = dict(overrides or {})
    r = get_recipe(recipe, **overrides)
    V.check_data_dir(data_dir, "data_dir")
    # arrays given get the checks a dataset file gets (airbench_common.data.check_arrays)
    tr_x, tr_y = (load_cifar10("train", data_dir) if train_data is None
                  else V.check_data_pair(train_data, "train_data"))
    te_x, te_y = (load_cifar10("test", data_dir) if test_data is None
                  else V.check_data_pair(test_data, "test_data"))
    if len(te_x) < 1:
        raise DatasetError("the test set has 0 images; give at least one test image")
    r.total_steps(len(tr_x))  # a RecipeError for fewer training images than a batch
    dev = resolve_device(device) or jax.devices()[0]
    pol = prec.resolve(precision, device=dev, dtype=dtype, param_dtype=param_dtype,
                       ns_dtype=ns_dtype, tf32=tf32)
    if data is None:
        data = records.data_identity(data_dir, len(tr_x), len(te_x),
                                     arrays=train_data is not None)
    return Run(r, overrides, (tr_x, tr_y), (te_x, te_y), dev, pol, resolve_impl(conv_impl), data)


def prepare_data(recipe: Recipe, train_images, dtype=jnp.float32, key=None):
    """Normalize, pre-flip a random half (altflip) and reflect-pad by translate, on device."""
    x = aug.normalize(train_images, dtype)
    if recipe.flip and recipe.altflip:
        x = aug.random_flip(key, x)
    return aug.pad_reflect(x, recipe.translate)


def seed_keys(seed: int):
    """(init, pre-flip, epochs) keys of the run of `seed` (a seed of a vmapped group draws the
    same: airbench_jax.seeds)."""
    return jax.random.split(jax.random.PRNGKey(seed), 3)
