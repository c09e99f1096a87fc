"""The comparison's summary, computed from its run records alone (plus its configuration and
plan state when there are any): everything report.json holds, which the report prints.

Accuracies are in percentage points; the TOST margin is in points as well.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import sys

from airbench_common.env import machine_info, package_versions
from airbench_common.records import float_or_nan

from . import examples as E
from . import plan as P
from . import stats as S
from .errors import ReportError
from .presets import PRESETS
from .store import RunFolder

FW_ORDER = ("jax", "torch", "upstream")
PKGS = ("jax", "jaxlib", "flax", "optax", "torch", "scipy", "matplotlib", "tqdm")


def _frameworks(records, config):
    seen = {r.get("framework") for r in records}
    fws = list((config or {}).get("frameworks") or [])
    for fw in FW_ORDER:
        if fw in seen and fw not in fws:
            fws.append(fw)
    fws += sorted(f for f in seen if f not in fws and f is not None)
    return fws


def acc_points(recs, key):
    """Each record's accuracy `key` in percentage points (NaN where there is none)."""
    return [100 * float_or_nan(r.get(key)) for r in recs]


def _environment(records, frameworks) -> dict:
    per_fw = {}
    for fw in frameworks:
        recs = [r for r in records if r.get("framework") == fw]
        if not recs:
            continue
        last = recs[-1]
        per_fw[fw] = dict(
            device=sorted({str(r.get("device")) for r in recs}),
            dtype=sorted({str(r.get("dtype")) for r in recs}),
            ns_dtype=sorted({str(r.get("ns_dtype")) for r in recs}),
            versions=last.get("versions"), flags=last.get("flags"),
            cpu=(last.get("machine") or {}).get("cpu"),
            host=sorted({str((r.get("machine") or {}).get("host")) for r in recs}),
            machine_env=(last.get("machine") or {}).get("env"),
            conv_impl=sorted({str((r.get("flags") or {}).get("conv_impl"))
                              for r in recs if (r.get("flags") or {}).get("conv_impl")}),
        )
    threads = {"cpu_count": os.cpu_count(),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "XLA_FLAGS": os.environ.get("XLA_FLAGS")}
    if "torch" in sys.modules:
        try:
            threads["torch_num_threads"] = sys.modules["torch"].get_num_threads()
        except Exception:  # noqa: BLE001
            pass
    return dict(recorded=per_fw,
                report_machine=dict(machine_info(), versions=package_versions(*PKGS),
                                    threads=threads))


# What the full recipe would take on a GPU (the report's first lines). The per-run spread of
# airbench94 on the full test set is about 0.13-0.14 points (Jordan, arXiv 2304.01910; upstream
# airbench's README); upstream's airbench94_muon takes about 3 s per run on an A100. The runs per
# side are the plan's simulated mean at d = 0:
#   python -m parity.plan --simulate --sd 0.13 --margin 0.1 --max-runs 200
GPU_SD_POINTS = 0.13
GPU_SECONDS_PER_RUN = 3.0
GPU_MEAN_RUNS_AT_D0 = 63


def gpu_projection() -> str:
    minutes = 2 * GPU_MEAN_RUNS_AT_D0 * GPU_SECONDS_PER_RUN / 60
    return (f"projection, not measured: the full recipe on a GPU (preset full on all 50000/10000 "
            f"images, margin +/-0.1, at most "
            f"200 runs per side): at airbench94's spread of about {GPU_SD_POINTS} points per run "
            f"the plan decides 'equivalent' at d = 0 after about {GPU_MEAN_RUNS_AT_D0} runs per "
            f"side on average (python -m parity.plan --simulate --sd {GPU_SD_POINTS} --margin 0.1 "
            f"--max-runs 200), about {minutes:.0f} minutes at upstream's ~{GPU_SECONDS_PER_RUN:g} s "
            "per run on an A100, plus compilation (estimate, not measured here)")


