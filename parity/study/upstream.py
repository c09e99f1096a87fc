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
import io
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stdout
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


def stage_data(folder: Path, train_data, test_data) -> None:
    """cifar10/{train,test}.pt in the layout upstream's loaders read (uint8 NHWC, int64)."""
    import torch
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train_data), ("test", test_data)):
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(images)),
                    "labels": torch.from_numpy(np.asarray(labels).astype(np.int64)),
                    "classes": CLASSES}, folder / "cifar10" / f"{split}.pt")


class UpstreamRunner:
    """A compare runner (parity.runners) for the upstream arm: one worker process, started at
    the warm-up (or the first run) and reused, as upstream's own `__main__` reuses its model."""

    framework = "upstream"

    def __init__(self, arm: Arm):
        self.arm = arm
        self._proc = self._conn = self._dir = None
        self._runs = 0

    def _start(self, train_data, test_data):
        if self._proc is not None:
            return
        self._dir = Path(tempfile.mkdtemp(prefix="airbench-upstream-"))
        stage_data(self._dir, train_data, test_data)
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, self.arm, str(self._dir)),
                                 daemon=True)
        self._proc.start()
        child.close()

    def _ask(self, *message):
        try:
            self._conn.send(message)
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc else None
            self.close()
            raise RuntimeError(f"upstream's worker process died (exit status {code})") from None
        if status != "ok":
            raise RuntimeError(f"upstream's code failed: {payload}")
        return payload

    def warmup(self, recipe, *, train_data=None, test_data=None, overrides=None, **_ignored):
        self._start(train_data, test_data)
        return self._ask("warmup")

    def __call__(self, recipe, seed, *, train_data=None, test_data=None, overrides=None,
                 data_dir=None, verbose=False, log=print, predictions=True,
                 eval_every_epoch=True):
        if recipe != self.arm.recipe:
            raise UpstreamError(f"the upstream arm was set up for {self.arm.recipe}, not {recipe}")
        self._start(train_data, test_data)
        out = self._ask("run", int(seed), self._runs)
        self._runs += 1
        if verbose:
            for line in out.pop("_log", "").splitlines():
                log(line)
        out.pop("_log", None)
        return build_record(self.arm, seed, out, n_train=len(train_data[0]),
                            n_test=len(test_data[0]), labels=np.asarray(test_data[1]))

    def close(self):
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
        if self._proc is not None and self._proc.pid is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._proc = self._conn = self._dir = None

    def __del__(self):
        self.close()


def build_record(arm: Arm, seed: int, out: dict, *, n_train: int, n_test: int, labels) -> dict:
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
        data=dict(label="arrays staged for upstream", dir=None, n_train=n_train, n_test=n_test),
        error=error)
    rec["wall_seconds_in_worker"] = out["wall_seconds"]
    rec["_predictions"] = preds
    return rec


# ------------------------------------------------------------------------- the worker process
def _worker(conn, arm: Arm, workdir: str) -> None:
    """Import upstream's code and answer ("warmup",) / ("run", seed, index) / ("stop",) on `conn`
    with ("ok", payload) or ("error", one line)."""
    try:
        os.chdir(workdir)
        if arm.prepare:
            module, _, fn = arm.prepare.partition(":")
            getattr(importlib.import_module(module), fn)()
        driver = _Driver(arm)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, every ask
        failed = _one_line(exc)

        def answer(message):
            return "error", failed
    else:
        def answer(message):
            try:
                return "ok", (driver.warmup() if message[0] == "warmup"
                              else driver.run(*message[1:]))
            except Exception as exc:  # noqa: BLE001
                return "error", _one_line(exc)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        conn.send(answer(message))


def _one_line(exc) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400] + where


