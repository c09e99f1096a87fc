"""Run both frameworks for many seeds on one recipe and data, and say whether they agree.

    python -m parity.compare --recipe airbench94_muon --runs 30 [--preset cpu|smoke|full]
        [--frameworks jax,torch] [--out DIR] [--resume] [--margin 0.1] [--data-dir D]
        [--set key=value ...]
    python -m parity.compare --report DIR        # rebuild DIR's report from DIR/runs.jsonl

Runs alternate between frameworks (jax seed 0, torch seed 0, jax seed 1, ...), the same seeds on
both sides, so slow drifts of the machine hit both alike. Each framework gets one warm-up
(compilation + a few steps) before the first timed run, excluded from all timings. Every finished
run is appended to DIR/runs.jsonl at once (one atomic line), so a kill loses no finished run;
re-running with the same DIR and configuration (or --resume) continues to N runs per framework,
skipping the (framework, seed) pairs already recorded. A diverged run (status "diverged") is
recorded and counted; a run whose runner raises records nothing, stops the comparison with a
one-line error and a non-zero exit status (re-run to resume). The verdict uses the statistics in
parity.stats; see there for their exact definitions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping

from airbench_common.data import DatasetError, dataset_label, load_cifar10, resolve_data_dir
from airbench_common.recipes import RecipeError, get_recipe, parse_overrides, recipe_names
from airbench_common.records import append_record, read_records, write_json_atomic

from . import presets as _presets
from .runners import FRAMEWORKS, RunnerUnavailable, get_runners

CONFIG_NAME = "config.json"
RUNS_NAME = "runs.jsonl"
# what must match for runs to belong to the same comparison (runs/margin/frameworks may change)
IDENTITY_KEYS = ("recipe", "preset", "recipe_params", "n_train", "n_test", "data_label")
DEFAULT_RUNS = {"smoke": 3, "cpu": 8, "full": 30}


class CompareError(RuntimeError):
    """A user-facing, one-line error."""


def _jsonify(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def make_config(recipe: str, preset: str, user_overrides: dict | None, frameworks, runs: int,
                margin: float, data_dir=None, data_label: str | None = None) -> dict:
    """The comparison's configuration; validates recipe, preset and overrides."""
    p = _presets.get_preset(preset)
    overrides = p.recipe_overrides(recipe, user_overrides)
    resolved = get_recipe(recipe, **overrides)           # raises RecipeError on bad overrides
    if p.n_train is not None:
        resolved.steps_per_epoch(p.n_train)              # batch larger than the subset?
    eff = {k: getattr(resolved, k) for k in overrides}   # coerced to the fields' types
    frameworks = list(frameworks)
    for fw in frameworks:
        if fw not in FRAMEWORKS:
            raise CompareError(f"unknown framework {fw!r}; choose from {', '.join(FRAMEWORKS)}")
    if len(set(frameworks)) != len(frameworks) or not frameworks:
        raise CompareError(f"--frameworks {','.join(frameworks)}: name each framework once")
    ddir = resolve_data_dir(data_dir)
    return _jsonify(dict(
        recipe=recipe, preset=preset, preset_description=p.description,
        preset_trains=p.trains, preset_label=p.label(),
        overrides=eff, user_overrides=dict(user_overrides or {}),
        recipe_params=resolved.to_dict(), n_train=p.n_train, n_test=p.n_test,
        frameworks=frameworks, runs=int(runs), margin=float(margin),
        data_dir=str(ddir), data_label=data_label or dataset_label(ddir)))


def check_config(existing: dict, new: dict, out_dir: Path) -> None:
    """Raise CompareError (one line) if `new` is not the configuration already in out_dir."""
    for key in IDENTITY_KEYS:
        if existing.get(key) != new.get(key):
            if key == "recipe_params":
                a, b = existing.get(key) or {}, new.get(key) or {}
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                what = f"hyper-parameters {', '.join(diff)} differ"
            else:
                what = f"{key} {existing.get(key)!r} there vs {new.get(key)!r} now"
            raise CompareError(f"{out_dir} holds a different comparison ({what}); use another "
                               "--out (or the same settings to resume)")


