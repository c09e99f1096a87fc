"""Upstream's own code as a third arm of parity.compare (`--frameworks jax,torch,upstream`).

Two kinds of upstream code run here, unmodified:

* the published `airbench` package 0.1.8 (the `upstream` extra), for the recipes it holds:
  `train93/94/95/96` are the library's airbench93/94/95/96. Its `train94` is the paper's
  airbench94 (our `airbench94`); its `train96` declares the 10%-warm-up/decay-to-0 schedule but
  runs the 94 schedule, and its residual block is GELU -> add where the paper script's is
  add -> GELU, so it is *not* our `airbench96` (which follows the paper script; see the recipe's
  notes): comparing it with ours measures that difference as well.
* upstream's single-file scripts, given by path (`--upstream-script PATH`, the user's own
  checkout; nothing of upstream is copied into this repository): `airbench94_muon.py` and
  `airbench96_faster.py` (the file's name says its recipe).

Each runs in its own process (importing it sets process-wide cuDNN flags), in a temporary working
folder holding the comparison's data as `cifar10/{train,test}.pt` (upstream's loaders read those
paths). A script is imported with `sys.argv` set to its path (its top level reads its own source,
as under `python airbench94_muon.py`), and driven as its `__main__` drives it: its model built and
compiled once and reused across runs, its warm-up run first (airbench96_faster's `__main__` has
none; its first run compiles, so here one untimed run is the warm-up). The package's warm-up is
its own `warmup9x`. Before each run `torch.manual_seed(seed)` (and `random.seed(seed)`, which
airbench96_faster draws its data seed from): upstream seeds nothing itself.

What is read back, without touching upstream's code: each run's table rows (upstream's
`print_training_details` is wrapped to keep the values it prints: per-epoch accuracies and
upstream's own `time_seconds`, airbench_common.timing's definition) and the final TTA logits
(upstream's `infer` is wrapped to keep the logits of its last call at the recipe's TTA level:
the per-example predictions come from its own inference function). Compilation inside a run is
read from torch.compile's counters over the whole run (an upper bound of the timed part's).

Upstream's code runs its own recipe: the arm takes only the data (staged as the preset's
subset) and, for the package, its functions' own arguments (`epochs`, `batch_size` through its
loader, `widths` through its `make_net9x`, the optimizer's hyper-parameters). A preset or `--set`
that changes anything else, or anything at all for a script, is a one-line error, as is a machine
without CUDA (upstream calls `.cuda()` and `.half()`). Tests drive the arm on the CPU by giving a
`prepare` hook ("module:function", run in the worker before upstream is imported) that patches
what cannot run on a CPU; it is a test's tool and recorded in every record's flags.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airbench_common import outcome
from airbench_common.errors import UsageError
from airbench_common.recipes import get_recipe

PACKAGE_VERSION = "0.1.8"
# our recipe -> the package's function, and what that function is
PACKAGE_FUNCTIONS = {
    "airbench93": ("train93", "warmup93", "make_net93", "the library's airbench93"),
    "airbench94": ("train94", "warmup94", "make_net94", "the paper's airbench94"),
    "airbench95": ("train95", "warmup95", "make_net95", "the library's airbench95"),
    "airbench96": ("train96", "warmup96", "make_net96",
                   "the library's airbench96: the 94 schedule and GELU -> add, unlike the paper "
                   "script that our airbench96 follows"),
}
SCRIPT_RECIPES = ("airbench94_muon", "airbench96_faster")
# our recipe fields -> the package's train9x arguments (the rest of a preset cannot be passed)
PACKAGE_ARGS = {"epochs": "epochs", "label_smoothing": "label_smoothing", "lr": "learning_rate",
                "bias_scaler": "bias_scaler", "momentum": "momentum",
                "weight_decay": "weight_decay", "whiten_bias_epochs": "whiten_bias_epochs",
                "tta_level": "tta_level", "batch_size": None, "widths": None}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


class UpstreamError(UsageError):
    """The upstream arm cannot run as asked (one line: what and how to fix it)."""


@dataclass(frozen=True)
class Arm:
    """What the upstream arm runs: the package's function or a script, for one recipe."""
    recipe: str
    script: str | None = None            # None: the airbench package
    prepare: str | None = None           # "module:function", a test's CPU patches
    args: dict = field(default_factory=dict)   # the package function's arguments from overrides

    @property
    def source(self) -> dict:
        if self.script is None:
            return dict(kind="package", airbench=PACKAGE_VERSION,
                        function=PACKAGE_FUNCTIONS[self.recipe][0])
        data = Path(self.script).read_bytes()
        return dict(kind="script", path=str(self.script),
                    sha256=hashlib.sha256(data).hexdigest())


def changed_fields(recipe: str, overrides: dict, n_train: int | None = None) -> dict:
    """The overrides that change what `recipe` runs: not those equal to its own values, nor the
    proxy net's for a recipe without one, nor whiten_images capped at a subset's `n_train`
    (upstream whitens from `images[:5000]`, which is that many on the subset too)."""
    base, resolved = get_recipe(recipe), get_recipe(recipe, **overrides)

    def same(k):
        if k == "whiten_images" and n_train is not None:
            return resolved.whiten_images == min(base.whiten_images, n_train)
        return getattr(resolved, k) == getattr(base, k) or (
            k.startswith("proxy_") and not base.filter_keep)
    return {k: getattr(resolved, k) for k in overrides if not same(k)}