def _sequential(records, frameworks, config, margin, state) -> dict | None:
    """The plan's decision replayed over the records (parity.study.plan.study_outcome: one pair, or
    each pair of plan.comparisons at its share of alpha)."""
    if len(frameworks) < 2:
        return None
    n_complete = 0
    have = {(r.get("framework"), r.get("seed")) for r in records}
    while all((fw, n_complete) in have for fw in frameworks):
        n_complete += 1
    max_runs = int(config.get("runs") or max(n_complete, 1))
    plan = P.Plan(margin, max_runs)
    final_n = state.get("final_n")
    if not config.get("runs"):        # no configuration: the records are the whole study
        final_n = n_complete
    out = P.study_outcome(records, frameworks, plan, final_n=final_n)
    if out["decision"] == "continue":
        out = dict(out, decision="undecided",
                   reason=f"study incomplete: {out['n']} of at most {max_runs} runs per side "
                          f"so far ({out['reason']}); resume to continue")
    elif out["decision"] == "inconclusive" and "pairs" not in out:
        sd = [S.describe([P.endpoint(r) for r in records if r.get("framework") == fw
                          and r.get("status") == "ok"])["std"] for fw in frameworks]
        need = S.runs_needed(sd[0], sd[1], out.get("diff", math.nan), margin)
        out["runs_needed_fixed"] = need
        out["reason"] += (f"; at the observed spread a fixed-size study would need about "
                          f"{need:.0f} runs per side" if math.isfinite(need) else "")
        if state.get("stop_reason"):
            out["reason"] = f"{state['stop_reason']}: " + out["reason"]
    out["max_runs"] = max_runs
    out["alpha"] = plan.alpha
    return out


def _per_example(records, frameworks, out_dir) -> dict | None:
    """Per-example analysis when both frameworks have at least two ok runs with stored
    predictions."""
    if out_dir is None or len(frameworks) != 2:
        return None
    folder = RunFolder(out_dir)
    labels = folder.load_labels()
    if labels is None:
        return None
    mats = []
    for fw in frameworks:
        runs, preds = folder.load_predictions(records, fw, labels)
        if len(runs) < 2:
            return None
        mats.append(preds)
    return E.analyse(mats[0], mats[1], labels)


