"""Upstream airbench's library API, the part that is the same in both frameworks, written once.

Upstream's train93..train96 (and our train94_muon, train96_faster) are thin functions over one
`train(recipe, loader, *, make_net, run, verbose, **overrides)`; warmup93..96 are those with
run=-1. `upstream_api(train)` builds all ten over a framework's own `train`, with upstream's
signatures, names and docstrings. `check_loader_args` checks upstream CifarLoader's arguments
and settles its defaults, so that each framework's loader keeps only what is its own (device,
arrays, random generator or key).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from . import validate as V
from .validate import OptionError, is_bool, is_int, show
from .recipes import RecipeError, get_recipe

# upstream train9x's argument names -> recipe fields
UPSTREAM_TRAIN_NAMES = {"epochs": "epochs", "label_smoothing": "label_smoothing",
                        "learning_rate": "lr", "bias_scaler": "bias_scaler",
                        "momentum": "momentum", "weight_decay": "weight_decay",
                        "whiten_bias_epochs": "whiten_bias_epochs", "tta_level": "tta_level"}


def upstream_train_overrides(recipe, **given) -> dict:
    """Upstream train9x's hyper-parameter arguments (None: the recipe's value) -> recipe
    overrides, each checked against the recipe; an error names the argument as upstream spells
    it (learning_rate, not the recipe field lr)."""
    out = {}
    for arg, value in given.items():
        if value is None:
            continue
        field = UPSTREAM_TRAIN_NAMES[arg]
        try:
            get_recipe(recipe, **{field: value})
        except RecipeError as exc:
            if field == arg:
                raise
            raise RecipeError(f"{arg}={show(value)} (the recipe's {field}): {exc}") from None
        out[field] = value
    return out


def check_train_args(recipe, loader, test_loader, make_net, seed, overrides: dict, *,
                     loader_type: type, loader_name: str):
    """A framework's train(recipe, loader, ...) arguments, checked before any work: `loader` and
    `test_loader` are `loader_type` (spelled `loader_name` in messages) or None, make_net None or
    callable, seed None or a seed. Returns (the recipe with `overrides`, the seed): as upstream,
    the loader's batch size is the run's (it sets the recipe's batch_size unless overridden)."""
    V.check_instance("train_loader", loader, loader_type, f"{loader_name} or None",
                     optional=True)
    V.check_instance("test_loader", test_loader, loader_type, f"{loader_name} or None",
                     optional=True)
    V.check_callable("make_net", make_net)
    seed = None if seed is None else V.check_seed(seed)
    if loader is not None:
        overrides.setdefault("batch_size", loader.batch_size)
    return get_recipe(recipe, **overrides), seed


def _named(fn, name: str, module: str, doc: str | None):
    """`fn` as the module-level function `module.name` (for help(), repr and pickling)."""
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    fn.__doc__ = doc
    return fn


def upstream_train(train: Callable, recipe: str) -> Callable:
    """Upstream's train9x for `recipe` over a framework's `train`: upstream's parameters in
    upstream's order; the hyper-parameters left as None take the recipe table's value; extra
    keywords go to `train` as they are."""
    def fn(train_loader=None, epochs=None, label_smoothing=None, learning_rate=None,
           bias_scaler=None, momentum=None, weight_decay=None, whiten_bias_epochs=None,
           tta_level=None, make_net=None, run=0, verbose=True, **extra):
        overrides = upstream_train_overrides(
            recipe, epochs=epochs, label_smoothing=label_smoothing, learning_rate=learning_rate,
            bias_scaler=bias_scaler, momentum=momentum, weight_decay=weight_decay,
            whiten_bias_epochs=whiten_bias_epochs, tta_level=tta_level)
        return train(recipe, train_loader, make_net=make_net, run=run, verbose=verbose,
                     **overrides, **extra)
    name = "train" + recipe.replace("airbench", "")
    return _named(fn, name, train.__module__,
                  f"Upstream-compatible {name}: trains recipe {recipe!r} and returns the net. "
                  "Arguments left as None take the recipe table's value; extra keywords are "
                  "train()'s (seed, test_loader, ...) or recipe fields.")


def warmup(trainer: Callable) -> Callable:
    """Upstream's warmup9x: `trainer` (a train9x) with run=-1, a single step."""
    def fn(*args, **kwargs):
        return trainer(*args, run=-1, **kwargs)
    return _named(fn, trainer.__name__.replace("train", "warmup"), trainer.__module__, None)


class UpstreamAPI(NamedTuple):
    """The trainers one framework's library module binds as module-level names, in this order."""
    train93: Callable
    train94: Callable
    train95: Callable
    train96: Callable
    train94_muon: Callable
    train96_faster: Callable
    warmup93: Callable
    warmup94: Callable
    warmup95: Callable
    warmup96: Callable


def upstream_api(train: Callable) -> UpstreamAPI:
    """train93..96, train94_muon, train96_faster and warmup93..96 over a framework's `train`."""
    trainers = {name: upstream_train(train, "airbench" + name[len("train"):])
                for name in UpstreamAPI._fields if name.startswith("train")}
    warmups = {name: warmup(trainers[name.replace("warmup", "train")])
               for name in UpstreamAPI._fields if name.startswith("warmup")}
    return UpstreamAPI(**trainers, **warmups)


# upstream CifarLoader's `aug` keys, and the recipe table's ranges of translate and cutout
AUG_KEYS = ("flip", "translate", "cutout")
AUG_RANGES = {"translate": (0, 16), "cutout": (0, 32)}


def check_aug(aug, name: str = "aug") -> dict:
    """A loader's augmentation dict: keys flip (bool), translate (int pixels 0-16), cutout
    (int square size 0-32), each optional; None is {}."""
    if aug is None:
        return {}
    if not isinstance(aug, dict):
        raise OptionError(f"{name} {show(aug)} is not a dict; give e.g. dict(flip=True, "
                          "translate=2) or None")
    out = {}
    for key, value in aug.items():
        if key not in AUG_KEYS:
            raise OptionError(f"{name} key {key!r} is not an augmentation; valid keys: "
                              f"{', '.join(AUG_KEYS)}")
        if key == "flip":
            if not is_bool(value):
                raise OptionError(f"{name} flip={show(value)} is not True or False")
            out[key] = bool(value)
            continue
        low, high = AUG_RANGES[key]
        if not is_int(value) or not low <= value <= high:
            raise OptionError(f"{name} {key}={show(value)} is not an integer in [{low}, {high}] "
                              "(pixels)")
        out[key] = int(value)
    return out


@dataclass(frozen=True)
class LoaderSettings:
    """Upstream CifarLoader's settings, checked, with upstream's defaults settled: drop_last and
    shuffle follow `train` where None; seed None is drawn when the loader is built."""
    batch_size: int
    aug: dict
    drop_last: bool
    shuffle: bool
    altflip: bool
    seed: int | None

    def settle(self, loader, draw_seed: Callable[[], int]) -> None:
        """Set the settings on `loader` as its attributes, the seed drawn by `draw_seed()` (the
        framework's own randomness) where none was given."""
        loader.aug = self.aug
        loader.batch_size = self.batch_size
        loader.drop_last = self.drop_last
        loader.shuffle = self.shuffle
        loader.altflip = self.altflip
        loader.seed = draw_seed() if self.seed is None else self.seed


def check_loader_args(path, train, batch_size, aug, drop_last, shuffle, altflip, seed, *,
                      flags: tuple = ()) -> LoaderSettings:
    """Check upstream CifarLoader's arguments (and the extra `seed`; `flags`: a framework's own
    (name, value) flags, checked after altflip), each before any data is read, in this order; one
    UsageError naming the argument on the first bad one. Returns the settled settings."""
    V.check_data_dir(path, "path")
    V.check_flag("train", train)
    batch_size = V.check_batch_size(batch_size)
    aug = check_aug(aug)
    for name, flag in (("drop_last", drop_last), ("shuffle", shuffle), ("altflip", altflip),
                       *flags):
        V.check_flag(name, flag)
    seed = None if seed is None else V.check_seed(seed)
    return LoaderSettings(batch_size=batch_size, aug=aug,
                          drop_last=train if drop_last is None else drop_last,
                          shuffle=train if shuffle is None else shuffle, altflip=altflip, seed=seed)