def load_subsets(config: dict):
    """(train_data, test_data) as (images, labels) tuples: the first n_train/n_test images."""
    tr_x, tr_y = load_cifar10("train", config["data_dir"])
    te_x, te_y = load_cifar10("test", config["data_dir"])
    n_tr, n_te = config.get("n_train"), config.get("n_test")
    if n_tr is not None:
        tr_x, tr_y = tr_x[:n_tr], tr_y[:n_tr]
    if n_te is not None:
        te_x, te_y = te_x[:n_te], te_y[:n_te]
    return (tr_x, tr_y), (te_x, te_y)


def planned_order(frameworks, runs: int) -> list[tuple[str, int]]:
    """Alternating order: (fw0, 0), (fw1, 0), (fw0, 1), ..."""
    return [(fw, seed) for seed in range(runs) for fw in frameworks]


def done_pairs(records) -> set[tuple[str, int]]:
    return {(r.get("framework"), int(r.get("seed"))) for r in records
            if r.get("framework") is not None and r.get("seed") is not None}


def _progress(total, initial, desc, enabled):
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="run", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def run_compare(config: dict, out_dir, runners: Mapping[str, Callable], train_data=None,
                test_data=None, *, progress: bool = True, log: Callable = print,
                verbose: bool = False) -> dict:
    """Do the runs still missing in out_dir; returns {'finished', 'skipped', 'error'}.

    `runners` maps framework -> callable with run_recipe's signature (optionally with a
    `warmup` attribute). A runner that raises stops the loop: nothing is recorded for that run,
    the error is returned (one line) and what finished before stays in runs.jsonl."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, runs_path = out_dir / CONFIG_NAME, out_dir / RUNS_NAME
    if cfg_path.exists():
        existing = json.loads(cfg_path.read_text())
        check_config(existing, config, out_dir)
    write_json_atomic(cfg_path, config)
    records = read_records(runs_path)
    for r in records:  # the runs file must belong to this comparison too
        if r.get("recipe") != config["recipe"] or (r.get("preset") not in (None, config["preset"])):
            raise CompareError(f"{runs_path} holds runs of recipe {r.get('recipe')!r} preset "
                               f"{r.get('preset')!r}; use another --out")
    done = done_pairs(records)
    order = planned_order(config["frameworks"], config["runs"])
    todo = [p for p in order if p not in done]
    result = dict(finished=0, skipped=len(order) - len(todo), error=None, warmup_seconds={})
    if not todo:
        log(f"all {len(order)} planned runs are already in {runs_path}")
        return result
    missing = [fw for fw in {fw for fw, _ in todo} if fw not in runners]
    if missing:
        raise CompareError(f"no runner for framework(s) {', '.join(missing)}")
    if result["skipped"]:
        log(f"resuming: {result['skipped']} of {len(order)} runs already in {runs_path}, "
            f"{len(todo)} to go")
    overrides = config["overrides"]
    common = dict(overrides=overrides, train_data=train_data, test_data=test_data)

    def tlog(msg):
        try:
            from tqdm import tqdm  # noqa: PLC0415
            tqdm.write(str(msg), file=sys.stderr)
        except ImportError:  # pragma: no cover
            log(msg)

    # one warm-up per framework with work left, before any timed run
    for fw in config["frameworks"]:
        if not any(f == fw for f, _ in todo):
            continue
        warm = getattr(runners[fw], "warmup", None)
        if warm is None:
            continue
        log(f"warming up {fw} (compilation + a few steps; excluded from timings) ...")
        t0 = time.perf_counter()
        try:
            warm(config["recipe"], **common)
        except Exception as exc:  # noqa: BLE001
            result["error"] = f"{fw} warm-up failed: {type(exc).__name__}: {_one_line(exc)}"
            if verbose:
                traceback.print_exc()
            return result
        result["warmup_seconds"][fw] = time.perf_counter() - t0
        log(f"  {fw} warm-up took {result['warmup_seconds'][fw]:.1f} s")

    bar = _progress(len(order), len(order) - len(todo),
                    f"{config['recipe']}/{config['preset']}", progress)
    try:
        for fw, seed in todo:
            if bar is not None:
                bar.set_postfix_str(f"{fw} seed {seed}")
            try:
                rec = runners[fw](config["recipe"], seed, data_dir=config["data_dir"],
                                  verbose=verbose, log=tlog, **common)
                # keys starting with "_" are in-memory extras (e.g. the jax net state)
                rec = {k: v for k, v in dict(rec).items() if not str(k).startswith("_")}
                rec.setdefault("framework", fw)
                if rec["framework"] != fw or int(rec.get("seed", seed)) != seed:
                    raise RuntimeError(f"runner returned a record for {rec['framework']} seed "
                                       f"{rec.get('seed')}, expected {fw} seed {seed}")
                rec["preset"] = config["preset"]
                data = dict(rec.get("data") or {})
                data.update(label=config["data_label"], dir=config["data_dir"])
                if train_data is not None:
                    data["n_train"] = len(train_data[0])
                if test_data is not None:
                    data["n_test"] = len(test_data[0])
                rec["data"] = data
                try:  # how busy the machine was: shared machines make timings noisy
                    rec["load_avg"] = [round(v, 2) for v in os.getloadavg()]
                    rec.setdefault("machine", {}).setdefault("cpu_count", os.cpu_count())
                except (OSError, AttributeError):
                    pass
                append_record(runs_path, rec)
            except Exception as exc:  # noqa: BLE001
                result["error"] = (f"{fw} seed {seed} failed: {type(exc).__name__}: "
                                   f"{_one_line(exc)}")
                if verbose:
                    traceback.print_exc()
                return result
            result["finished"] += 1
            if bar is not None:
                acc = rec.get("acc_tta") if rec.get("acc_tta") is not None else rec.get("acc")
                status = rec.get("status")
                bar.update(1)
                bar.set_postfix_str(f"last {fw} seed {seed}: "
                                    + (f"{100 * float(acc):.2f}%" if status == "ok" and acc is not None
                                       else str(status)))
    finally:
        if bar is not None:
            bar.close()
    return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m parity.compare",
        description="Run the JAX port and the PyTorch reference for many seeds on one recipe "
                    "and data, and compare accuracy (Welch, TOST, Mann-Whitney, KS, bootstrap) "
                    "and time.")
    p.add_argument("--recipe", choices=recipe_names(), help="recipe to run (required unless "
                   "--report, or --resume with an existing --out)")
    p.add_argument("--runs", type=int, help="runs (seeds 0..N-1) per framework; default: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_RUNS.items()))
    p.add_argument("--preset", choices=_presets.preset_names(),
                   help="scaling of the recipe (default: full with a GPU, else cpu)")
    p.add_argument("--frameworks", default=None, help="comma-separated, default jax,torch")
    p.add_argument("--out", help="output folder (default results/compare-<recipe>-<preset>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the comparison in --out (settings not given are read from its "
                        "config.json); re-running with the same settings resumes as well")
    p.add_argument("--margin", type=float, default=None,
                   help="TOST equivalence margin in accuracy points (default 0.1)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default $AIRBENCH_DATA or ~/.cache)")
    p.add_argument("--report", metavar="DIR",
                   help="only rebuild DIR's report from DIR/runs.jsonl (+ config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe hyper-parameter (on top of the preset), repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--verbose", action="store_true", help="runner logs and tracebacks")
    return p


def main(argv=None, runners: Mapping[str, Callable] | None = None) -> int:
    """CLI entry point; `runners` (framework -> callable) replaces the real ones in tests."""
    args = build_parser().parse_args(argv)
    from . import report as _report  # noqa: PLC0415

    def err(msg: str, code: int = 2) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return code

    if args.report:
        if args.recipe or args.runs or args.resume:
            return err("--report DIR only rebuilds a report; drop --recipe/--runs/--resume")
        try:
            _report.write_report(args.report, margin=args.margin, plots=not args.no_plots)
        except _report.ReportError as exc:
            return err(str(exc))
        return 0

    try:
        existing = None
        if args.resume:
            out = args.out
            if out is None:
                if not args.recipe:
                    return err("--resume needs --out DIR (or --recipe and --preset)")
                preset = args.preset or _presets.default_preset()[0]
                out = f"results/compare-{args.recipe}-{preset}"
            cfg_path = Path(out) / CONFIG_NAME
            if not cfg_path.exists():
                return err(f"--resume: {cfg_path} does not exist; nothing to resume")
            existing = json.loads(cfg_path.read_text())
            args.out = out
        recipe = args.recipe or (existing or {}).get("recipe")
        if not recipe:
            return err("--recipe is required (one of: " + ", ".join(recipe_names()) + ")")
        if args.preset:
            preset = args.preset
        elif existing:
            preset = existing["preset"]
        else:
            preset, why = _presets.default_preset()
            print(f"preset: {preset} (default, because {why}; choose with --preset)")
        user = parse_overrides(args.overrides) if args.overrides else \
            dict((existing or {}).get("user_overrides") or {})
        frameworks = (args.frameworks.split(",") if args.frameworks
                      else (existing or {}).get("frameworks") or ["jax", "torch"])
        frameworks = [f.strip() for f in frameworks if f.strip()]
        runs = args.runs or (existing or {}).get("runs") or DEFAULT_RUNS.get(preset, 8)
        margin = args.margin if args.margin is not None else \
            (existing or {}).get("margin", 0.1)
        if runs < 1:
            return err("--runs must be at least 1")
        if not margin > 0:
            return err("--margin must be positive (accuracy points)")
        data_dir = args.data_dir or (existing or {}).get("data_dir")
        config = make_config(recipe, preset, user, frameworks, runs, margin, data_dir)
        out_dir = Path(args.out or f"results/compare-{recipe}-{preset}")
        cfg_path = out_dir / CONFIG_NAME
        if cfg_path.exists():
            check_config(json.loads(cfg_path.read_text()), config, out_dir)
        p = _presets.get_preset(preset)
        print(f"{recipe} | {p.label()} | {config['data_label']} ({config['data_dir']}) | "
              f"{','.join(frameworks)} x {runs} runs | margin +/-{margin} points | out {out_dir}")
        if config["overrides"]:
            print("overrides: " + ", ".join(f"{k}={v}" for k, v in config["overrides"].items()))
        if not p.trains:
            print(f"note: preset {preset} checks the plumbing; its accuracies are not "
                  "expected to mean anything")
        if runners is None:
            runners = get_runners(frameworks)
        train_data, test_data = load_subsets(config)
    except (RecipeError, CompareError, DatasetError, RunnerUnavailable) as exc:
        return err(_one_line(exc))

    try:
        result = run_compare(config, out_dir, runners, train_data, test_data,
                             progress=not args.no_progress, verbose=args.verbose)
    except CompareError as exc:
        return err(_one_line(exc))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {out_dir / RUNS_NAME} (re-run to resume)",
              file=sys.stderr)
        _safe_report(_report, out_dir, margin, not args.no_plots)
        return 130
    _safe_report(_report, out_dir, margin, not args.no_plots)
    if result["error"]:
        n = len(read_records(out_dir / RUNS_NAME))
        return err(f"{result['error']} ({n} finished runs kept in {out_dir / RUNS_NAME}; "
                   "re-run the same command to resume)", code=1)
    return 0


def _safe_report(report_mod, out_dir, margin, plots):
    if not (Path(out_dir) / RUNS_NAME).exists():
        return
    try:
        report_mod.write_report(out_dir, margin=margin, plots=plots)
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide the runs
        print(f"warning: could not write the report: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