class _Driver:
    """Upstream's code, imported, with its printed rows and final logits kept."""

    def __init__(self, arm: Arm):
        import torch
        self.torch, self.arm = torch, arm
        self.rows, self.logits = [], {}
        if arm.script is None:
            self.mod = importlib.import_module("airbench")
            self.hooks = importlib.import_module("airbench.utils")
            self.driven_as = f"airbench {PACKAGE_VERSION} {PACKAGE_FUNCTIONS[arm.recipe][0]}"
        else:
            argv, sys.argv = sys.argv, [arm.script]
            try:
                spec = importlib.util.spec_from_file_location("upstream_script", arm.script)
                self.mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(self.mod)
            finally:
                sys.argv = argv
            self.hooks = self.mod
            self.driven_as = f"{Path(arm.script).name} as its __main__"
        self._wrap()
        self.models = self._build_models()

    def _wrap(self):
        printer, infer = self.hooks.print_training_details, self.hooks.infer

        def print_training_details(variables, is_final_entry):
            row = {k: v for k, v in variables.items() if isinstance(v, (int, float, str))
                   and not isinstance(v, bool) and k in ("epoch", "train_loss", "train_acc",
                                                           "val_acc", "tta_val_acc",
                                                           "time_seconds", "total_time_seconds",
                                                           "step", "current_steps")}
            if "total_time_seconds" in row:   # the package's name for the same quantity
                row["time_seconds"] = row.pop("total_time_seconds")
            if "current_steps" in row:        # the package's and airbench96_faster's step count
                row["step"] = row.pop("current_steps")
            self.rows.append(row)
            return printer(variables, is_final_entry)

        def infer_kept(model, loader, tta_level=0):
            logits = infer(model, loader, tta_level)
            self.logits[tta_level] = logits
            return logits

        self.hooks.print_training_details = print_training_details
        self.hooks.infer = infer_kept

    def _build_models(self):
        torch, mod = self.torch, self.mod
        if self.arm.script is None:
            return None
        if self.arm.recipe == "airbench94_muon":    # as its __main__
            model = mod.CifarNet().cuda().to(memory_format=torch.channels_last)
            model.compile(mode="max-autotune")
            return (model,)
        proxy = mod.make_net(mod.hyp["proxy"])
        proxy[0].bias.requires_grad = False
        trainbias = mod.make_net(mod.hyp["net"])
        freezebias = mod.make_net(mod.hyp["net"])
        freezebias[0].bias.requires_grad = False
        return tuple(torch.compile(m, mode="max-autotune") for m in (proxy, trainbias, freezebias))

    def _call(self, run):
        """One run of upstream's code -> its return value; its printed output is kept."""
        mod, arm = self.mod, self.arm
        if arm.script is None:
            train_fn, warm_fn, make_fn, _ = PACKAGE_FUNCTIONS[arm.recipe]
            lib = importlib.import_module(f"airbench.lib_{arm.recipe}")
            hyp = lib.hyp
            kwargs = {PACKAGE_ARGS[k]: v for k, v in arm.args.items() if PACKAGE_ARGS[k]}
            widths = arm.args.get("widths")
            if widths is not None:
                names = list(hyp["net"]["widths"])
                kwargs["make_net"] = lambda: getattr(mod, make_fn)(dict(zip(names, widths)))
            loader = mod.CifarLoader("cifar10", train=True,
                                     batch_size=arm.args.get("batch_size",
                                                             hyp["opt"]["batch_size"]),
                                     aug=hyp["aug"], altflip=True)
            if run == "warmup":     # its own warmup9x: train9x(run=-1), one step
                return getattr(mod, warm_fn)(loader, **kwargs)
            return getattr(mod, train_fn)(loader, run=run, verbose=True, **kwargs)
        if arm.recipe == "airbench94_muon":
            return mod.main(run, *self.models)
        return mod.main(run, mod.hyp, *self.models)

    def warmup(self) -> dict:
        from airbench_torch.device import compile_clock
        c0, t0 = compile_clock(), time.perf_counter()
        self.rows, self.logits = [], {}
        with redirect_stdout(io.StringIO()):
            self._call("warmup")
        return dict(seconds=time.perf_counter() - t0, compile_seconds=compile_clock() - c0)

    def run(self, seed: int, index: int) -> dict:
        from airbench_torch.device import compile_clock
        torch = self.torch
        torch.manual_seed(seed)
        random.seed(seed)
        self.rows, self.logits = [], {}
        c0, t0 = compile_clock(), time.perf_counter()
        buf = io.StringIO()
        with redirect_stdout(buf):
            result = self._call(index)
        wall = time.perf_counter() - t0
        level = get_recipe(self.arm.recipe, **self.arm.args).tta_level
        if level not in self.logits:
            raise RuntimeError(f"upstream's run evaluated no TTA level {level}")
        logits = self.logits[level].float()
        nets = [result] if isinstance(result, torch.nn.Module) else list(self.models or ())
        finite = all(bool(torch.isfinite(v).all()) for net in nets
                     for v in net.state_dict().values() if v.is_floating_point())
        dev = logits.device
        return dict(predictions=outcome.predicted_classes(logits.cpu()),
                    rows=self.rows, wall_seconds=wall, compile_seconds=compile_clock() - c0,
                    nonfinite=not finite, driven_as=self.driven_as, _log=buf.getvalue(),
                    device_type=dev.type, device_index=dev.index,
                    device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None)
