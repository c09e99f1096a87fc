"""The comparison's report, rebuilt from its folder alone (parity.study.store: the runs file,
plus config.json and the plan's state if present): a terminal table, report.md, report.json and
the PNG plots (parity.study.plots), from the summary of parity.study.summary.

Accuracies are reported in percentage points; the TOST margin is in points as well.
"""
from __future__ import annotations

import json
import sys

from .errors import ReportError
from .examples import per_example_md
from .fmt import fmt, md_table, p_value, plain_table
from .plots import make_plots
from .store import RunFolder
from .summary import summarize


def _rows_accuracy(summary):
    rows = []
    for fw in summary["frameworks"]:
        c = summary["counts"][fw]
        for key, name in (("acc_tta", "acc TTA"), ("acc", "acc")):
            d = summary["per_framework"][fw][key]
            rows.append([fw, name, str(c["ok"]), str(c["diverged"]), fmt(d["mean"]),
                         fmt(d["std"]), fmt(d["min"]), fmt(d["max"]),
                         f"[{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]"])
    return ["framework", "metric", "n ok", "diverged", "mean %", "std", "min", "max",
            "95% CI (bootstrap)"], rows


def _rows_tests(summary):
    c = summary["comparison"]
    rows = []
    for key, name in (("acc_tta", "acc TTA"), ("acc", "acc")):
        s = c[key]
        rows.append([name, f"{fmt(s['diff'], '+.3f')}",
                     f"[{fmt(s['diff_ci_low'], '+.3f')}, {fmt(s['diff_ci_high'], '+.3f')}]",
                     p_value(s["welch_p"]), p_value(s["tost_p"]), p_value(s["mannwhitney_p"]), p_value(s["ks_p"]),
                     s["verdict"], fmt(s["runs_needed"], ".0f")])
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
            rows.append([fw, key.replace("_seconds", ""), str(d["n"]), fmt(d["median"], ".2f"),
                         f"[{fmt(d['q25'], '.2f')}, {fmt(d['q75'], '.2f')}]",
                         fmt(d["min"], ".2f"), fmt(d["max"], ".2f")])
    return ["framework", "time", "n", "median s", "IQR", "min", "max"], rows


def _rows_ratio(summary):
    c = summary["comparison"]
    rows = []
    for key in ("time_seconds", "train_seconds", "eval_seconds"):
        s = c.get(key)
        if s is None:
            continue
        rows.append([key.replace("_seconds", ""), fmt(s["ratio"], ".3f"),
                     f"[{fmt(s['ratio_ci_low'], '.3f')}, {fmt(s['ratio_ci_high'], '.3f')}]"])
    return ["time", f"median ratio {c['ratio']}", "95% CI (bootstrap)"], rows




def _rows_pairs(summary):
    rows = []
    for p in summary.get("pairs") or []:
        acc, tim = p["acc_tta"], p["time_seconds"]
        rows.append([f"{p['a']} vs {p['b']}", str(p.get("decision")),
                     fmt(acc["diff"], "+.3f"),
                     f"[{fmt(acc['diff_ci_low'], '+.3f')}, {fmt(acc['diff_ci_high'], '+.3f')}]",
                     fmt(tim["ratio"], ".3f"),
                     f"[{fmt(tim['ratio_ci_low'], '.3f')}, {fmt(tim['ratio_ci_high'], '.3f')}]"])
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
        print(f"\n{title}\n{plain_table(header, rows)}", file=file)
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
    rows = [[r["test"], p_value(r["p"]), p_value(r.get("p_holm"))] for r in summary.get("secondary") or []]
    return ["secondary test", "p", "p (Holm-adjusted, this family)"], rows




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
        out += ["", f"## {title}", "", md_table(header, rows)]
    if summary.get("secondary"):
        out += ["", "## Secondary tests (Holm-corrected; they do not change the verdict)", "",
                md_table(*_rows_secondary(summary))]
    out += per_example_md(summary)
    out += ["", "## Method", "",
            "Primary: the group-sequential plan of `parity.study.plan` (runs added in pairs; at each "
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


# ----------------------------------------------------------------------------- entry
def write_report(out_dir, *, margin: float | None = None, plots: bool = True,
                 console: bool = True, file=None) -> dict:
    """Rebuild DIR's report from DIR/runs.jsonl (+ DIR/config.json); returns the summary."""
    folder = RunFolder(out_dir)
    runs = folder.runs_file
    if not runs.exists():
        raise ReportError(f"{runs} does not exist (run python -m parity.compare first)")
    records = folder.records()
    if not records:
        raise ReportError(f"{runs} holds no complete run records")
    config = folder.read_config(advice=f"remove it to report from {runs} alone")
    foreign = 0
    if config and config.get("config_hash"):
        records, foreign = folder.study_records(config)
        n_max = int(config.get("runs") or 0)
        if n_max:   # fewer --runs than recorded: the first N per side
            records = [r for r in records if int(r.get("seed", 0)) < n_max]
        if not records:
            raise ReportError(f"{runs} holds no records of this comparison ({foreign} foreign)")
    summary = summarize(records, config, margin, state=folder.read_state(), out_dir=folder.root,
                        foreign=foreign)
    names = []
    if plots:
        try:
            names = make_plots(records, summary, folder)
        except ImportError as exc:
            summary["warnings"].append(f"no plots: {exc}")
    summary["plots"] = names
    folder.write_report(summary, to_markdown(summary, names))
    if console:
        print_terminal(summary, file=file)
        md, js = folder.report_files
        print(f"report: {md}, {js}" + (f", plots {', '.join(names)}" if names else ""),
              file=file or sys.stdout)
    return summary
