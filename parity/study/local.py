"""The local engine (`python -m parity.compare`'s default): pairs of runs in this process, in
order, until the sequential plan decides.

Runs are added in pairs (jax seed k, then torch seed k: the same seeds on both sides, so slow
drifts of the machine hit both alike) and after every pair the plan (parity.study.plan) looks at
the data; it stops at its decision, at N runs per side, or at the wall-time cap. Each framework
gets one warm-up (compilation of every function at the runs' shapes) before the first timed run.
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Callable, Mapping

from airbench_common import interrupts
from airbench_common.workload import Workload

from . import plan as P
from .errors import CompareError, one_line
from .runs import group_run, one_run, prepare, run_options
from .store import RunFolder, latest_by_run


def elapsed_seconds(records, state: dict) -> float:
    """Wall time the study has used: every finished run's wall time plus the warm-ups."""
    return float(sum(float(r.get("wall_seconds") or 0.0) for r in records)
                 + float(state.get("warmup_seconds") or 0.0))


def progress_text(out: dict, spent: float, cap_s) -> str:
    """The progress bar's text: minutes used (of the cap), the estimate and each test's
    distance from its boundary."""
    cap = f"/{cap_s / 60:.0f}" if cap_s else ""
    head = f"{spent / 60:.1f}{cap} min"
    if "diff" not in out:
        return f"{head}; {out['reason']}"
    return (f"{head}; d {out['diff']:+.2f} pts; TOST p {out['p_equivalence']:.2g} (needs < "
            f"{out['level_equivalence']:.2g}); beyond-margin p {out['p_difference']:.2g} (needs < "
            f"{out['level_difference']:.2g})")


def _progress(total, initial, desc, enabled):
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="run", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


def _bar_log(log):
    """Messages during the runs: above the progress bar (tqdm.write) when there is one."""
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover
        return log
    return lambda msg: tqdm.write(str(msg), file=sys.stderr)


def run_compare(config: dict, out_dir, workloads: Mapping[str, Workload], train_data, test_data,
                *, progress: bool = True, log: Callable = print, verbose: bool = False,
                jax_vmap: int = 1) -> dict:
    """Add pairs of runs to out_dir until the plan decides (or the cap); returns
    {'finished', 'skipped', 'foreign', 'error', 'warmup_seconds', 'outcome'}. `workloads` maps
    framework -> its Workload (parity.study.runs.workloads). A run that raises stops the loop: nothing is recorded for that run, the error is returned (one line)
    and what finished before stays in the runs file. `jax_vmap` K > 1: when JAX needs seed k,
    seeds k..k+K-1 (those not done, below the plan's N) are trained together as one vmapped
    program (their records marked `vmapped`; each record's wall_seconds is its share of the
    group's)."""
    folder = RunFolder(out_dir)
    with folder.lock():     # a second compare on this folder: LockedError naming this pid
        return _run_locked(config, folder, workloads, train_data, test_data,
                           progress=progress, log=log, verbose=verbose, jax_vmap=jax_vmap)


def _run_locked(config, folder: RunFolder, workloads, train_data, test_data, *, progress, log,
                verbose, jax_vmap):
    prepare(folder, config, lambda: test_data[1])
    records, foreign = folder.study_records(config)
    if foreign:
        log(f"note: {foreign} record(s) in {folder.runs_file} belong to another configuration or "
            "were not written by parity.compare; they are left out")
    fws = list(config["frameworks"])
    plan = P.Plan(config["margin"], config["runs"])
    state = folder.read_state()
    cap_s = (config.get("wall_minutes") or 0) * 60 or None
    result = dict(finished=0, skipped=0, foreign=foreign, error=None, warmup_seconds={},
                  outcome=None)

    def outcome_now():
        return P.study_outcome(records, fws, plan, final_n=state.get("final_n"))

    def save_state(**kw):
        state.update(kw)
        folder.write_state(state)

    done = latest_by_run(records)
    result["skipped"] = sum(1 for (fw, s) in done if fw in fws and s < plan.max_runs)
    out = outcome_now()
    if out["decision"] != "continue":
        log(f"already decided: {out['decision']} after {out['n']} runs per side ({out['reason']})")
        result["outcome"] = out
        return result
    missing = [fw for fw in fws if fw not in workloads]
    if missing:
        raise CompareError(f"no workload for framework(s) {', '.join(missing)}")
    if result["skipped"]:
        log(f"resuming: {result['skipped']} runs already in {folder.runs_file}")
    options = run_options(config, train_data, test_data, verbose=verbose, log=_bar_log(log))

    # one warm-up per framework before any timed run: every compiled function at the run's shapes
    for fw in fws:
        log(f"warming up {fw} (compilation of the train and eval functions; excluded from "
            "timings) ...")
        t0 = time.perf_counter()
        try:
            workloads[fw].warmup(options)
        except Exception as exc:  # noqa: BLE001
            if interrupts.interrupted(exc):   # a Ctrl-C a library wrapped in its own error
                raise KeyboardInterrupt from exc
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
            if cap_s is not None and elapsed_seconds(records, state) >= cap_s:
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
                        recs = group_run(config, folder, workloads[fw], fw, group, options)
                    else:
                        recs = [one_run(config, folder, workloads[fw], fw, seed, options)[0]]
                except Exception as exc:  # noqa: BLE001
                    if interrupts.interrupted(exc):
                        raise KeyboardInterrupt from exc
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
                bar.set_postfix_str(progress_text(outcome_now(), elapsed_seconds(records, state),
                                                  cap_s))
    finally:
        if bar is not None:
            bar.close()
    if out.get("final") and "final_n" not in state:
        save_state(final_n=out["n"], stop_reason=f"{plan.max_runs} runs per side reached")
    result["outcome"] = out
    return result
