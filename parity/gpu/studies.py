"""The studies stage of `python -m parity.gpu_check`: `parity.compare` studies on all the data,
one per --study RECIPE:ARMS:RUNS, sharing the budget."""
from __future__ import annotations

import json
import time
from pathlib import Path


def parse_study(text: str) -> tuple[str, list[str], int]:
    """--study RECIPE:ARMS:RUNS (e.g. airbench94_muon:jax,torch,upstream:10) -> its parts."""
    from airbench_common.errors import UsageError
    from airbench_common.recipes import recipe_names
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(f"--study {text!r}: give RECIPE:ARMS:RUNS, e.g. "
                         "airbench94_muon:jax,torch,upstream:10")
    recipe, arms, runs = parts
    if recipe not in recipe_names():
        raise UsageError(f"--study {text!r}: unknown recipe {recipe!r}; one of "
                         f"{', '.join(recipe_names())}")
    arms = [a for a in arms.split(",") if a]
    bad = [a for a in arms if a not in ("jax", "torch", "upstream")]
    if bad or not arms or len(set(arms)) != len(arms):
        raise UsageError(f"--study {text!r}: arms are jax, torch, upstream, each once")
    if not runs.isdigit() or not 1 <= int(runs) <= 200:
        raise UsageError(f"--study {text!r}: RUNS {runs!r} must be a whole number in 1..200 "
                         "(runs per arm)")
    return recipe, arms, int(runs)


def studies(out: Path, deadline: float, specs, *, data_dir, upstream_dir, commit, dry_run,
            log=print) -> dict:
    """Each (recipe, arms, runs) as a parity.compare study on all the data (preset full; smoke in
    a dry run) into OUT/compare-<recipe>/, its wall-time cap the budget left shared among the
    studies still to come; the data's identity checked first (the decoded JPEG CIFAR-10's sha256,
    airbench_common.data)."""
    from airbench_common.data import dataset_label, load_cifar10
    from ..study import compare
    from ..study.upstream import SCRIPT_RECIPES
    label = dataset_label(data_dir)
    n = dict(train=len(load_cifar10("train", data_dir)[0]), test=len(load_cifar10("test",
                                                                                 data_dir)[0]))
    res = dict(status="ok", data=dict(dir=str(data_dir), label=label, **n), commit=commit,
               studies={})
    if label != "JPEG CIFAR-10" and not dry_run:
        res["warning"] = f"the data is {label!r}, not the known JPEG CIFAR-10 pixels"
    for i, (recipe, arms, runs) in enumerate(specs):
        left = (deadline - time.time()) / 60
        share = 0.9 * left / (len(specs) - i)     # a tenth kept for the reports
        if share < 1.0:
            res["studies"][recipe] = dict(status="left out: the budget was spent")
            continue
        folder = out / f"compare-{recipe}"
        argv = ["--recipe", recipe, "--preset", "smoke" if dry_run else "full",
                "--runs", str(min(runs, 3) if dry_run else runs), "--frameworks",
                ",".join(arms), "--out", str(folder), "--data-dir", str(data_dir),
                "--wall-minutes", f"{share:.2f}", "--no-progress"]
        if "upstream" in arms and recipe in SCRIPT_RECIPES:
            if upstream_dir is None:
                res["studies"][recipe] = dict(status="error: --upstream-dir not given")
                continue
            argv += ["--upstream-script", str(Path(upstream_dir) / f"{recipe}.py")]
        log(f"[gpu_check] study {recipe} ({','.join(arms)}, at most {runs} runs per arm, "
            f"{share:.1f} min)")
        code = compare.main(argv)
        try:
            rep = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError):
            rep = {}
        res["studies"][recipe] = dict(
            status="ok" if code == 0 else f"exit status {code}", verdict=rep.get("verdict"),
            pairs=[{k: p.get(k) for k in ("a", "b", "decision", "reason")}
                   for p in rep.get("pairs") or []],
            per_framework={fw: dict(runs=rep["counts"][fw]["ok"],
                                    acc_tta=v["acc_tta"].get("mean"),
                                    acc_tta_sd=v["acc_tta"].get("std"),
                                    median_time_seconds=(v.get("time_seconds") or {}).get(
                                        "median"))
                           for fw, v in (rep.get("per_framework") or {}).items()})
        if commit:
            (folder / "COMMIT").write_text(commit + "\n")
    if any(v["status"] != "ok" for v in res["studies"].values()):
        res["status"] = "failed"
    return res