def summarize(records: list[dict], config: dict | None = None, margin: float | None = None,
              *, state: dict | None = None, out_dir=None, foreign: int = 0) -> dict:
    """Everything report.json holds, computed from run records (+ optional config and plan
    state)."""
    config = dict(config or {})
    state = dict(state or {})
    if not records:
        raise ReportError("no run records to report on")
    margin_overridden = margin is not None and margin != config.get("margin")
    if margin is None:
        margin = config.get("margin")
    if margin is None:
        pre = PRESETS.get(str(records[0].get("preset")))
        margin = pre.margin if pre else 0.1
    margin = float(margin)
    if not (math.isfinite(margin) and margin > 0):
        raise ReportError(f"margin {margin!r} must be a positive finite number of accuracy points")
    frameworks = _frameworks(records, config)
    first = records[0]
    recipe = config.get("recipe") or first.get("recipe")
    preset = config.get("preset") or first.get("preset") or "unknown"
    data = dict(first.get("data") or {})
    data_label = config.get("data_label") or data.get("label") or "CIFAR-10 (unlabelled)"
    warnings = []
    recipes = {r.get("recipe") for r in records}
    if len(recipes) > 1:
        warnings.append(f"records mix recipes {sorted(map(str, recipes))}")
    # the latest record per (framework, seed) counts; duplicates are flagged
    latest: dict[tuple, dict] = {}
    for r in records:
        key = (r.get("framework"), r.get("seed"))
        if key in latest:
            warnings.append(f"duplicate record for {key[0]} seed {key[1]}; the later one is used")
        latest[key] = r
    by_fw = {fw: sorted((r for (f, _), r in latest.items() if f == fw),
                        key=lambda r: int(r.get("seed", 0))) for fw in frameworks}
    ok = {fw: [r for r in rs if r.get("status") == "ok"] for fw, rs in by_fw.items()}
    counts = {fw: dict(total=len(rs), ok=len(ok[fw]),
                       diverged=sum(r.get("status") == "diverged" for r in rs),
                       other=sum(r.get("status") not in ("ok", "diverged") for r in rs),
                       diverged_seeds=[r.get("seed") for r in rs if r.get("status") == "diverged"])
              for fw, rs in by_fw.items()}
    tta_level = first.get("tta_level")
    # vmapped runs (compare --jax-vmap K) carry their group's training time: they never enter the
    # per-run training time or the framework ratio (upstream's comparable is the sequential run);
    # their per-seed share is reported on its own
    seq = {fw: [r for r in ok[fw] if not r.get("vmapped")] for fw in frameworks}
    per_fw = {}
    for fw in frameworks:
        per_fw[fw] = dict(acc=S.describe(acc_points(ok[fw], "acc")),
                          acc_tta=S.describe(acc_points(ok[fw], "acc_tta")),
                          time_seconds=S.describe_times([float_or_nan(r.get("time_seconds"))
                                                         for r in seq[fw]]),
                          timed_compile_seconds=S.describe_times(
                              [float_or_nan(r.get("timed_compile_seconds")) for r in by_fw[fw]
                               if r.get("timed_compile_seconds") is not None]),
                          train_seconds=S.describe_times([float_or_nan(r.get("train_seconds"))
                                                          for r in seq[fw]]),
                          eval_seconds=S.describe_times([float_or_nan(r.get("eval_seconds"))
                                                         for r in ok[fw]]),
                          compile_seconds=S.describe_times([float_or_nan(r.get("compile_seconds"))
                                                            for r in by_fw[fw]
                                                            if r.get("compile_seconds") is not None]))
        vm = [r["vmapped"] for r in ok[fw] if isinstance(r.get("vmapped"), dict)]
        if vm:
            per_fw[fw]["vmapped"] = dict(
                runs=len(vm), group_sizes=sorted({int(v.get("group_size", 0)) for v in vm}),
                per_seed_train_seconds=S.describe_times(
                    [float_or_nan(v.get("per_seed_train_seconds")) for v in vm]))
    comparison = None
    sequential = _sequential(records, frameworks, config, margin, state)
    per_example = None
    secondary = []
    if len(frameworks) >= 2:
        per_example = _per_example(records, frameworks, out_dir)
        a, b = frameworks[0], frameworks[1]
        comparison = dict(a=a, b=b, difference=f"{a} - {b}", ratio=f"{a} / {b}")
        for key in ("acc", "acc_tta"):
            comparison[key] = S.compare_samples(acc_points(ok[a], key), acc_points(ok[b], key),
                                                margin)
        for key in ("time_seconds", "train_seconds", "eval_seconds"):
            src = seq if key != "eval_seconds" else ok
            comparison[key] = S.compare_times([float_or_nan(r.get(key)) for r in src[a]],
                                              [float_or_nan(r.get(key)) for r in src[b]])
        head = "acc_tta" if (tta_level or 0) > 0 and comparison["acc_tta"]["n_a"] else "acc"
        comparison["headline_metric"] = head
        comparison["verdict"] = comparison[head]["verdict"]
        h = comparison[head]
        secondary = [dict(test=f"Welch t-test ({head})", p=h["welch_p"]),
                     dict(test=f"Mann-Whitney U ({head})", p=h["mannwhitney_p"]),
                     dict(test=f"Kolmogorov-Smirnov ({head})", p=h["ks_p"])]
        if per_example:
            secondary.append(dict(test="per-example agreement (permutation)",
                                  p=per_example["agreement"]["p"]))
            secondary += [dict(test=f"class {r['cls']} accuracy (Welch)", p=r["p"])
                          for r in per_example["per_class"]]
        for row, q in zip(secondary, S.holm([row["p"] for row in secondary])):
            row["p_holm"] = q
    pairs = []   # every pair the plan decides (three arms: jax-vs-torch and jax-vs-upstream)
    for a, b in P.comparisons(frameworks):
        acc = S.compare_samples(acc_points(ok[a], "acc_tta"), acc_points(ok[b], "acc_tta"),
                                margin)
        tim = S.compare_times([float_or_nan(r.get("time_seconds")) for r in seq[a]],
                              [float_or_nan(r.get("time_seconds")) for r in seq[b]])
        dec = (sequential or {}).get("pairs", {}).get(P.pair_name((a, b)), sequential) or {}
        pairs.append(dict(a=a, b=b, decision=dec.get("decision"), reason=dec.get("reason"),
                          acc_tta=acc, time_seconds=tim))
    for fw in frameworks:
        tc = per_fw[fw]["timed_compile_seconds"]
        if tc["n"] and (tc.get("max") or 0) > 0:
            warnings.append(f"{fw}: compilation inside timed runs (up to {tc['max']:.2f} s): "
                            "their time_seconds include it; the warm-up missed a function or a "
                            "shape")
    minutes = sum(float(r.get("wall_seconds") or 0) for r in records) / 60 \
        + float(state.get("warmup_seconds") or 0) / 60
    cpus = [float(r["cpu_seconds"]) for r in records if r.get("cpu_seconds") is not None]
    cpu_minutes = sum(cpus) / 60 if len(cpus) == len(records) else None
    if foreign:
        warnings.append(f"{foreign} record(s) in runs.jsonl belong to another configuration or "
                        "were not written by parity.compare: left out")
    if margin_overridden:
        warnings.append(f"margin +/-{margin} given at report time, not the study's "
                        f"+/-{config.get('margin')}: the plan was fixed with the latter")
    if config.get("preset_trains") is False or preset == "smoke":
        warnings.append(f"preset {preset} only checks the plumbing: its accuracies are not "
                        "expected to be meaningful")
    for fw in frameworks:
        if per_fw[fw].get("vmapped"):
            v = per_fw[fw]["vmapped"]
            warnings.append(f"{fw}: {v['runs']} run(s) trained vmapped (group size "
                            f"{', '.join(map(str, v['group_sizes']))}): left out of the training "
                            f"times and their ratio; per-seed share of the group's training time "
                            f"median {v['per_seed_train_seconds'].get('median', float('nan')):.1f} s")
        if counts[fw]["diverged"]:
            warnings.append(f"{fw}: {counts[fw]['diverged']} diverged run(s) "
                            f"(seeds {counts[fw]['diverged_seeds']}) excluded from statistics")
    loads = [(r.get("load_avg") or [None])[0] for r in records]
    loads = [float(x) for x in loads if x is not None]
    ncpu = max([int((r.get("machine") or {}).get("cpu_count") or 0) for r in records] or [0])
    if loads and ncpu and max(loads) > ncpu:
        warnings.append(f"the machine was busy during the runs (1-minute load average up to "
                        f"{max(loads):.1f} on {ncpu} CPUs): timings are noisy; the alternating "
                        "run order spreads the noise over both sides")
    title = f"{recipe} | preset {preset} | {data_label}"
    return S.jsonable(dict(
        title=title, recipe=recipe, preset=preset,
        preset_description=config.get("preset_description"),
        preset_label=config.get("preset_label"),
        overrides=config.get("overrides", first.get("overrides")),
        data=dict(label=data_label, dir=config.get("data_dir", data.get("dir")),
                  n_train=data.get("n_train", config.get("n_train")),
                  n_test=data.get("n_test", config.get("n_test"))),
        load_avg_1m=dict(min=min(loads), max=max(loads)) if loads else None,
        tta_level=tta_level, margin_points=margin, frameworks=frameworks,
        planned_runs=config.get("runs"), counts=counts, per_framework=per_fw,
        comparison=comparison, pairs=pairs, sequential=sequential, secondary=secondary,
        margin_source=config.get("margin_source", "the preset"),
        upstream=config.get("upstream"),
        per_example=per_example, minutes=minutes, cpu_minutes=cpu_minutes,
        wall_minutes_cap=config.get("wall_minutes"),
        n_test=data.get("n_test", config.get("n_test")), gpu_projection=gpu_projection(),
        verdict=(sequential or {}).get("decision"), warnings=warnings, environment=_environment(records, frameworks),
        generated_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        stats_notes="accuracies in percentage points; bootstrap: percentile, 9999 resamples, "
                    "seed 0; verdict rules in parity/study/stats.py"))
