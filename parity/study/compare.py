"""Run both frameworks, a pair of runs at a time, until the data decide whether they agree.

    python -m parity.compare                     # airbench94_muon, preset for this machine
    python -m parity.compare [--recipe R] [--preset cpu|smoke|full] [--runs N] [--margin M]
        [--frameworks jax,torch] [--out DIR] [--resume] [--data-dir D] [--set key=value ...]
    python -m parity.compare --report DIR        # rebuild DIR's report from DIR/runs.jsonl

The question, fixed before any run (by the preset; --margin and --runs override it): is the
mean TTA accuracy on the preset's test set (all 10,000 images at `cpu` and `full`) the same in
both frameworks within +/- margin points? Runs are added in pairs (jax seed k, then torch seed
k, the same seeds on both sides, so slow drifts of the machine hit both alike) and after every
pair the group-sequential plan of parity.plan looks at the data: it stops at "equivalent",
"different" (a difference beyond the margin, or diverged-run rates that differ by Fisher's exact
test), or at the cap (N runs per side, or the preset's wall-time cap), which ends
"inconclusive" with what it would take.

Each framework gets one warm-up (compilation of every function at the shapes of the runs) before
the first timed run. Every finished run's per-example test predictions are written to
DIR/predictions/<framework>-seed<k>.npy (atomically, uint8 per test image) and then its record is
appended to DIR/runs.jsonl (one atomic line), so a kill loses no finished run. Re-running the same
command (or --resume) continues; every setting that changes results (recipe, preset, overrides,
margin, data identity: sha256 of the train subset and of the test images and labels) must match
DIR/config.json, else exit 2 naming the field. Records not written by this comparison (another
configuration, or by another tool) are left out, with a count. One compare at a time may write a
DIR (a lock; a second one exits 2 naming the holder's pid).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from airbench_common.files import locked
from airbench_common.data import atomic_write_bytes, dataset_label, load_cifar10, resolve_data_dir
from airbench_common.cli import Parser
from airbench_common.errors import UsageError, cli_main
from airbench_common.recipes import get_recipe, parse_overrides, recipe_names
from airbench_common.records import append_record, read_records, write_json_atomic
from airbench_common.validate import check_out_dir

from . import plan as _plan
from . import presets as _presets
from ..runners import FRAMEWORKS, RunnerUnavailable, get_runners

CONFIG_NAME = "config.json"
RUNS_NAME = "runs.jsonl"
STATE_NAME = "plan.json"
PRED_DIR = "predictions"
LABELS_NAME = "test_labels.npy"
WRITER = "parity.compare"
DEFAULT_RECIPE = "airbench94_muon"
# what must match for runs to belong to the same comparison (runs and frameworks may change)
IDENTITY_KEYS = ("recipe", "preset", "recipe_params", "n_train", "n_test", "data_label",
                 "data_identity", "margin", "upstream")


class CompareError(UsageError):
    """A user-facing, one-line error (exit status 2)."""


def _jsonify(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _sha256(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_identity(train_data, test_data) -> dict:
    """Content hashes of the data a comparison runs on (any other data is another study)."""
    return dict(train_sha256=_sha256(*train_data), test_images_sha256=_sha256(test_data[0]),
                test_labels_sha256=_sha256(np.asarray(test_data[1]).astype(np.int64)))


def config_hash(config: dict) -> str:
    ident = {k: config.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def check_margin(margin) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise CompareError(f"--margin {margin!r} is not a number; give accuracy points, "
                           "e.g. 0.5") from None
    if not (math.isfinite(m) and m > 0):
        raise CompareError(f"--margin {margin!r} must be a positive finite number of accuracy "
                           "points, e.g. 0.5")
    return m


def check_runs(runs) -> int:
    if runs is None or int(runs) < 1:
        raise CompareError(f"--runs {runs!r} must be at least 1 (runs per framework)")
    return int(runs)


def make_config(recipe: str, preset: str, user_overrides: dict | None, frameworks, runs: int,
                margin: float, data_dir=None, data_label: str | None = None,
                identity: dict | None = None, margin_source: str = "the preset",
                upstream: dict | None = None, wall_minutes: float | None = None) -> dict:
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
    cfg = _jsonify(dict(
        recipe=recipe, preset=preset, preset_description=p.description,
        preset_trains=p.trains, preset_label=p.label(),
        overrides=eff, user_overrides=dict(user_overrides or {}),
        recipe_params=resolved.to_dict(), n_train=p.n_train, n_test=p.n_test,
        frameworks=frameworks, runs=check_runs(runs), margin=check_margin(margin),
        wall_minutes=wall_minutes or p.wall_minutes, eval_every_epoch=p.eval_every_epoch,
        alpha=_plan.ALPHA, first_look=_plan.FIRST_LOOK,
        data_dir=str(ddir), data_label=data_label or dataset_label(ddir),
        data_identity=identity, margin_source=margin_source, upstream=upstream))
    cfg["config_hash"] = config_hash(cfg)
    return cfg


def check_config(existing: dict, new: dict, out_dir: Path) -> None:
    """Raise CompareError (one line) naming the first setting in which `new` differs from the
    configuration already in out_dir."""
    for key in IDENTITY_KEYS:
        a, b = existing.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            what = f"{key} differs in {', '.join(diff)}"
        else:
            what = f"{key} {a!r} there vs {b!r} now"
        raise CompareError(f"{out_dir} holds a different comparison ({what}); use another "
                           "--out (or the same settings to resume)")


def read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CompareError(f"{path} cannot be read ({type(exc).__name__}); it is not a compare "
                           "configuration: use another --out") from None
    if not isinstance(cfg, dict) or "recipe" not in cfg:
        raise CompareError(f"{path} is not a compare configuration; use another --out")
    return cfg


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


def own_records(records, config: dict) -> tuple[list[dict], int]:
    """(records of this comparison, count of foreign ones): a record belongs when it was written
    by parity.compare under this configuration hash."""
    own = [r for r in records if r.get("written_by") == WRITER
           and r.get("compare_config") == config.get("config_hash")]
    return own, len(records) - len(own)


def latest_by_run(records) -> dict[tuple[str, int], dict]:
    out = {}
    for r in records:
        try:
            out[(r.get("framework"), int(r.get("seed")))] = r
        except (TypeError, ValueError):
            continue
    return out


def prediction_path(out_dir, framework: str, seed: int) -> Path:
    return Path(out_dir) / PRED_DIR / f"{framework}-seed{int(seed)}.npy"


def save_npy(path: Path, array) -> None:
    atomic_write_bytes(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))
    os.chmod(path, 0o644)


def _read_state(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _progress(total, initial, desc, enabled):
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="run", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def elapsed_seconds(records, state: dict) -> float:
    """Wall time the study has used: every finished run's wall time plus the warm-ups."""
    return float(sum(float(r.get("wall_seconds") or 0.0) for r in records)
                 + float(state.get("warmup_seconds") or 0.0))