def check_arm(recipe: str, overrides: dict, script=None, prepare: str | None = None,
              n_train: int | None = None) -> Arm:
    """The arm for `recipe` under the comparison's effective `overrides` (on the first `n_train`
    training images; None: all), or UpstreamError."""
    overrides = changed_fields(recipe, overrides, n_train)
    if script is not None:
        path = Path(script).expanduser()
        if not path.is_file():
            raise UpstreamError(f"--upstream-script {script}: no such file; give the path of "
                                "upstream's airbench94_muon.py or airbench96_faster.py in your "
                                "checkout of KellerJordan/cifar10-airbench")
        if path.stem not in SCRIPT_RECIPES:
            raise UpstreamError(f"--upstream-script {script}: not one of upstream's scripts "
                                f"({', '.join(s + '.py' for s in SCRIPT_RECIPES)}); the file "
                                "name says which recipe it is")
        if path.stem != recipe:
            raise UpstreamError(f"--upstream-script {path.name} runs recipe {path.stem}, but "
                                f"the comparison's recipe is {recipe}; use --recipe {path.stem}")
        if overrides:
            raise UpstreamError(f"upstream's {path.name} runs its own recipe, but the preset or "
                                f"--set changes {', '.join(sorted(overrides))}; use --preset "
                                "full (the data may be a subset, nothing else)")
        arm = Arm(recipe, str(path.resolve()), prepare)
    else:
        if recipe not in PACKAGE_FUNCTIONS:
            raise UpstreamError(f"the airbench {PACKAGE_VERSION} package has no {recipe}; give "
                                f"--upstream-script PATH/{recipe}.py" if recipe in SCRIPT_RECIPES
                                else f"upstream has no {recipe}")
        bad = sorted(k for k in overrides if k not in PACKAGE_ARGS)
        if bad:
            raise UpstreamError(f"airbench {PACKAGE_VERSION}'s {PACKAGE_FUNCTIONS[recipe][0]} "
                                f"cannot take {', '.join(bad)} (a preset or --set changes them); "
                                f"it takes {', '.join(sorted(PACKAGE_ARGS))}")
        if importlib.util.find_spec("airbench") is None:
            raise UpstreamError(f"the airbench {PACKAGE_VERSION} package is not installed: pip "
                                "install -e '.[upstream]' (or a wheel built with pip wheel "
                                f"--no-deps airbench=={PACKAGE_VERSION})")
        arm = Arm(recipe, None, prepare, dict(overrides))
    if prepare is None:
        import torch
        if not torch.cuda.is_available():
            raise UpstreamError("upstream's code needs CUDA (it calls .cuda() and .half()) and "
                                "this machine has none; drop 'upstream' from --frameworks")
    return arm


def build_record(arm: Arm, seed: int, out: dict, *, n_train: int, n_test: int, labels,
                 data: dict | None = None) -> dict:
    """A run record in the one contract (airbench_common.records.RUN_FIELDS), framework
    'upstream', from what the worker read back."""
    from airbench_common.env import device_fields, package_versions
    from airbench_common.records import run_record
    r = get_recipe(arm.recipe, **{k: v for k, v in arm.args.items()})
    preds = np.asarray(out["predictions"], dtype=np.uint8)
    acc_tta = float((preds == labels).mean())
    error = outcome.collapse_reason(preds)
    if out.get("nonfinite"):
        error = "non-finite weights after training"
    device, device_name = device_fields(out["device_type"], out["device_index"],
                                        out["device_name"])
    rows = out["rows"]
    final = rows[-1] if rows and rows[-1].get("epoch") == "eval" else {}
    epochs = [row for row in rows if row is not final]
    time_s = final.get("time_seconds")
    train_s = epochs[-1].get("time_seconds") if epochs else None
    rec = run_record(
        recipe=arm.recipe, overrides=dict(arm.args), seed=int(seed), framework="upstream",
        versions=dict(package_versions("torch"), upstream=arm.source),
        device=device, device_name=device_name, dtype="float16 (upstream's own)",
        flags=dict(upstream=arm.source, prepare=arm.prepare, driven_as=out["driven_as"]),
        acc=epochs[-1].get("val_acc") if epochs else None, acc_tta=acc_tta,
        tta_level=r.tta_level, time_seconds=time_s, train_seconds=train_s,
        eval_seconds=None if time_s is None or train_s is None else time_s - train_s,
        setup_seconds=None, compile_seconds=None,
        timed_compile_seconds=out["compile_seconds"], eval_compile_seconds=None,
        steps=int(final.get("step", epochs[-1].get("step", 0) if epochs else 0)), status=outcome.DIVERGED if error else outcome.OK,
        recipe_params=r.to_dict(), precision=dict(policy="upstream's own"), ns_dtype=None,
        per_epoch=[dict(epoch=row.get("epoch"), train_loss=row.get("train_loss"),
                        train_acc=row.get("train_acc"), val_acc=row.get("val_acc"),
                        seconds=None) for row in epochs],
        data=dict(data) if data is not None else dict(
            label="arrays staged for upstream", dir=None, n_train=n_train, n_test=n_test),
        error=error)
    rec["wall_seconds_in_worker"] = out["wall_seconds"]
    rec["_predictions"] = preds
    return rec
