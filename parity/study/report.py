"""The comparison report, rebuilt from DIR/runs.jsonl alone (plus DIR/config.json if present):
a terminal table, DIR/report.md, DIR/report.json (atomic writes) and PNG plots
(accuracy ECDFs, time per run, per-epoch validation accuracy curves).

Accuracies are reported in percentage points; the TOST margin is in points as well.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from airbench_common.data import atomic_write_bytes
from airbench_common.env import machine_info, package_versions
from airbench_common.records import float_or_nan, read_records, write_json_atomic

from . import examples as E
from . import plan as P
from . import stats as S

FW_ORDER = ("jax", "torch", "upstream")
COLORS = {"jax": "tab:blue", "torch": "tab:orange"}
PKGS = ("jax", "jaxlib", "flax", "optax", "torch", "scipy", "matplotlib", "tqdm")


class ReportError(RuntimeError):
    pass


def _fmt(x, spec=".3f", none="-"):
    if x is None:
        return none
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(xf):
        return "inf" if xf == math.inf else none
    return format(xf, spec)


def _p(x):
    if x is None or not math.isfinite(float(x)):
        return "-"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def _frameworks(records, config):
    seen = {r.get("framework") for r in records}
    fws = list((config or {}).get("frameworks") or [])
    for fw in FW_ORDER:
        if fw in seen and fw not in fws:
            fws.append(fw)
    fws += sorted(f for f in seen if f not in fws and f is not None)
    return fws


def _acc_points(recs, key):
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
    """The plan's decision replayed over the records (parity.plan.study_outcome: one pair, or
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
    """Per-example analysis when both frameworks' ok runs have stored predictions."""
    if out_dir is None or len(frameworks) != 2:
        return None
    labels_path = Path(out_dir) / "test_labels.npy"
    if not labels_path.exists():
        return None
    labels = np.load(labels_path, allow_pickle=False)
    mats = []
    for fw in frameworks:
        rows = []
        for r in sorted((r for r in records if r.get("framework") == fw and
                         r.get("status") == "ok"), key=lambda r: int(r.get("seed", 0))):
            path = Path(out_dir) / str(r.get("predictions") or "")
            if r.get("predictions") and path.is_file():
                pr = np.load(path, allow_pickle=False)
                if pr.shape == labels.shape:
                    rows.append(pr)
        if len(rows) < 2:
            return None
        mats.append(np.stack(rows))
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
        from .presets import PRESETS  # noqa: PLC0415
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
        per_fw[fw] = dict(acc=S.describe(_acc_points(ok[fw], "acc")),
                          acc_tta=S.describe(_acc_points(ok[fw], "acc_tta")),
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
            comparison[key] = S.compare_samples(_acc_points(ok[a], key), _acc_points(ok[b], key),
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
        acc = S.compare_samples(_acc_points(ok[a], "acc_tta"), _acc_points(ok[b], "acc_tta"),
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
                    "seed 0; verdict rules in parity/stats.py"))


# ----------------------------------------------------------------------------- text output
def _rows_accuracy(summary):
    rows = []
    for fw in summary["frameworks"]:
        c = summary["counts"][fw]
        for key, name in (("acc_tta", "acc TTA"), ("acc", "acc")):
            d = summary["per_framework"][fw][key]
            rows.append([fw, name, str(c["ok"]), str(c["diverged"]), _fmt(d["mean"]),
                         _fmt(d["std"]), _fmt(d["min"]), _fmt(d["max"]),
                         f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]"])
    return ["framework", "metric", "n ok", "diverged", "mean %", "std", "min", "max",
            "95% CI (bootstrap)"], rows


def _rows_tests(summary):
    c = summary["comparison"]
    rows = []
    for key, name in (("acc_tta", "acc TTA"), ("acc", "acc")):
        s = c[key]
        rows.append([name, f"{_fmt(s['diff'], '+.3f')}",
                     f"[{_fmt(s['diff_ci_low'], '+.3f')}, {_fmt(s['diff_ci_high'], '+.3f')}]",
                     _p(s["welch_p"]), _p(s["tost_p"]), _p(s["mannwhitney_p"]), _p(s["ks_p"]),
                     s["verdict"], _fmt(s["runs_needed"], ".0f")])
    return ["metric", f"diff {c['difference']}", "95% CI (bootstrap)", "Welch p",
            f"TOST p (+/-{summary['margin_points']})", "MWU p", "KS p", "verdict",
            "runs/side to decide"], rows


def _rows_times(summary):
    rows = []
    for fw in summary["frameworks"]:
        pf = summary["per_framework"][fw]
        for key in ("time_seconds", "train_seconds", "eval_seconds", "compile_seconds",
                    "timed_compile_seconds"):
            d = pf.get(key) or {"n": 0}
            if not d["n"]:
                continue
            rows.append([fw, key.replace("_seconds", ""), str(d["n"]), _fmt(d["median"], ".2f"),
                         f"[{_fmt(d['q25'], '.2f')}, {_fmt(d['q75'], '.2f')}]",
                         _fmt(d["min"], ".2f"), _fmt(d["max"], ".2f")])
    return ["framework", "time", "n", "median s", "IQR", "min", "max"], rows


def _rows_ratio(summary):
    c = summary["comparison"]
    rows = []
    for key in ("time_seconds", "train_seconds", "eval_seconds"):
        s = c.get(key)
        if s is None:
            continue
        rows.append([key.replace("_seconds", ""), _fmt(s["ratio"], ".3f"),
                     f"[{_fmt(s['ratio_ci_low'], '.3f')}, {_fmt(s['ratio_ci_high'], '.3f')}]"])
    return ["time", f"median ratio {c['ratio']}", "95% CI (bootstrap)"], rows


def _plain_table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def _rows_pairs(summary):
    rows = []
    for p in summary.get("pairs") or []:
        acc, tim = p["acc_tta"], p["time_seconds"]
        rows.append([f"{p['a']} vs {p['b']}", str(p.get("decision")),
                     _fmt(acc["diff"], "+.3f"),
                     f"[{_fmt(acc['diff_ci_low'], '+.3f')}, {_fmt(acc['diff_ci_high'], '+.3f')}]",
                     _fmt(tim["ratio"], ".3f"),
                     f"[{_fmt(tim['ratio_ci_low'], '.3f')}, {_fmt(tim['ratio_ci_high'], '.3f')}]"])
    return ["arms", "sequential decision", "diff acc TTA (points)", "95% CI (bootstrap)",
            "median time_seconds ratio", "95% CI (bootstrap)"], rows


def _tables(summary):
    t = [("Accuracy (percentage points, ok runs)", *_rows_accuracy(summary))]
    if len(summary.get("pairs") or []) > 1:
        t.append(("Every pair the plan decides (alpha split between them in advance)",
                  *_rows_pairs(summary)))
    if summary["comparison"]:
        t.append((f"Between {summary['comparison']['a']} and {summary['comparison']['b']}",
                  *_rows_tests(summary)))
    t.append(("Time per run (airbench_common.timing: upstream's time_seconds = whitening + "
              "epochs + final TTA evaluation; set-up and compilation apart)",
              *_rows_times(summary)))
    if summary["comparison"]:
        t.append(("Time ratio", *_rows_ratio(summary)))
    return t


def headline(summary) -> str:
    c = summary["comparison"]
    if not c:
        return f"only {', '.join(summary['frameworks'])} recorded: no comparison"
    q = summary.get("sequential")
    if q:
        return (f"verdict: {q['decision'].upper()} -- mean TTA accuracy on {summary.get('n_test')}"
                f" test images, margin +/-{summary['margin_points']} points: {q['reason']}")
    s = c[c["headline_metric"]]
    metric = "TTA accuracy" if c["headline_metric"] == "acc_tta" else "accuracy"
    return (f"verdict ({metric}, margin +/-{summary['margin_points']} points): "
            f"{s['verdict'].upper()} -- {s.get('reason', '')}")


def print_terminal(summary, file=None) -> None:
    file = file or sys.stdout
    try:
        from rich.console import Console  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        wide = None if getattr(file, "isatty", lambda: False)() else 160
        console = Console(file=file, width=wide)
        console.print(f"[bold]{summary['title']}[/bold]")
        for line in first_lines(summary):
            console.print(line.replace("**", ""), markup=False)
        for title, header, rows in _tables(summary):
            table = Table(title=title)
            for h in header:
                table.add_column(h)
            for r in rows:
                table.add_row(*[str(x) for x in r])
            console.print(table)
        console.print(headline(summary))
        for w in summary["warnings"]:
            console.print(f"[yellow]warning:[/yellow] {w}")
        return
    except ImportError:
        pass
    print(summary["title"], file=file)
    for line in first_lines(summary):
        print(line.replace("**", ""), file=file)
    for title, header, rows in _tables(summary):
        print(f"\n{title}\n{_plain_table(header, rows)}", file=file)
    print("\n" + headline(summary), file=file)
    for w in summary["warnings"]:
        print(f"warning: {w}", file=file)


def first_lines(summary) -> list[str]:
    """The report's first lines: verdict, margin, runs, minutes, what a GPU would take."""
    q = summary.get("sequential")
    if not q or not summary.get("comparison"):
        return [headline(summary)]
    c = summary["counts"]
    fws = summary["frameworks"]
    cap = summary.get("wall_minutes_cap")
    return [f"**Verdict: {q['decision'].upper()}** -- {q['reason']}",
            f"- margin: +/-{summary['margin_points']} points on the mean TTA accuracy over "
            f"{summary.get('n_test')} test images (fixed in advance by "
            f"{summary.get('margin_source') or 'the preset'})",
            f"- data: {summary['data']['label']}, {summary['data'].get('n_train')} training / "
            f"{summary['data'].get('n_test')} test images as run",
            f"- runs: {q['n']} per side at the deciding look ("
            + ", ".join(f"{fw} {c[fw]['ok']} ok + {c[fw]['diverged']} diverged" for fw in fws)
            + f"; plan: at most {q['max_runs']} per side)",
            f"- minutes: {summary['minutes']:.1f} of wall time"
            + (f" (cap {cap:g})" if cap else "")
            + (f"; the runs used {summary['cpu_minutes']:.1f} CPU-minutes (all threads)"
               if summary.get("cpu_minutes") is not None else ""),
            f"- {summary['gpu_projection']}"]


def _rows_secondary(summary):
    rows = [[r["test"], _p(r["p"]), _p(r.get("p_holm"))] for r in summary.get("secondary") or []]
    return ["secondary test", "p", "p (Holm-adjusted, this family)"], rows


def per_example_md(summary) -> list[str]:
    """The per-example section (markdown lines) of summary["per_example"] (report and
    python -m parity.examples)."""
    pe = summary.get("per_example")
    if not pe:
        return ["", "## Per-example parity", "",
                "(no per-example predictions stored for both frameworks)"]
    fws = summary["frameworks"]
    ag = pe["agreement"]
    out = ["", "## Per-example parity (secondary)", "",
           "Distribution-wise variance after Jordan (arXiv 2304.01910): Var_dist ~ Var(acc) - "
           "sum_i p_i(1-p_i)/n^2, in points^2 (sd in points).", "",
           _md_table(["framework", "runs", "sd(acc)", "Var(acc)", "binomial part", "Var_dist",
                      "sd_dist"],
                     [[fw, v["runs"], _fmt(v["sd_acc"]), _fmt(v["var_acc"], ".4f"),
                       _fmt(v["var_binomial"], ".4f"), _fmt(v["var_dist"], ".4f"),
                       _fmt(v["sd_dist"])] for fw, v in zip(fws, (pe["var_a"], pe["var_b"]))]),
           "",
           f"Per-example accuracy correlation {fws[0]} vs {fws[1]}: {_fmt(ag['corr'])}; "
           f"split-half (even vs odd seeds) within {fws[0]}: {_fmt(ag['split_half_a'])}, within "
           f"{fws[1]}: {_fmt(ag['split_half_b'])}. Mean squared per-example difference "
           f"D = {_fmt(ag['msd'], '.5f')}; permutation test over run labels "
           f"({ag['permutations']} permutations): p = {_p(ag['p'])}.", "",
           "Per-class accuracy (points), Welch p Holm-adjusted over the classes, CI "
           "Bonferroni-corrected (95% family-wise):", "",
           _md_table(["class", "n", f"{fws[0]}", f"{fws[1]}", "diff", "CI", "p", "p Holm"],
                     [[r["cls"], r["n"], _fmt(r["mean_a"], ".2f"), _fmt(r["mean_b"], ".2f"),
                       _fmt(r["diff"], "+.2f"),
                       f"[{_fmt(r['ci_low'], '+.2f')}, {_fmt(r['ci_high'], '+.2f')}]",
                       _p(r["p"]), _p(r["p_holm"])] for r in pe["per_class"]])]
    return out


def to_markdown(summary, plots: list[str]) -> str:
    out = [f"# Parity: {summary['title']}", ""] + first_lines(summary) + [""]
    out.append(f"- recipe **{summary['recipe']}**, preset **{summary['preset']}**"
               + (f": {summary['preset_description']}" if summary.get("preset_description") else ""))
    d = summary["data"]
    out.append(f"- data: **{d['label']}** ({d.get('dir')}), n_train {d.get('n_train')}, "
               f"n_test {d.get('n_test')}")
    if summary.get("overrides"):
        out.append("- overrides: " + ", ".join(f"`{k}={v}`" for k, v in summary["overrides"].items()))
    out.append(f"- TTA level {summary.get('tta_level')}; TOST margin +/-{summary['margin_points']} "
               f"accuracy points; alpha 0.05")
    for fw in summary["frameworks"]:
        c = summary["counts"][fw]
        out.append(f"- {fw}: {c['ok']} ok, {c['diverged']} diverged"
                   + (f" (seeds {c['diverged_seeds']})" if c["diverged"] else "")
                   + (f" of {summary['planned_runs']} planned" if summary.get("planned_runs") else ""))
    out += ["", f"**{headline(summary)}**", ""]
    for w in summary["warnings"]:
        out.append(f"> warning: {w}")
    for title, header, rows in _tables(summary):
        out += ["", f"## {title}", "", _md_table(header, rows)]
    if summary.get("secondary"):
        out += ["", "## Secondary tests (Holm-corrected; they do not change the verdict)", "",
                _md_table(*_rows_secondary(summary))]
    out += per_example_md(summary)
    out += ["", "## Method", "",
            "Primary: the group-sequential plan of `parity.plan` (runs added in pairs; at each "
            "look from 3 runs per side, TOST with both one-sided Welch tests against "
            "+/-margin, and one-sided tests for a difference beyond the margin at alpha/2 a "
            "side; nominal levels from Lan-DeMets alpha spending with the O'Brien-Fleming-type "
            "function, alpha 0.05; the look at the cap spends what is left; diverged-run rates "
            "compared by Fisher's exact test at the look's level). The fixed-sample numbers "
            "below are descriptive.",
            "",
            "Welch's t-test (scipy `ttest_ind(equal_var=False)`); TOST = two one-sided Welch tests "
            "against +/-margin (equivalent iff the 90% CI of the difference lies inside the "
            "margin); *different* iff Welch p < 0.05 and the 95% Welch CI lies entirely outside "
            "the margin; otherwise *inconclusive*, with the runs per side that would decide at the "
            "observed variance (normal approximation, alpha 0.05, power 0.8). Mann-Whitney U and "
            "Kolmogorov-Smirnov are secondary checks. Bootstrap CIs: percentile, 9999 resamples, "
            "fixed seed. Diverged runs are excluded from the statistics and counted above. "
            "Timing excludes compilation and one warm-up per framework."]
    env = summary["environment"]
    out += ["", "## Environment", ""]
    for fw, e in env["recorded"].items():
        vers = ", ".join(f"{k} {v}" for k, v in (e.get("versions") or {}).items())
        out.append(f"- {fw}: device {', '.join(e['device'])}; dtype {', '.join(e['dtype'])}; "
                   f"NS dtype {', '.join(e['ns_dtype'])}; CPU {e.get('cpu')}; hosts "
                   f"{', '.join(e['host'])}; versions: {vers}; flags {json.dumps(e.get('flags'))}; "
                   f"env {json.dumps(e.get('machine_env'))}")
    rm = env["report_machine"]
    out.append(f"- report built on {rm.get('host')} ({rm.get('cpu')}, {rm.get('cpu_count')} CPUs); "
               f"threads {json.dumps(rm.get('threads'))}; versions "
               + ", ".join(f"{k} {v}" for k, v in rm["versions"].items()))
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    out.append(f"\n_generated {summary['generated_at']} by `python -m parity.compare`_\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots
def make_plots(records, summary, out_dir: Path) -> list[str]:
    """Write the PNGs; returns their file names. Matplotlib Agg, no display needed."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    title = summary["title"]
    fws = summary["frameworks"]
    ok = {fw: sorted([r for r in records if r.get("framework") == fw and r.get("status") == "ok"],
                     key=lambda r: int(r.get("seed", 0))) for fw in fws}
    names = []

    def save(fig, name):
        path = out_dir / name
        atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110,
                                                       bbox_inches="tight"))
        plt.close(fig)
        names.append(name)

    # accuracy ECDFs
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, name in ((axes[0], "acc_tta", "accuracy with TTA"), (axes[1], "acc", "accuracy")):
        for fw in fws:
            x = np.sort([v for v in _acc_points(ok[fw], key) if math.isfinite(v)])
            if len(x):
                ax.step(np.r_[x[0], x], np.r_[0.0, np.arange(1, len(x) + 1) / len(x)],
                        where="post", color=COLORS.get(fw),
                        label=f"{fw} (n={len(x)}, mean {x.mean():.2f})")
                ax.axvline(x.mean(), color=COLORS.get(fw), ls=":", lw=1)
        ax.set_xlabel(f"{name} (%)")
        ax.set_ylabel("fraction of runs <= x")
        ax.set_title(f"ECDF of {name}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, "accuracy_ecdf.png")

    # time per run
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((axes[0], "train_seconds"), (axes[1], "eval_seconds")):
        for fw in fws:
            s = [int(r.get("seed", 0)) for r in ok[fw]]
            t = [float_or_nan(r.get(key)) for r in ok[fw]]
            if s:
                ax.plot(s, t, "o-", color=COLORS.get(fw), label=f"{fw} (median {np.nanmedian(t):.2f} s)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("seed (run order alternates frameworks)")
        ax.set_ylabel("seconds")
        ax.set_title(key.replace("_", " ") + " per run (compile excluded)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, "time_per_run.png")

    # per-epoch validation accuracy
    fig, ax = plt.subplots(figsize=(7, 4))
    any_curve = False
    for fw in fws:
        curves: dict[int, list[float]] = {}
        for r in ok[fw]:
            for e in r.get("per_epoch") or []:
                v = e.get("val_acc")
                if v is not None and e.get("epoch") is not None and math.isfinite(float_or_nan(v)):
                    curves.setdefault(int(e["epoch"]), []).append(100 * float(v))
        if not curves:
            continue
        any_curve = True
        ep = sorted(curves)
        m = np.array([np.mean(curves[e]) for e in ep])
        sd = np.array([np.std(curves[e], ddof=1) if len(curves[e]) > 1 else 0.0 for e in ep])
        ax.plot(ep, m, "o-", color=COLORS.get(fw), label=f"{fw} mean +/- 1 sd")
        ax.fill_between(ep, m - sd, m + sd, color=COLORS.get(fw), alpha=0.25)
        ax.errorbar(ep, m, yerr=sd, fmt="none", ecolor=COLORS.get(fw), capsize=3, lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%, no TTA)")
    ax.set_title(title + ("" if any_curve else "\n(no per-epoch validation accuracy recorded)"),
                 fontsize=9)
    if any_curve:
        ax.legend(fontsize=8)
    save(fig, "val_acc_per_epoch.png")
    return names


# ----------------------------------------------------------------------------- entry
def write_report(out_dir, *, margin: float | None = None, plots: bool = True,
                 console: bool = True, file=None) -> dict:
    """Rebuild DIR's report from DIR/runs.jsonl (+ DIR/config.json); returns the summary."""
    out_dir = Path(out_dir)
    runs = out_dir / "runs.jsonl"
    if not runs.exists():
        raise ReportError(f"{runs} does not exist (run python -m parity.compare first)")
    records = read_records(runs)
    if not records:
        raise ReportError(f"{runs} holds no complete run records")
    cfg_path = out_dir / "config.json"
    config, state, foreign = None, {}, 0
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except ValueError:
            raise ReportError(f"{cfg_path} is not valid JSON; remove it to report from "
                              f"{runs} alone") from None
    try:
        state = json.loads((out_dir / "plan.json").read_text())
    except (OSError, ValueError):
        state = {}
    if config and config.get("config_hash"):
        from .compare import own_records  # noqa: PLC0415
        records, foreign = own_records(records, config)
        n_max = int(config.get("runs") or 0)
        if n_max:   # fewer --runs than recorded: the first N per side
            records = [r for r in records if int(r.get("seed", 0)) < n_max]
        if not records:
            raise ReportError(f"{runs} holds no records of this comparison ({foreign} foreign)")
    summary = summarize(records, config, margin, state=state, out_dir=out_dir, foreign=foreign)
    names = []
    if plots:
        try:
            names = make_plots(records, summary, out_dir)
        except ImportError as exc:
            summary["warnings"].append(f"no plots: {exc}")
    summary["plots"] = names
    write_json_atomic(out_dir / "report.json", summary)
    md = to_markdown(summary, names)
    atomic_write_bytes(out_dir / "report.md", lambda f: f.write(md.encode()))
    for name in ["report.json", "report.md", *names]:
        os.chmod(out_dir / name, 0o644)
    if console:
        print_terminal(summary, file=file)
        print(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}"
              + (f", plots {', '.join(names)}" if names else ""), file=file or sys.stdout)
    return summary