def run_compare(config: dict, out_dir, runners: Mapping[str, Callable], train_data=None,
                test_data=None, *, progress: bool = True, log: Callable = print,
                verbose: bool = False, jax_vmap: int = 1) -> dict:
    """Add pairs of runs to out_dir until the plan decides (or the cap); returns
    {'finished', 'skipped', 'foreign', 'error', 'outcome'}. `runners` maps framework -> callable
    with run_recipe's signature (optionally with a `warmup` attribute). A runner that raises
    stops the loop: nothing is recorded for that run, the error is returned (one line) and what
    finished before stays in runs.jsonl. `jax_vmap` K > 1: when JAX needs seed k, seeds k..k+K-1
    (those not done, below the plan's N) are trained together as one vmapped program (their
    records marked `vmapped`; each record's wall_seconds is its share of the group's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the runs file's one lock in this process (airbench_common.files): appending a record takes
    # the same lock again, reentrantly; a second compare gets a LockedError naming this pid
    with locked(out_dir / RUNS_NAME):
        return _run_locked(config, out_dir, runners, train_data, test_data, progress=progress,
                           log=log, verbose=verbose, jax_vmap=jax_vmap)


def _run_locked(config, out_dir, runners, train_data, test_data, *, progress, log, verbose,
                jax_vmap=1):
    cfg_path, runs_path = out_dir / CONFIG_NAME, out_dir / RUNS_NAME
    if cfg_path.exists():
        check_config(read_config(cfg_path), config, out_dir)
    write_json_atomic(cfg_path, config)
    os.chmod(cfg_path, 0o644)
    if test_data is not None and not (out_dir / LABELS_NAME).exists():
        save_npy(out_dir / LABELS_NAME, np.asarray(test_data[1]).astype(np.uint8))
    records, foreign = own_records(read_records(runs_path), config)
    if foreign:
        log(f"note: {foreign} record(s) in {runs_path} belong to another configuration or "
            "were not written by parity.compare; they are left out")
    fws = list(config["frameworks"])
    plan = _plan.Plan(config["margin"], config["runs"])
    state = _read_state(out_dir)
    cap_s = (config.get("wall_minutes") or 0) * 60 or None
    result = dict(finished=0, skipped=0, foreign=foreign, error=None, warmup_seconds={},
                  outcome=None)

    def outcome_now():
        return _plan.study_outcome(records, fws, plan, final_n=state.get("final_n"))

    def save_state(**kw):
        state.update(kw)
        write_json_atomic(out_dir / STATE_NAME, state)

    done = latest_by_run(records)
    result["skipped"] = sum(1 for (fw, s) in done if fw in fws and s < plan.max_runs)
    out = outcome_now()
    if out["decision"] != "continue":
        log(f"already decided: {out['decision']} after {out['n']} runs per side ({out['reason']})")
        result["outcome"] = out
        return result
    missing = [fw for fw in fws if fw not in runners]
    if missing:
        raise CompareError(f"no runner for framework(s) {', '.join(missing)}")
    if result["skipped"]:
        log(f"resuming: {result['skipped']} runs already in {runs_path}")
    common = dict(overrides=config["overrides"], train_data=train_data, test_data=test_data)

    def tlog(msg):
        try:
            from tqdm import tqdm  # noqa: PLC0415
            tqdm.write(str(msg), file=sys.stderr)
        except ImportError:  # pragma: no cover
            log(msg)

    # one warm-up per framework before any timed run: every compiled function at the run's shapes
    for fw in fws:
        warm = getattr(runners[fw], "warmup", None)
        if warm is None:
            continue
        log(f"warming up {fw} (compilation of the train and eval functions; excluded from "
            "timings) ...")
        t0 = time.perf_counter()
        try:
            warm(config["recipe"], **common)
        except Exception as exc:  # noqa: BLE001
            result["error"] = f"{fw} warm-up failed: {type(exc).__name__}: {one_line(exc)}"
            if verbose:
                traceback.print_exc()
            return result
        secs = time.perf_counter() - t0
        result["warmup_seconds"][fw] = secs
        save_state(warmup_seconds=float(state.get("warmup_seconds") or 0.0) + secs)
        log(f"  {fw} warm-up took {secs:.1f} s")

    total = len(fws) * plan.max_runs
    bar = _progress(total, min(len(done), total), f"{config['recipe']}/{config['preset']}",
                    progress)
    try:
        while True:
            out = outcome_now()
            if out["decision"] != "continue":
                break
            n = out["n"]
            spent = elapsed_seconds(records, state)
            if cap_s is not None and spent >= cap_s:
                save_state(final_n=n, stop_reason=f"wall-time cap of {config['wall_minutes']:g} "
                           f"minutes reached after {n} runs per side")
                continue      # the look at n is now the final one
            seed = n
            for fw in fws:
                if (fw, seed) in done:
                    continue
                if bar is not None:
                    bar.set_description_str(f"{fw} seed {seed}")
                group = [seed]
                if fw == "jax" and jax_vmap > 1:
                    group = [s for s in range(seed, min(seed + jax_vmap, plan.max_runs))
                             if (fw, s) not in done]
                try:
                    if len(group) > 1:
                        recs = _group_run(config, out_dir, runners[fw], fw, group, common,
                                          train_data, test_data, verbose, tlog)
                    else:
                        recs = [_one_run(config, out_dir, runners[fw], fw, seed, common,
                                         train_data, test_data, verbose, tlog)]
                except Exception as exc:  # noqa: BLE001
                    result["error"] = (f"{fw} seed {seed} failed: {type(exc).__name__}: "
                                       f"{one_line(exc)}")
                    if verbose:
                        traceback.print_exc()
                    return result
                for rec in recs:
                    records.append(rec)
                    done[(fw, rec["seed"])] = rec
                    result["finished"] += 1
                    if bar is not None:
                        bar.update(1)
            if bar is not None:
                bar.set_postfix_str(_progress_text(outcome_now(), elapsed_seconds(records, state),
                                                   cap_s))
    finally:
        if bar is not None:
            bar.close()
    if out.get("final") and "final_n" not in state:
        save_state(final_n=out["n"], stop_reason=f"{plan.max_runs} runs per side reached")
    result["outcome"] = out
    return result


def _progress_text(out: dict, spent: float, cap_s) -> str:
    cap = f"/{cap_s / 60:.0f}" if cap_s else ""
    head = f"{spent / 60:.1f}{cap} min"
    if "diff" not in out:
        return f"{head}; {out['reason']}"
    return (f"{head}; d {out['diff']:+.2f} pts; TOST p {out['p_equivalence']:.2g} (needs < "
            f"{out['level_equivalence']:.2g}); beyond-margin p {out['p_difference']:.2g} (needs < "
            f"{out['level_difference']:.2g})")


def run_kwargs(config, common, verbose, tlog) -> dict:
    kwargs = dict(common, data_dir=config["data_dir"], verbose=verbose, log=tlog,
                  predictions=True)
    if not config.get("eval_every_epoch", True):
        kwargs["eval_every_epoch"] = False
    return kwargs


def _one_run(config, out_dir, runner, fw, seed, common, train_data, test_data, verbose, tlog):
    t0, c0 = time.perf_counter(), time.process_time()
    rec = dict(runner(config["recipe"], seed, **run_kwargs(config, common, verbose, tlog)))
    # CPU seconds of all this process's threads: on a shared machine, cpu_seconds / cores
    # estimates what the run would take alone (wall_seconds grows with the other jobs)
    rec["cpu_seconds"] = time.process_time() - c0
    return store_run(config, out_dir, rec, fw, seed, time.perf_counter() - t0, train_data,
                      test_data)


def _group_run(config, out_dir, runner, fw, seeds, common, train_data, test_data, verbose, tlog):
    """`seeds` trained together (run_recipe(..., seeds=...), one vmapped program); each record
    stored as a sequential run's, with wall_seconds its share of the group's wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    recs = runner(config["recipe"], None, seeds=list(seeds), group_size=len(seeds),
                  **run_kwargs(config, common, verbose, tlog))
    wall = (time.perf_counter() - t0) / len(seeds)
    cpu = (time.process_time() - c0) / len(seeds)
    recs = [dict(rec, cpu_seconds=cpu) for rec in recs] if isinstance(recs, list) else recs
    if not isinstance(recs, list) or len(recs) != len(seeds):
        raise RuntimeError(f"{fw} runner gave no list of {len(seeds)} records for seeds {seeds} "
                           "(does its run_recipe take seeds=?)")
    return [store_run(config, out_dir, dict(rec), fw, s, wall, train_data, test_data)
            for rec, s in zip(recs, seeds)]


