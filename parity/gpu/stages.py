"""The measuring stages of `python -m parity.gpu_check` (its docstring says what each writes):
numerics (parity.numerics' checks), throughput (parity.bench) and runs (full runs of both
frameworks, alternating, until the budget would be exceeded)."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from airbench_common.files import write_json_atomic

RECIPE = "airbench94_muon"


def write_json(path: Path, obj) -> None:
    """A result file of OUT, whole or not at all (objects JSON does not know as their str)."""
    write_json_atomic(path, obj, indent=1, default=str)


def append_record(path: Path, rec: dict) -> None:
    """airbench_common.records.append_record when filelock is installed; otherwise the same line
    appended and fsynced without the lock (this command is the only writer of OUT)."""
    try:
        import filelock  # noqa: F401 (only whether it is there)
    except ImportError:
        from airbench_common.files import jsonable
        with open(path, "a") as f:
            f.write(json.dumps(jsonable(rec), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return
    from airbench_common.records import append_record as append
    append(path, rec)


def numerics(out: Path, dry: bool) -> dict:
    """parity.numerics for airbench94_muon in its setting (parity.numerics.setting): full width,
    batch 32; dry: width 1/16, batch 4, the native conv, forward/gradient/TTA rows only (the
    optimizer steps and lr schedules take minutes on a small CPU; they run in the real check)."""
    import jax
    import torch
    from ..numerics.checks import run_recipe_checks
    from ..numerics.rows import Report
    from ..numerics.setting import setup_precision
    from ..numerics.steps import check_newton_schulz
    setup_precision()
    width_scale = 1 / 16 if dry else 1.0
    try:
        rep = Report(meta=dict(recipe=RECIPE, width_scale=width_scale,
                               jax_device=str(jax.devices()[0]), torch_device="cpu",
                               dry_run=dry, setting="float32, TF32 off "
                               "(parity.numerics.setting.setup_precision)"))
        check_newton_schulz(rep)
        run_recipe_checks(rep, RECIPE, width_scale=width_scale, batch=4 if dry else 32,
                          data="auto", whiten_n=64 if dry else 5000, lrs=not dry,
                          steps=not dry, impls=("native",) if dry else ("native", "matmul"),
                          log=True)
    finally:  # back to the libraries' defaults for the timed stages (each sets its policy)
        jax.config.update("jax_default_matmul_precision", None)
        torch.use_deterministic_algorithms(False)
    rep.write(out / "numerics.json")
    (out / "numerics.txt").write_text(rep.table() + "\n")
    fails = rep.failures
    return dict(checks=len(rep.rows), failed=len(fails),
                failures=[f"{f.check} [{f.impl}]" for f in fails][:20],
                status="ok" if not fails else "failed")


def throughput(out: Path, batch: int, reps: int, steps: int, width_scale: float = 1.0) -> dict:
    """Train-step images/s of both frameworks on the GPU in its default precision policy, on
    synthetic images (parity.bench, whose result throughput.json is)."""
    from .. import args as A
    from ..bench import bench
    res = bench(A.check_recipe(RECIPE, width_scale), batch=batch, steps=steps, reps=reps,
                log=lambda _: None)
    res["torch_first_call_seconds"] = res["first_call_seconds"]["torch"]
    write_json(out / "throughput.json", res)
    return dict(status="ok", images_per_second=res["images_per_second"],
                ratio_jax_over_torch=res["ratio_jax_over_torch"],
                jax_compile_seconds=res["jax_compile_seconds"])


def runs(out: Path, deadline: float, train, test, data_ident: dict, overrides: dict,
         max_pairs: int, log=print) -> dict:
    """airbench94_muon runs, JAX then PyTorch per seed, each record appended as it ends, while
    the next pair is expected to end before `deadline` (from the slowest pair so far)."""
    from airbench_common.workload import RunOptions, get_workload
    workloads = {name: get_workload(name) for name in ("jax", "torch")}
    path = out / "runs.jsonl"
    first = next_seed(path)   # a later invocation (--stages runs) continues the seeds
    options = RunOptions(recipe=RECIPE, overrides=overrides, train_data=train, test_data=test,
                         eval_every_epoch=False)
    done, pair_seconds = {"jax": [], "torch": []}, []
    t0 = time.perf_counter()
    # first-call work, outside the runs
    workloads["torch"].warmup(RunOptions(recipe=RECIPE, overrides=overrides, test_data=test))
    warm = time.perf_counter() - t0
    for seed in range(first, first + max_pairs):
        if pair_seconds and time.time() + 1.2 * max(pair_seconds) > deadline:
            break
        tp = time.perf_counter()
        for name, workload in workloads.items():
            rec = workload.run(options, seed)
            rec["data"] = {**rec.get("data", {}), **data_ident,
                           "label": f"{data_ident.get('source')}"}
            rec["preset"] = "gpu_check"
            append_record(path, rec)
            done[name].append(dict(seed=seed, status=rec["status"], acc=rec["acc"],
                                   acc_tta=rec["acc_tta"], train_seconds=rec["train_seconds"],
                                   compile_seconds=rec.get("compile_seconds")))
            log(f"[gpu_check] {name} seed {seed}: {rec['status']} acc_tta {rec['acc_tta']} "
                f"train {rec['train_seconds']:.2f} s")
        pair_seconds.append(time.perf_counter() - tp)
    summary = {}
    for name, rs in done.items():
        ok = [x for x in rs if x["status"] == "ok"]
        accs = [x["acc_tta"] for x in ok]
        secs = [x["train_seconds"] for x in ok]
        comp = [x["compile_seconds"] for x in rs if x["compile_seconds"] is not None]
        summary[name] = dict(runs=len(rs), ok=len(ok), mean_acc_tta=mean(accs),
                             sd_acc_tta=statistics.stdev(accs) if len(accs) > 1 else None,
                             mean_train_seconds=mean(secs),
                             min_train_seconds=min(secs) if secs else None,
                             mean_compile_seconds=mean(comp))
    return dict(status="ok", records=str(path), torch_warmup_seconds=warm,
                pair_seconds=pair_seconds, per_side=summary)


def next_seed(path: Path) -> int:
    """One past the highest seed recorded in `path` (0 when there is none)."""
    seeds = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                seeds.append(int(json.loads(line)["seed"]))
            except (ValueError, KeyError, TypeError):
                continue   # a torn or foreign line
    return max(seeds) + 1 if seeds else 0


def mean(v):
    """The mean, None for no values."""
    return statistics.fmean(v) if v else None
