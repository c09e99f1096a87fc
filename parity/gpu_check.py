"""One command that validates a GPU machine end to end and writes its evidence.

    python -m parity.gpu_check --out docs/results/gpu/<device>/ --subset cifar10-subset.npz
    python -m parity.gpu_check --make-subset cifar10-subset.npz --train 15000 --test 2000
    python -m parity.gpu_check --out docs/results/gpu/<device>/ --subset ... --stages runs
    python -m parity.gpu_check --dry-run --out /tmp/gpu-dry    # CPU, tiny, every stage

Stages, in order, each written to OUT as soon as it ends (`summary.json` is rewritten after every
stage, run records are appended one by one), so a run stopped by its budget, by SIGTERM or by
Ctrl-C keeps everything measured before:

1. environment (`environment.json`): GPU name, compute capability and memory, driver and CUDA /
   cuDNN versions, `nvidia-smi` if present, Python and library versions, JAX's devices, the XLA
   flags and environment variables this command set (and why) or found set by the user, the
   precision policy;
2. numerics (`numerics.json`, `numerics.txt`): `parity.numerics` for airbench94_muon at full
   width, float32 with TF32 off (the numerics setting): JAX on the GPU, PyTorch on the CPU
   (parity.numerics' PyTorch side is CPU-only);
3. throughput (`throughput.json`, `parity.bench`'s result): full train steps (forward,
   backward, optimizer) of both frameworks on the GPU at batch 2000 on synthetic images, in the
   default precision policy (`upstream` on GPU), frameworks alternating rep by rep, each timed
   between device synchronisations; JAX's compile time and PyTorch's first-call time reported
   apart;
4. runs (`runs.jsonl`): full airbench94_muon runs, JAX and PyTorch alternating (seed k on both),
   on the training subset, evaluated on the test subset, until the budget would be exceeded.
   Another invocation on the same OUT with `--stages runs` adds pairs with the next seeds
   (one command may run only ~8 minutes on the GPU machines); summary.json keeps the stages it
   did not re-run;
5. studies (only with --study; `compare-<recipe>/`): `parity.compare` studies on all the data,
   sharing the budget.

The stages live in parity.gpu (environment, subset, stages, studies); this module runs them.

Data: at most 64 MiB can travel with the code, so `--make-subset` writes the first N training and
M test images of $AIRBENCH_DATA (or --data-dir) into one compressed npz (keys train_images,
train_labels, test_images, test_labels, source); its sha256, size and source label are recorded
in every result. The timing stage uses synthetic images.

Only Python 3.12, torch, jax/jaxlib (+ CUDA plugin), flax (and what flax itself imports, rich
among them), optax, numpy, scipy, matplotlib and tqdm are assumed: nothing on this path needs
hypothesis or filelock (records are appended without the file lock when filelock is missing:
this command is the only writer of OUT).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from airbench_common import interrupts

from .gpu.environment import environment, setup_environment
from .gpu.stages import RECIPE, numerics, runs, throughput, write_json
from .gpu.studies import parse_study, studies
from .gpu.subset import load_subset, make_subset, synthetic_data


class BudgetExceeded(BaseException):
    """The time budget (or SIGTERM) ended the check; what is measured is already written.

    A BaseException, like KeyboardInterrupt: the alarm can fire anywhere inside a stage, and an
    `except Exception` there (a numerics row that records its error, JAX re-raising with context)
    must not turn the end of the budget into that stage's failure and run the next stages."""


STAGES = ("environment", "numerics", "throughput", "runs", "studies")


def _budget_exceeded(signum) -> BudgetExceeded:
    return BudgetExceeded("SIGTERM" if signum == signal.SIGTERM else "time budget")


