"""Run both frameworks, a pair of runs at a time, until the data decide whether they agree.

    python -m parity.compare                     # airbench94_muon, preset for this machine
    python -m parity.compare [--recipe R] [--preset cpu|smoke|full] [--runs N] [--margin M]
        [--frameworks jax,torch] [--out DIR] [--resume] [--data-dir D] [--set key=value ...]
    python -m parity.compare --report DIR        # rebuild DIR's report from DIR/runs.jsonl

The question, fixed before any run (by the preset; --margin and --runs override it): is the
mean TTA accuracy on the preset's test set (all 10,000 images at `cpu` and `full`) the same in
both frameworks within +/- margin points? Runs are added in pairs (jax seed k, then torch seed
k, the same seeds on both sides, so slow drifts of the machine hit both alike) and after every
pair the group-sequential plan of parity.study.plan looks at the data: it stops at "equivalent",
"different" (a difference beyond the margin, or diverged-run rates that differ by Fisher's exact
test), or at the cap (N runs per side, or the preset's wall-time cap), which ends
"inconclusive" with what it would take.

Each framework gets one warm-up (compilation of every function at the shapes of the runs) before
the first timed run. Every finished run's per-example test predictions are written to
DIR/predictions/<framework>-seed<k>.npy (atomically, uint8 per test image) and then its record is
appended to DIR/runs.jsonl (one atomic line), so a kill loses no finished run (parity.study.store).
Re-running the same command (or --resume) continues; every setting that changes results (recipe,
preset, overrides, margin, data identity: sha256 of the train subset and of the test images and
labels) must match DIR/config.json, else exit 2 naming the field. Records not written by this
comparison (another configuration, or by another tool) are left out, with a count. One compare
at a time may write a DIR (a lock; a second one exits 2 naming the holder's pid).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Mapping

from airbench_common.cli import Parser
from airbench_common.errors import cli_main
from airbench_common.recipes import parse_overrides, recipe_names
from airbench_common.validate import check_out_dir
from airbench_common.workload import Workload

from . import config as C
from . import presets
from .errors import CompareError, one_line
from .local import run_compare
from .report import write_report
from .store import RunFolder
from .runs import workloads
from .upstream import check_arm


def build_parser() -> argparse.ArgumentParser:
    p = Parser(  # argparse's errors as one line (a UsageError), as every other bad value
        prog="python -m parity.compare",
        description="Run the JAX port and the PyTorch reference in pairs of seeds until a "
                    "group-sequential equivalence test (TOST, O'Brien-Fleming alpha spending) "
                    "decides whether their mean TTA accuracies agree within the margin.")
    p.add_argument("--recipe", choices=recipe_names(),
                   help=f"recipe to run (default {C.DEFAULT_RECIPE})")
    p.add_argument("--runs", help="most runs (seeds 0..N-1) per framework, the plan's N; "
                   "default: the preset's (" + ", ".join(
                       f"{k} {v.max_runs}" for k, v in presets.PRESETS.items()) + ")")
    p.add_argument("--preset", choices=presets.preset_names(),
                   help="scaling of the recipe (default: full with a GPU, else cpu)")
    p.add_argument("--frameworks", default=None,
                   help="comma-separated, default jax,torch; 'upstream' adds upstream's own code "
                        "as a third arm (the airbench package, or --upstream-script; needs CUDA)")
    p.add_argument("--upstream-script", metavar="PATH",
                   help="the upstream arm runs this script of your checkout of upstream's "
                        "repository (airbench94_muon.py, airbench96_faster.py) instead of the "
                        "airbench package")
    p.add_argument("--out", help="output folder (default results/compare-<recipe>-<preset>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out (settings not given are read from its "
                        "config.json); re-running with the same settings resumes as well")
    p.add_argument("--margin", default=None,
                   help="equivalence margin in accuracy points (default: the preset's, "
                        + ", ".join(f"{k} {v.margin}" for k, v in presets.PRESETS.items()) + ")")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default $AIRBENCH_DATA or ~/.cache)")
    p.add_argument("--wall-minutes", metavar="M",
                   help="wall-time cap of the study in minutes (default: the preset's); the look "
                        "at the cap is the last, and the report says the budget ended it")
    p.add_argument("--report", metavar="DIR",
                   help="only rebuild DIR's report from DIR/runs.jsonl (+ config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe hyper-parameter (on top of the preset), repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--verbose", action="store_true", help="the runs' logs and tracebacks")
    p.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="where the runs execute: local (this process, pairs in order; default) "
                        "or dask (each run a task on a Dask cluster, see --scheduler)")
    p.add_argument("--scheduler", metavar="ADDR|local:N",
                   help="with --engine dask: a scheduler address (tcp://host:8786) or local:N "
                        "(N worker processes on this machine, started and stopped here)")
    p.add_argument("--shard", metavar="i/N",
                   help="run only shard i of N of the runs (seeds below --runs, both "
                        "frameworks), for plain job arrays writing one --out folder")
    p.add_argument("--jax-vmap", default="1", metavar="K",
                   help="train K JAX seeds at a time as one vmapped program (default 1: one "
                        "after another, the per-run timing comparable with PyTorch's)")
    return p


def _int_arg(text, name):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise CompareError(f"{name} {text!r} is not a whole number") from None


def main(argv=None, workloads: Mapping[str, Workload] | None = None) -> int:
    """CLI entry point; `workloads` (framework -> Workload) replaces the real ones in tests. Bad
    input (UsageError) is one line on stderr and exit status 2."""
    return cli_main(lambda a: _main(a, workloads))(argv)


def _default_out(recipe: str, preset: str) -> str:
    return f"results/compare-{recipe}-{preset}"


def _resumed(args) -> dict | None:
    """--resume: the configuration in --out (the default folder of --recipe/--preset if none);
    every setting not given is read from it. None without --resume."""
    if not args.resume:
        return None
    if args.out is None:
        args.out = _default_out(args.recipe or C.DEFAULT_RECIPE,
                                args.preset or presets.default_preset()[0])
    folder = RunFolder(args.out)
    existing = folder.read_config()
    if existing is None:
        raise CompareError(f"--resume: {folder.config_file} does not exist; nothing to resume")
    return existing


def _wall_minutes(text) -> float | None:
    if text is None:
        return None
    try:
        wall = float(text)
    except ValueError:
        wall = math.nan
    if not (math.isfinite(wall) and wall > 0):
        raise CompareError(f"--wall-minutes {text!r} must be a positive number of minutes, "
                           "e.g. 8")
    return wall


def _settings(args, existing: dict) -> dict:
    """make_config's arguments from the options, else the resumed configuration, else the
    defaults (the preset's)."""
    if args.preset:
        preset = args.preset
    elif existing:
        preset = existing["preset"]
    else:
        preset, why = presets.default_preset()
        print(f"preset: {preset} (default, because {why}; choose with --preset)")
    p = presets.get_preset(preset)
    frameworks = (args.frameworks.split(",") if args.frameworks
                  else existing.get("frameworks") or ["jax", "torch"])
    return dict(
        recipe=args.recipe or existing.get("recipe") or C.DEFAULT_RECIPE, preset=preset,
        user_overrides=parse_overrides(args.overrides) if args.overrides
        else dict(existing.get("user_overrides") or {}),
        frameworks=[f.strip() for f in frameworks if f.strip()],
        runs=_int_arg(args.runs, "--runs") if args.runs is not None
        else existing.get("runs") or p.max_runs,
        margin=float(args.margin) if args.margin is not None
        else existing.get("margin", p.margin),
        data_dir=args.data_dir or existing.get("data_dir"))


def _main(argv, wls) -> int:
    args = build_parser().parse_args(argv)
    if args.runs is not None:
        C.check_runs(_int_arg(args.runs, "--runs"))
    if args.margin is not None:
        C.check_margin(args.margin)
    jax_vmap = _int_arg(args.jax_vmap, "--jax-vmap")
    if jax_vmap < 1:
        raise CompareError(f"--jax-vmap {jax_vmap} must be at least 1 (JAX seeds per program)")
    if args.report:
        if args.recipe or args.runs or args.resume:
            raise CompareError("--report DIR only rebuilds a report; drop --recipe/--runs/--resume")
        write_report(args.report, margin=args.margin and float(args.margin),
                     plots=not args.no_plots)
        return 0

    engine = None
    if args.engine == "dask" or args.shard is not None:  # engine options, before any work
        from . import engine  # noqa: PLC0415 - the default path imports no engine
        engine.check_options(args.engine, args.scheduler, args.shard, jax_vmap)
    existing = _resumed(args) or {}
    s = _settings(args, existing)
    recipe, preset, frameworks = s["recipe"], s["preset"], s["frameworks"]
    wall = _wall_minutes(args.wall_minutes)
    margin_source = ("--margin" if args.margin is not None else
                     existing.get("margin_source", "the preset"))
    probe = C.make_config(**s)
    arm = None
    if "upstream" in frameworks:   # checked before any data is read or run started
        script = args.upstream_script or (existing.get("upstream") or {}).get("path")
        arm = check_arm(recipe, probe["overrides"], script,
                        prepare=os.environ.get("AIRBENCH_UPSTREAM_PREPARE"),
                        n_train=probe["n_train"])
    elif args.upstream_script:
        raise CompareError("--upstream-script needs 'upstream' in --frameworks")
    train_data, test_data = C.load_subsets(probe)
    config = C.make_config(**s, identity=C.data_identity(train_data, test_data),
                           margin_source=margin_source, upstream=arm and arm.source,
                           wall_minutes=wall)
    folder = RunFolder(check_out_dir(args.out or _default_out(recipe, preset)))
    there = folder.read_config()
    if there is not None:
        C.check_config(there, config, folder.root)
    _print_header(config, folder)
    if engine is not None:
        if arm is not None:
            raise CompareError("the upstream arm runs with the local engine only (its worker "
                               "process reuses one compiled model across runs); drop --engine "
                               "dask / --shard")
        return _main_engine(engine, args, config, folder, wls)
    if args.scheduler is not None:
        raise CompareError("--scheduler needs --engine dask")
    if wls is None:
        wls = workloads([fw for fw in frameworks if fw != "upstream"])
    if arm is not None and "upstream" not in wls:
        wls = dict(wls, **workloads(["upstream"], arm))

    try:
        result = run_compare(config, folder.root, wls, train_data, test_data,
                             progress=not args.no_progress, verbose=args.verbose,
                             jax_vmap=jax_vmap)
    except KeyboardInterrupt:
        _close(wls)
        print(f"\ninterrupted; finished runs are in {folder.runs_file} (re-run to resume)",
              file=sys.stderr)
        _safe_report(folder, not args.no_plots)
        return 130
    _close(wls)
    _safe_report(folder, not args.no_plots)
    if result["error"]:
        n = len(folder.records())
        print(f"error: {result['error']} ({n} finished runs kept in {folder.runs_file}; "
              "re-run the same command to resume)", file=sys.stderr)
        return 1
    return 0


def _print_header(config: dict, folder: RunFolder) -> None:
    p = presets.get_preset(config["preset"])
    cap = f", cap {config['wall_minutes']:g} minutes" if config["wall_minutes"] else ""
    print(f"{config['recipe']} | {p.label()} | {config['data_label']} ({config['data_dir']}) | "
          f"{','.join(config['frameworks'])} | sequential plan: margin +/-{config['margin']} "
          f"points, at most {config['runs']} runs per side{cap} | out {folder.root}")
    if config["overrides"]:
        print("overrides: " + ", ".join(f"{k}={v}" for k, v in config["overrides"].items()))
    if not p.trains:
        print(f"note: preset {config['preset']} checks the plumbing; its accuracies are not "
              "expected to mean anything")


def _main_engine(engine, args, config, folder: RunFolder, wls) -> int:
    """--engine dask / --shard i/N (parity.study.engine): runs as independent tasks, then the
    report from everything in the folder."""
    try:
        if args.shard is not None:
            result = engine.run_shard(config, folder.root, engine.parse_shard(args.shard),
                                      workloads=wls)
        else:
            result = engine.run_dask(config, folder.root, args.scheduler)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {folder.runs_file} (re-run to resume)",
              file=sys.stderr)
        return 130
    _safe_report(folder, not args.no_plots)
    if result.get("error"):
        print(f"error: {result['error']} (finished runs kept in {folder.runs_file}; re-run "
              "the same command to resume)", file=sys.stderr)
        return 1
    return 0


def _close(wls) -> None:
    """End the workloads' worker processes (the upstream arm's), if they have any."""
    for wl in wls.values():
        close = getattr(wl, "close", None)
        if callable(close):
            close()


def _safe_report(folder: RunFolder, plots: bool) -> None:
    """The report after runs, if there are any; a failure is a warning (the runs are kept)."""
    if not folder.runs_file.exists():
        return
    try:
        write_report(folder.root, plots=plots)
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide the runs
        print(f"warning: could not write the report: {type(exc).__name__}: {one_line(exc)}",
              file=sys.stderr)
