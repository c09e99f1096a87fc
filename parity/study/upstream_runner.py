"""The upstream arm's process side (parity.study.upstream says what it runs and checks it):
upstream's code imported and driven in a worker process of its own, one per comparison, reused
across runs as upstream's own `__main__` reuses its compiled model.

The worker runs in a temporary working folder holding the comparison's data as
`cifar10/{train,test}.pt` (upstream's loaders read those paths), answers the workload's asks over
a pipe, and reads back each run's printed rows and final TTA logits by wrapping upstream's
`print_training_details` and `infer` (see parity.study.upstream).
"""
from __future__ import annotations

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
from pathlib import Path

import numpy as np

from airbench_common import outcome
from airbench_common.recipes import get_recipe
from airbench_common.workload import Workload, get_workload

from .upstream import (CLASSES, PACKAGE_ARGS, PACKAGE_FUNCTIONS, PACKAGE_VERSION, Arm,
                       UpstreamError, build_record)


def stage_data(folder: Path, train_data, test_data) -> None:
    """cifar10/{train,test}.pt in the layout upstream's loaders read (uint8 NHWC, int64)."""
    import torch
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train_data), ("test", test_data)):
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(images)),
                    "labels": torch.from_numpy(np.asarray(labels).astype(np.int64)),
                    "classes": CLASSES}, folder / "cifar10" / f"{split}.pt")


class UpstreamWorkload(Workload):
    """The upstream arm as a run-only Workload (airbench_common.workload): one worker process,
    started at the warm-up (or the first run) and reused, as upstream's own `__main__` reuses its
    model. What the arm can run was checked when it was made (upstream.check_arm); a recipe
    other than the arm's is refused."""

    name = "upstream"
    run_only = True

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

    def check(self, options):
        options = super().check(options)
        if options.recipe != self.arm.recipe:
            raise UpstreamError(f"the upstream arm was set up for {self.arm.recipe}, not "
                                f"{options.recipe}")
        return options

    def warmup(self, options):
        self.check(options)
        self._start(options.train_data, options.test_data)
        self._ask("warmup")

    def run(self, options, seed):
        self.check(options)
        train_data, test_data = options.train_data, options.test_data
        self._start(train_data, test_data)
        out = self._ask("run", int(seed), self._runs)
        self._runs += 1
        if options.verbose:
            for line in out.pop("_log", "").splitlines():
                options.log(line)
        out.pop("_log", None)
        return build_record(self.arm, seed, out, n_train=len(train_data[0]),
                            n_test=len(test_data[0]), labels=np.asarray(test_data[1]),
                            data=options.data)

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
        failed = _error_line(exc)

        def answer(message):
            return "error", failed
    else:
        def answer(message):
            try:
                return "ok", (driver.warmup() if message[0] == "warmup"
                              else driver.run(*message[1:]))
            except Exception as exc:  # noqa: BLE001
                return "error", _error_line(exc)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        conn.send(answer(message))


def _error_line(exc) -> str:
    """An error as the worker answers it: type and message on one line (400 characters at
    most), and where it was raised."""
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
        compile_clock = get_workload("torch").compile_clock
        c0, t0 = compile_clock(), time.perf_counter()
        self.rows, self.logits = [], {}
        with redirect_stdout(io.StringIO()):
            self._call("warmup")
        return dict(seconds=time.perf_counter() - t0, compile_seconds=compile_clock() - c0)

    def run(self, seed: int, index: int) -> dict:
        compile_clock = get_workload("torch").compile_clock
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