def check(out: Path, *, budget_minutes: float, subset=None, dry_run: bool = False,
          stages=("environment", "numerics", "throughput", "runs"), max_pairs: int = 1000,
          log=print, study_specs=(), data_dir=None, upstream_dir=None, commit=None) -> dict:
    """Run `stages` in order into `out` within the budget (see the module docstring); returns
    the summary that summary.json holds."""
    start = time.time()
    deadline = start + budget_minutes * 60
    env_set = setup_environment()
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(command=sys.argv, dry_run=dry_run, budget_minutes=budget_minutes,
                   started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                   recipe=RECIPE, stages={})
    try:  # an earlier invocation's stages are kept (e.g. a second command with --stages runs)
        earlier = json.loads((out / "summary.json").read_text())
        summary["earlier"] = {k: earlier[k] for k in ("command", "started", "status", "code")
                              if k in earlier}
        summary["stages"] = {k: v for k, v in earlier.get("stages", {}).items()
                             if k not in stages}
    except (OSError, ValueError, AttributeError):
        pass
    from airbench_common.env import code_version
    summary["code"] = code_version()
    summary["commit"] = commit   # given from where the tree was sent: its git data may be stale
    if subset is not None:
        ident, train, test = load_subset(subset)
    elif dry_run:
        ident, train, test = synthetic_data(128, 64)
    else:
        from airbench_common.data import dataset_label, load_cifar10, resolve_data_dir
        train, test = load_cifar10("train"), load_cifar10("test")
        ident = dict(source=dataset_label(), dir=str(resolve_data_dir()), n_train=len(train[0]),
                     n_test=len(test[0]), sha256=None)
    summary["data"] = ident
    data_tmp = None
    env_data = os.environ.get("AIRBENCH_DATA")  # restored at the end (check() is a library call too)
    if subset is not None:  # numerics reads $AIRBENCH_DATA: point it at the subset's images
        data_tmp = tempfile.TemporaryDirectory(prefix="gpu_check_data_")
        np.savez(Path(data_tmp.name) / "train.npz", images=train[0], labels=train[1])
        np.savez(Path(data_tmp.name) / "test.npz", images=test[0], labels=test[1])
        (Path(data_tmp.name) / "SOURCE.md").write_text(ident["source"] + "\n")
        os.environ["AIRBENCH_DATA"] = data_tmp.name
    elif dry_run:
        os.environ["AIRBENCH_DATA"] = str(out / "no-dataset")  # numerics: synthetic images
    study_data = data_dir
    if "studies" in stages and data_dir is None and dry_run:   # smoke's 2000/1000 images
        data_tmp2 = tempfile.TemporaryDirectory(prefix="gpu_check_studies_")
        study_data = data_tmp2.name
        for split, n in (("train", 2000), ("test", 1000)):
            x, y = synthetic_data(n, 1)[1]
            np.savez(Path(study_data) / f"{split}.npz", images=x, labels=y)
    overrides = {}
    if dry_run:  # tiny: every stage in seconds on a CPU
        overrides = dict(widths=(4, 8, 8), batch_size=64, epochs=1.0)
    summary["status"] = "running"

    def stage(name):
        if name == "environment":
            info = environment(env_set)
            write_json(out / "environment.json", info)
            return dict(status="ok", gpu=info.get("gpu"), jax=info["jax"])
        if name == "numerics":
            return numerics(out, dry_run)
        if name == "throughput":
            return throughput(out, 32 if dry_run else 2000, 2 if dry_run else 5,
                              1 if dry_run else 10, 1 / 16 if dry_run else 1.0)
        if name == "runs":
            return runs(out, deadline, train, test, ident, overrides, max_pairs, log)
        if name == "studies":
            return studies(out, deadline, study_specs, data_dir=data_dir or study_data,
                           upstream_dir=upstream_dir, commit=commit, dry_run=dry_run, log=log)
        raise ValueError(f"unknown stage {name!r}")

    def stopped(t, error=None):
        res = dict(status="stopped (budget, SIGTERM or Ctrl-C)", seconds=round(time.time() - t, 1))
        return res if error is None else dict(res, error=error[:2000])

    def save():
        summary["seconds"] = round(time.time() - start, 1)
        write_json(out / "summary.json", summary)

    save()
    # library code in a stage may catch the signal's exception: the handler remembers the signal
    # (airbench_common.interrupts) and the check stops after that stage at the latest
    with interrupts.remembered((signal.SIGTERM, signal.SIGALRM), _budget_exceeded) as stopper:
        signal.alarm(max(1, int(deadline - time.time())))
        try:
            for name in stages:
                t = time.time()
                log(f"[gpu_check] {name} ...")
                try:
                    res = stage(name)
                except (BudgetExceeded, KeyboardInterrupt):
                    summary["stages"][name] = stopped(t)
                    raise
                except Exception as exc:  # noqa: BLE001 - one stage's failure is a result; go on
                    if stopper.pending() or interrupts.interrupted(exc):   # wrapped by a library
                        summary["stages"][name] = stopped(t, f"{type(exc).__name__}: {exc}")
                        interrupts.checkpoint()
                        raise KeyboardInterrupt from exc
                    res = dict(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])
                try:
                    interrupts.checkpoint()   # swallowed inside the stage: its result untrusted
                except BaseException:
                    summary["stages"][name] = stopped(t, "the signal's exception was caught "
                                                      "inside the stage, which then went on")
                    raise
                res["seconds"] = round(time.time() - t, 1)
                summary["stages"][name] = res
                save()
                log(f"[gpu_check] {name}: {res['status']} ({res['seconds']} s)")
            summary["status"] = ("ok" if all(summary["stages"][s].get("status") == "ok"
                                             for s in stages) else "failed")
        except (BudgetExceeded, KeyboardInterrupt) as exc:
            why = str(exc) or "Ctrl-C"
            summary["status"] = f"stopped: {why} (everything before is written)"
        finally:
            signal.alarm(0)
            save()
            if data_tmp is not None:
                data_tmp.cleanup()
            if env_data is None:
                os.environ.pop("AIRBENCH_DATA", None)
            else:
                os.environ["AIRBENCH_DATA"] = env_data
    return summary


