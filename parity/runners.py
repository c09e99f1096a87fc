"""The compare runners: each framework's side (parity.sides) as a `run_recipe` / `warmup`
callable, imported lazily so that ``--frameworks torch`` works without jax installed (and vice versa).

A *runner* is a callable with run_recipe's signature,
``runner(recipe, seed, *, overrides=None, train_data=None, test_data=None, data_dir=None,
verbose=False, log=print, ...) -> record dict``, optionally with a ``warmup`` attribute
(``warmup(recipe, *, overrides=None, train_data=None, test_data=None)``). compare.py accepts any
mapping framework -> runner, so tests inject fakes.
"""
from __future__ import annotations

from typing import Callable

from .sides import SIDES

FRAMEWORKS = ("jax", "torch", "upstream")   # upstream: parity.upstream, built by compare


class RunnerUnavailable(RuntimeError):
    """The framework's package cannot be imported or lacks run_recipe."""


class Runner:
    """A framework's side (parity.sides) as a runner: its run_recipe and warmup."""

    def __init__(self, framework: str, side=None):
        self.framework = framework
        self.side = SIDES[framework] if side is None else side
        self.module = self.side.package()
        if getattr(self.module, "warmup", None) is None:
            self.warmup = None

    def __call__(self, recipe, seed, **kwargs):
        return self.side.run_recipe(recipe, seed, **kwargs)

    def warmup(self, recipe, *, train_data=None, test_data=None, **kwargs):
        """The side's warmup (airbench_jax's n_train is deliberately not set to the subset size,
        which would make it train a whole epoch; run_recipe reports its own compile time
        separately anyway)."""
        return self.side.warmup(recipe, train_data=train_data, test_data=test_data, **kwargs)

    def __repr__(self):
        return f"Runner({self.framework}: {self.module.__name__}.run_recipe)"


def get_runner(framework: str) -> Callable:
    """The runner of 'jax' or 'torch'; RunnerUnavailable with the reason if it cannot be used."""
    if framework not in SIDES:
        raise RunnerUnavailable(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
    side = SIDES[framework]
    name = side.module
    try:
        module = side.package()
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken half-written package
        raise RunnerUnavailable(f"cannot import {name} ({type(exc).__name__}: {exc}); install "
                                f"the {framework} extra (pip install -e .[{framework}])") from None
    if not callable(getattr(module, "run_recipe", None)):
        raise RunnerUnavailable(f"{name} has no run_recipe(recipe, seed, ...)")
    return Runner(framework, side)


def get_runners(frameworks) -> dict[str, Callable]:
    return {fw: get_runner(fw) for fw in frameworks}
