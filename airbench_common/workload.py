"""The one interface each framework implements: a `Workload` (airbench_jax.workload,
airbench_torch.workload; parity's upstream arm is a run-only one).

Everything outside a framework's package (the shared CLI, parity's study, numerics, lockstep and
benchmarks) reaches the framework only through its workload, so a framework is described once:

* runs: `run(options, seed) -> record`, `run_seeds(options, seeds) -> records`,
  `warmup(options)`, all taking one `RunOptions`; an option a workload does not take is a
  one-line error (`check`), never dropped;
* the machine: `devices()`, and the precision policy a run would use (`precision(options)`);
* the model, for the shared-weight checks: `from_arrays` / `from_init` give a `Trainer` holding
  a train state (upstream-named arrays in and out, forward with gradients, one optimizer step, a
  compiled stepper with its compile time apart, evaluation logits, the dtypes it holds), float64
  and any precision policy included; `whitening_filters` the recipe's first-layer filters from
  images;
* the optimizer's pieces on their own, for the numerics: `newton_schulz`, `muon_step` (one Muon
  update of one filter), `learning_rates` (what each group is given at every step of a run);
* the backend: `conv_impls` / `conv_impl` (the convolution lowerings there are, which run here,
  what 'auto' picks), `set_precision` (a policy's process-wide switches), `backend_info` (what a
  benchmark records about the device).

Inputs are NHWC float32 arrays (normalized images) and integer labels on every side; arrays are
keyed by upstream's PyTorch state-dict names (parity's convert module maps them).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import UsageError
from .validate import OptionError

# framework name -> the module whose WORKLOAD implements it (imported on first use, so that one
# framework works without the other installed)
MODULES = {"jax": "airbench_jax.workload", "torch": "airbench_torch.workload"}


class WorkloadUnavailable(UsageError):
    """The framework's package cannot be imported here."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What a run is given, the same type for every framework. `extra` holds the framework-only
    options by name (JAX: conv_impl, group_size; PyTorch: compile, channels_last, progress)."""
    recipe: Any = "airbench94"            # a name or an airbench_common.recipes.Recipe
    overrides: Mapping = dataclasses.field(default_factory=dict)
    train_data: tuple | None = None       # (uint8 NHWC images, labels); None: from data_dir
    test_data: tuple | None = None
    data_dir: str | None = None
    data: Mapping | None = None           # the record's `data` (identity); None: worked out
    device: str | None = None
    precision: Any = None                 # a policy name or Policy; None: the device's default
    parts: Mapping = dataclasses.field(default_factory=dict)  # dtype, param_dtype, ns_dtype, ...
    eval_every_epoch: bool = True
    predictions: bool = False             # keep per-example TTA predictions (`_predictions`)
    verbose: bool = False
    log: Callable = print
    run_label: Any = None
    extra: Mapping = dataclasses.field(default_factory=dict)

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)


class Trainer:
    """A train state of one framework holding one net, for the shared-weight checks."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The net's weights and buffers by upstream name."""
        raise NotImplementedError

    def ema_arrays(self) -> dict[str, np.ndarray] | None:
        """The lookahead's slow weights by upstream name (None: the recipe has no lookahead)."""
        raise NotImplementedError

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Weights from `arrays`, optimizer state fresh at the current step."""
        raise NotImplementedError

    def forward(self, x, y, train: bool) -> dict:
        """One pass on a copy of the net: {'logits', 'loss' (summed, with the recipe's label
        smoothing), 'grads' (by name, trainables only; {} when not train), 'after' (arrays after
        the pass: BatchNorm statistics move in train mode)}."""
        raise NotImplementedError

    def step(self, x, y) -> float:
        """One optimizer step (schedules, freezing and lookahead included); the loss."""
        raise NotImplementedError

    def stepper(self, x, y) -> tuple[Callable[..., None], float | None]:
        """(a function `run(n=1)` running n steps on x, y and then waiting for the device once,
        as a run's loop does; its compile seconds or None): for timing with compilation kept
        apart."""
        raise NotImplementedError

    def logits(self, x, tta_level: int) -> np.ndarray:
        """Evaluation logits (test-time augmentation `tta_level`)."""
        raise NotImplementedError

    def proxy_arrays(self) -> dict[str, np.ndarray] | None:
        """The proxy net's weights by upstream name (None: the recipe filters no data)."""
        raise NotImplementedError

    def dtypes(self, x) -> dict:
        """The dtypes this train state holds and computes in, as names ('float32', 'bfloat16'):
        {'stored': {upstream name: dtype} of every float tensor, 'activations': the dtype of
        the net's eval-mode output on the NHWC batch `x`, 'newton_schulz': the dtype Muon's
        Newton-Schulz multiplies in (None: no Muon)}."""
        raise NotImplementedError


class Workload:
    """A framework's implementation of the recipes (see the module docstring)."""
    name: str = ""
    package: str = ""                     # the implementation's package (python -m <package>)
    extra_options: tuple[str, ...] = ()   # the RunOptions.extra names it takes
    run_only: bool = False                # True: only run/warmup (parity's upstream arm)
    description: str = ""                 # the command line's (python -m <package>)
    device_aliases: Mapping[str, str] = {}  # device names the CLI maps (JAX: cuda -> gpu)

    # -- the command line (airbench_common.cli)
    def add_cli_options(self, group) -> None:
        """Add the framework-only options to an argparse group."""

    def cli_extra(self, args) -> dict:
        """RunOptions.extra from the parsed command line."""
        return {}

    # -- runs
    def check(self, options: RunOptions) -> RunOptions:
        """`options` checked for this workload: an extra option it does not take is a one-line
        OptionError naming it."""
        unknown = sorted(set(options.extra) - set(self.extra_options))
        if unknown:
            takes = ", ".join(self.extra_options) or "none"
            raise OptionError(f"the {self.name} workload does not take {', '.join(unknown)} "
                              f"(its own options: {takes})")
        return options

    def trainer_option(self, extra: Mapping, name: str, default):
        """The one framework option this workload's trainers take (`name`) from a builder's
        keyword arguments; any other is a one-line OptionError."""
        other = sorted(set(extra) - {name})
        if other:
            raise OptionError(f"the {self.name} workload's trainers take {name}, not "
                              f"{', '.join(other)}")
        return extra.get(name, default)

    def devices(self) -> list[str]:
        raise NotImplementedError

    def precision(self, options: RunOptions):
        """The precision policy a run with `options` uses (a PrecisionError, one line, if it
        cannot run it)."""
        raise NotImplementedError

    def run(self, options: RunOptions, seed: int) -> dict:
        raise NotImplementedError

    def run_seeds(self, options: RunOptions, seeds: Sequence[int]) -> Iterator[dict]:
        """One record per seed, in order (default: one run after another)."""
        for i, seed in enumerate(seeds):
            label = i if options.run_label is None else options.run_label
            yield self.run(options.replace(run_label=label), seed)

    def warmup(self, options: RunOptions) -> None:
        """Compile (or warm up) what a run with `options` calls, at its shapes, so that no timed
        run compiles (airbench_common.timing)."""
        raise NotImplementedError

    # -- the model, for the shared-weight checks
    def from_arrays(self, recipe, n_train: int, arrays: Mapping, *, precision="float32",
                    ns_dtype: str = "float32", step: int = 0, ema_arrays=None,
                    proxy_arrays=None, template: Trainer | None = None,
                    **extra) -> Trainer:
        """A Trainer on the CPU whose net holds `arrays` (upstream names), optimizer state fresh
        with its counters at `step`. `precision`: 'float32'; 'float64' for the float64
        reference (Newton-Schulz then in float64 too, inputs cast to float64); or an airbench_common.precision.Precision, the train state
        built in that policy (weights rounded to its params dtype, `ns_dtype` then the
        policy's). `template`: a Trainer of the same recipe whose compiled step may be reused;
        `proxy_arrays`: the proxy net's weights (data-filtering recipes); `ema_arrays`: the
        lookahead's slow weights (default: `arrays`)."""
        raise NotImplementedError

    def from_init(self, recipe, n_train: int, images, seed: int = 0, *, device=None,
                  precision=None, whiten_all: bool = False, **extra) -> Trainer:
        """A Trainer from the package's own initialisation (seeded by `seed`, whitening from the
        normalized NHWC `images`: their first 64, or all of them with `whiten_all`), on `device`
        (None: the CPU) in the Precision `precision` (None: float32, as from_arrays); its
        inputs are cast to the policy's compute dtype."""
        raise NotImplementedError

    def whitening_filters(self, images, kernel_size: int, eps: float) -> np.ndarray:
        """The whitening layer's filters (OIHW) computed from normalized NHWC `images`."""
        raise NotImplementedError

    # -- the optimizer's pieces on their own
    def newton_schulz(self, g: np.ndarray, steps: int, eps: float, dtype: str) -> np.ndarray:
        """Muon's Newton-Schulz of the 2-D matrix `g`, computed in `dtype` ('float32',
        'bfloat16'), as float32."""
        raise NotImplementedError

    def muon_step(self, param: np.ndarray, grad: np.ndarray, lr: float,
                  momentum: float) -> np.ndarray:
        """One filter (OIHW) after one Muon step with gradient `grad` from fresh momentum."""
        raise NotImplementedError

    def learning_rates(self, recipe, n_train: int) -> dict[str, np.ndarray]:
        """The learning rate each param_groups() group is given at every step of a run on
        n_train images, as this framework's train state applies it."""
        raise NotImplementedError

    # -- the backend
    def conv_impls(self) -> dict[str, str]:
        """The convolution lowerings there are (no 'auto'), each mapped to '' where it runs here,
        else to why not; {}: the framework has no choice of lowering."""
        return {}

    def conv_impl(self, name: str | None = "auto") -> str | None:
        """The lowering `name` resolves to here ('auto': what training uses); None: no choice."""
        return None

    def compile_clock(self) -> float:
        """Seconds this framework has spent compiling in this process so far (read around a
        timed part, as airbench_common.timing's Stopwatch does)."""
        raise NotImplementedError

    def set_precision(self, policy) -> None:
        """A Precision's process-wide switches (TF32, default matmul precision) set in this
        process."""
        raise NotImplementedError

    def backend_info(self, device=None, conv_impl: str | None = None, recipe=None,
                     batch: int | None = None) -> dict:
        """What a benchmark records about where this framework runs: {'device': its name, ...}
        (JAX: 'cpu', 'summary', 'onednn' with its kernels for the recipe's first 3x3 conv at
        `batch` where conv_impl is 'onednn'; PyTorch: 'channels_last', the device's memory
        format policy)."""
        raise NotImplementedError


def get_workload(name: str) -> Workload:
    """The workload of 'jax' or 'torch'; WorkloadUnavailable (one line) if its package cannot be
    imported here."""
    if name not in MODULES:
        raise OptionError(f"unknown framework {name!r}; choose from {', '.join(MODULES)}")
    try:
        module = importlib.import_module(MODULES[name])
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        raise WorkloadUnavailable(f"cannot import {MODULES[name]} ({type(exc).__name__}: {exc}); "
                                  f"install the {name} extra (pip install -e .[{name}])") from None
    return module.WORKLOAD