def main(argv=None) -> int:
    from airbench_common.errors import cli_main

    @cli_main
    def _main(argv=None) -> int:
        from airbench_common.cli import Parser
        ap = Parser(prog="python -m parity.gpu_check", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
        ap.add_argument("--out", default=None, help="result folder, e.g. docs/results/gpu/h100/")
        ap.add_argument("--subset", default=None, help="data subset made by --make-subset")
        ap.add_argument("--budget-minutes", type=float, default=7.5,
                        help="stop cleanly after this many minutes (default 7.5)")
        ap.add_argument("--dry-run", action="store_true",
                        help="CPU-sized, every stage and the same files: numerics at width "
                             "1/16 (forward, gradient and TTA rows), timing at batch 32, tiny "
                             "run pairs on 128 synthetic images")
        ap.add_argument("--stages", default=None,
                        help="comma-separated stages to run (default: environment, numerics, "
                             "throughput, runs; with --study: environment, studies)")
        ap.add_argument("--max-pairs", type=int, default=None,
                        help="most run pairs of the runs stage (default 1000; 2 with --dry-run)")
        ap.add_argument("--study", action="append", default=[], metavar="RECIPE:ARMS:RUNS",
                        help="the studies stage: a parity.compare study on all the data "
                             "(--data-dir, e.g. the carried jpeg/ folder's parent), e.g. "
                             "airbench94_muon:jax,torch,upstream:10; repeatable, run in order, "
                             "sharing the budget")
        ap.add_argument("--upstream-dir", default=None,
                        help="studies: the folder holding upstream's scripts "
                             "(airbench94_muon.py, airbench96_faster.py)")
        ap.add_argument("--commit", default=None,
                        help="the commit of the tree that runs (recorded; the copy's git data "
                             "may be stale)")
        ap.add_argument("--make-subset", default=None, metavar="PATH",
                        help="write the data subset to PATH and exit")
        ap.add_argument("--train", type=int, default=15000, help="--make-subset: training images")
        ap.add_argument("--test", type=int, default=2000, help="--make-subset: test images")
        ap.add_argument("--data-dir", default=None,
                        help="--make-subset and the studies: CIFAR-10 folder")
        a = ap.parse_args(argv)
        from airbench_common.errors import UsageError
        if a.make_subset:
            info = make_subset(a.make_subset, a.train, a.test, a.data_dir)
            print(json.dumps(info, indent=1))
            return 0
        if not a.out:
            raise UsageError("--out DIR is required (e.g. docs/results/gpu/h100/)")
        if not a.budget_minutes > 0:
            raise UsageError(f"--budget-minutes {a.budget_minutes} must be > 0")
        if a.max_pairs is None:   # a dry run stops after a few pairs by itself
            a.max_pairs = 2 if a.dry_run else 1000
        if a.max_pairs < 1:
            raise UsageError(f"--max-pairs {a.max_pairs} must be at least 1 (run pairs)")
        specs = [parse_study(t) for t in a.study]
        if a.stages is None:
            a.stages = ("environment,studies" if specs
                        else "environment,numerics,throughput,runs")
        from airbench_common.validate import check_out_dir
        check_out_dir(a.out)  # a file, a read-only place: one line now, not a traceback later
        stages = tuple(s for s in a.stages.split(",") if s)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise UsageError(f"--stages {bad} unknown; accepted: {', '.join(STAGES)}")
        if "studies" in stages and not specs:
            raise UsageError("the studies stage needs at least one --study RECIPE:ARMS:RUNS")
        if specs and not a.dry_run and a.data_dir is None:
            raise UsageError("--study needs --data-dir (all the data: e.g. the folder holding "
                             "the carried jpeg/)")
        if a.upstream_dir is not None and not Path(a.upstream_dir).is_dir():
            raise UsageError(f"--upstream-dir {a.upstream_dir}: not a folder")
        s = check(Path(a.out), budget_minutes=a.budget_minutes, subset=a.subset,
                  dry_run=a.dry_run, stages=stages, max_pairs=a.max_pairs,
                  log=lambda m: print(m, file=sys.stderr, flush=True), study_specs=specs,
                  data_dir=a.data_dir, upstream_dir=a.upstream_dir, commit=a.commit)
        print(json.dumps({k: s[k] for k in ("status", "seconds", "stages")}, indent=1,
                         default=str))
        return 0 if s["status"] == "ok" else 1

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
