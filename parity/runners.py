"""Adapters to the two implementations' `run_recipe` / `warmup`, imported lazily so that
``--frameworks torch`` works without jax installed (and vice versa).

A *runner* is a callable with run_recipe's signature,
``runner(recipe, seed, *, overrides=None, train_data=None, test_data=None, data_dir=None,
verbose=False, log=print, ...) -> record dict``, optionally with a ``warmup`` attribute
(``warmup(recipe, *, overrides=None, train_data=None, test_data=None)``). compare.py accepts any
mapping framework -> runner, so tests inject fakes.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

FRAMEWORKS = ("jax", "torch")
_MODULES = {"jax": "airbench_jax", "torch": "airbench_torch"}


class RunnerUnavailable(RuntimeError):
    """The framework's package cannot be imported or lacks run_recipe."""


class Runner:
    """Wraps a module's run_recipe/warmup."""

    def __init__(self, framework: str, module):
        self.framework = framework
        self.module = module
        self._run = module.run_recipe
        self._warmup = getattr(module, "warmup", None)
        if self._warmup is None:
            self.warmup = None

    def __call__(self, recipe, seed, **kwargs):
        return self._run(recipe, seed, **_accepted(self._run, kwargs))

    def warmup(self, recipe, *, train_data=None, test_data=None, **kwargs):
        """The module's warmup, given only the arguments its signature takes (airbench_jax's
        warmup takes no data: it compiles and runs a couple of steps on random data; its
        n_train is deliberately not set to the subset size, which would make it train a whole
        epoch; run_recipe reports its own compile time separately anyway)."""
        kwargs = dict(kwargs, train_data=train_data, test_data=test_data)
        return self._warmup(recipe, **_accepted(self._warmup, kwargs))

    def __repr__(self):
        return f"Runner({self.framework}: {self.module.__name__}.run_recipe)"


def _accepted(fn, kwargs: dict) -> dict:
    """kwargs restricted to fn's parameters (all of them if fn takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def get_runner(framework: str) -> Callable:
    """The runner of 'jax' or 'torch'; RunnerUnavailable with the reason if it cannot be used."""
    if framework not in _MODULES:
        raise RunnerUnavailable(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
    name = _MODULES[framework]
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken half-written package
        raise RunnerUnavailable(f"cannot import {name} ({type(exc).__name__}: {exc}); install "
                                f"the {framework} extra (pip install -e .[{framework}])") from None
    if not callable(getattr(module, "run_recipe", None)):
        raise RunnerUnavailable(f"{name} has no run_recipe(recipe, seed, ...)")
    return Runner(framework, module)


def get_runners(frameworks) -> dict[str, Callable]:
    return {fw: get_runner(fw) for fw in frameworks}