def store_run(config, out_dir, rec, fw, seed, wall, train_data, test_data, append=None):
    """Check and complete a runner's record, write its predictions, then append the record
    (`append(path, record)`, default append_record; parity.engine appends once per key)."""
    preds = rec.get("_predictions")
    # keys starting with "_" are in-memory extras (predictions, the jax net state)
    rec = {k: v for k, v in rec.items() if not str(k).startswith("_")}
    rec.setdefault("framework", fw)
    if rec["framework"] != fw or int(rec.get("seed", seed)) != seed:
        raise RuntimeError(f"runner returned a record for {rec['framework']} seed "
                           f"{rec.get('seed')}, expected {fw} seed {seed}")
    rec.update(preset=config["preset"], written_by=WRITER, compare_config=config["config_hash"],
               wall_seconds=wall)
    data = dict(rec.get("data") or {})
    data.update(label=config["data_label"], dir=config["data_dir"])
    if train_data is not None:
        data["n_train"] = len(train_data[0])
    if test_data is not None:
        data["n_test"] = len(test_data[0])
    rec["data"] = data
    if preds is not None:
        preds = np.asarray(preds)
        if test_data is not None and preds.shape != (len(test_data[0]),):
            raise RuntimeError(f"predictions of shape {preds.shape}, expected "
                               f"({len(test_data[0])},)")
        path = prediction_path(out_dir, fw, seed)
        save_npy(path, preds.astype(np.uint8))      # before the record: a record implies them
        rec["predictions"] = str(path.relative_to(out_dir))
    try:  # how busy the machine was: shared machines make timings noisy
        rec["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        rec.setdefault("machine", {}).setdefault("cpu_count", os.cpu_count())
    except (OSError, AttributeError):
        pass
    (append or append_record)(out_dir / RUNS_NAME, rec)
    return rec


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(  # argparse's errors as one line (a UsageError), as every other bad value
        prog="python -m parity.compare",
        description="Run the JAX port and the PyTorch reference in pairs of seeds until a "
                    "group-sequential equivalence test (TOST, O'Brien-Fleming alpha spending) "
                    "decides whether their mean TTA accuracies agree within the margin.")
    p.add_argument("--recipe", choices=recipe_names(),
                   help=f"recipe to run (default {DEFAULT_RECIPE})")
    p.add_argument("--runs", help="most runs (seeds 0..N-1) per framework, the plan's N; "
                   "default: the preset's (" + ", ".join(
                       f"{k} {v.max_runs}" for k, v in _presets.PRESETS.items()) + ")")
    p.add_argument("--preset", choices=_presets.preset_names(),
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
                        + ", ".join(f"{k} {v.margin}" for k, v in _presets.PRESETS.items()) + ")")
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
    p.add_argument("--verbose", action="store_true", help="runner logs and tracebacks")
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


def main(argv=None, runners: Mapping[str, Callable] | None = None) -> int:
    """CLI entry point; `runners` (framework -> callable) replaces the real ones in tests. Bad
    input (UsageError) is one line on stderr and exit status 2."""
    return cli_main(lambda a: _main(a, runners))(argv)


def _main(argv, runners) -> int:
    args = build_parser().parse_args(argv)
    from . import report as _report  # noqa: PLC0415

    if args.runs is not None:
        check_runs(_int_arg(args.runs, "--runs"))
    if args.margin is not None:
        check_margin(args.margin)
    jax_vmap = _int_arg(args.jax_vmap, "--jax-vmap")
    if jax_vmap < 1:
        raise CompareError(f"--jax-vmap {jax_vmap} must be at least 1 (JAX seeds per program)")
    if args.report:
        if args.recipe or args.runs or args.resume:
            raise CompareError("--report DIR only rebuilds a report; drop --recipe/--runs/--resume")
        try:
            _report.write_report(args.report, margin=args.margin and float(args.margin),
                                 plots=not args.no_plots)
        except _report.ReportError as exc:
            raise CompareError(str(exc)) from None
        return 0

    if args.engine == "dask" or args.shard is not None:  # engine options, before any work
        from . import engine  # noqa: PLC0415 - the default path imports no engine
        engine.check_options(args.engine, args.scheduler, args.shard, jax_vmap)
    existing = None
    if args.resume:
        out = args.out
        if out is None:
            recipe = args.recipe or DEFAULT_RECIPE
            preset = args.preset or _presets.default_preset()[0]
            out = f"results/compare-{recipe}-{preset}"
        cfg_path = Path(out) / CONFIG_NAME
        if not cfg_path.exists():
            raise CompareError(f"--resume: {cfg_path} does not exist; nothing to resume")
        existing = read_config(cfg_path)
        args.out = out
    recipe = args.recipe or (existing or {}).get("recipe") or DEFAULT_RECIPE
    if args.preset:
        preset = args.preset
    elif existing:
        preset = existing["preset"]
    else:
        preset, why = _presets.default_preset()
        print(f"preset: {preset} (default, because {why}; choose with --preset)")
    p = _presets.get_preset(preset)
    user = parse_overrides(args.overrides) if args.overrides else \
        dict((existing or {}).get("user_overrides") or {})
    frameworks = (args.frameworks.split(",") if args.frameworks
                  else (existing or {}).get("frameworks") or ["jax", "torch"])
    frameworks = [f.strip() for f in frameworks if f.strip()]
    runs = _int_arg(args.runs, "--runs") if args.runs is not None else \
        (existing or {}).get("runs") or p.max_runs
    margin = float(args.margin) if args.margin is not None else \
        (existing or {}).get("margin", p.margin)
    data_dir = args.data_dir or (existing or {}).get("data_dir")
    wall = None
    if args.wall_minutes is not None:
        try:
            wall = float(args.wall_minutes)
        except ValueError:
            wall = math.nan
        if not (math.isfinite(wall) and wall > 0):
            raise CompareError(f"--wall-minutes {args.wall_minutes!r} must be a positive number "
                               "of minutes, e.g. 8")
    margin_source = ("--margin" if args.margin is not None else
                     (existing or {}).get("margin_source", "the preset"))
    probe = make_config(recipe, preset, user, frameworks, runs, margin, data_dir)
    arm = None
    if "upstream" in frameworks:   # checked before any data is read or run started
        from .upstream import check_arm  # noqa: PLC0415
        script = args.upstream_script or ((existing or {}).get("upstream") or {}).get("path")
        arm = check_arm(recipe, probe["overrides"], script,
                        prepare=os.environ.get("AIRBENCH_UPSTREAM_PREPARE"),
                        n_train=probe["n_train"])
    elif args.upstream_script:
        raise CompareError("--upstream-script needs 'upstream' in --frameworks")
    train_data, test_data = load_subsets(probe)
    config = make_config(recipe, preset, user, frameworks, runs, margin, data_dir,
                         identity=data_identity(train_data, test_data),
                         margin_source=margin_source, upstream=arm and arm.source,
                         wall_minutes=wall)
    out_dir = check_out_dir(args.out or f"results/compare-{recipe}-{preset}")
    cfg_path = out_dir / CONFIG_NAME
    if cfg_path.exists():
        check_config(read_config(cfg_path), config, out_dir)
    cap = f", cap {config['wall_minutes']:g} minutes" if config["wall_minutes"] else ""
    print(f"{recipe} | {p.label()} | {config['data_label']} ({config['data_dir']}) | "
          f"{','.join(frameworks)} | sequential plan: margin +/-{margin} points, at most {runs} "
          f"runs per side{cap} | out {out_dir}")
    if config["overrides"]:
        print("overrides: " + ", ".join(f"{k}={v}" for k, v in config["overrides"].items()))
    if not p.trains:
        print(f"note: preset {preset} checks the plumbing; its accuracies are not "
              "expected to mean anything")
    if args.engine == "dask" or args.shard is not None:
        if arm is not None:
            raise CompareError("the upstream arm runs with the local engine only (its worker "
                               "process reuses one compiled model across runs); drop --engine "
                               "dask / --shard")
        return _main_engine(args, config, out_dir, runners, _report)
    if args.scheduler is not None:
        raise CompareError("--scheduler needs --engine dask")
    if runners is None:
        try:
            runners = get_runners([fw for fw in frameworks if fw != "upstream"])
        except RunnerUnavailable as exc:
            raise CompareError(one_line(exc)) from None
    if arm is not None and "upstream" not in runners:
        from .upstream import UpstreamRunner  # noqa: PLC0415
        runners = dict(runners, upstream=UpstreamRunner(arm))

    try:
        result = run_compare(config, out_dir, runners, train_data, test_data,
                             progress=not args.no_progress, verbose=args.verbose,
                             jax_vmap=jax_vmap)
    except KeyboardInterrupt:
        _close(runners)
        print(f"\ninterrupted; finished runs are in {out_dir / RUNS_NAME} (re-run to resume)",
              file=sys.stderr)
        _safe_report(_report, out_dir, None, not args.no_plots)
        return 130
    _close(runners)
    _safe_report(_report, out_dir, None, not args.no_plots)
    if result["error"]:
        n = len(read_records(out_dir / RUNS_NAME))
        print(f"error: {result['error']} ({n} finished runs kept in {out_dir / RUNS_NAME}; "
              "re-run the same command to resume)", file=sys.stderr)
        return 1
    return 0


def _main_engine(args, config, out_dir, runners, report_mod) -> int:
    """--engine dask / --shard i/N (parity.engine): runs as independent tasks, then the report
    from everything in out_dir."""
    from . import engine  # noqa: PLC0415 - options checked by engine.check_options in _main
    try:
        if args.shard is not None:
            result = engine.run_shard(config, out_dir, engine.parse_shard(args.shard),
                                      runners=runners)
        else:
            result = engine.run_dask(config, out_dir, args.scheduler)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {out_dir / RUNS_NAME} (re-run to resume)",
              file=sys.stderr)
        return 130
    _safe_report(report_mod, out_dir, None, not args.no_plots)
    if result.get("error"):
        print(f"error: {result['error']} (finished runs kept in {out_dir / RUNS_NAME}; re-run "
              "the same command to resume)", file=sys.stderr)
        return 1
    return 0


def _close(runners) -> None:
    """End the runners' worker processes (the upstream arm's), if they have any."""
    for runner in runners.values():
        close = getattr(runner, "close", None)
        if callable(close):
            close()


def _safe_report(report_mod, out_dir, margin, plots):
    if not (Path(out_dir) / RUNS_NAME).exists():
        return
    try:
        report_mod.write_report(out_dir, margin=margin, plots=plots)
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide the runs
        print(f"warning: could not write the report: {type(exc).__name__}: {one_line(exc)}",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
