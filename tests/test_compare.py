"""python -m parity.compare end to end with fake workloads (fast), plus one smoke run with the
real implementations when they and the data are available."""
import importlib
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from deliver import deliver

from airbench_common.workload import Workload
from airbench_common.records import make_record, read_records
from parity.study import compare


@pytest.fixture()
def data_dir(tmp_path):
    """A tiny stand-in for CIFAR-10 (first 2000 train / 1000 test suffice for the smoke preset)."""
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("test", 1000)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    (d / "SOURCE.md").write_text("# CIFAR-10, JPEG-derived test copy\n")
    return d


class FakeRunner(Workload):
    """A fake workload: deterministic fake accuracies/timings; raises on call number `fail_on` (1-based, counted
    over all frameworks sharing `calls`); diverges for the seeds in `diverge`."""

    def __init__(self, framework, calls, *, shift=0.0, fail_on=None, diverge=(), noise=0.002,
                 ctrl_c=None):
        self.framework, self.calls, self.shift, self.noise = framework, calls, shift, noise
        self.fail_on, self.diverge = fail_on, set(diverge)
        self.ctrl_c = ctrl_c   # (seed, how): a Ctrl-C during that run, "wrapped" or "swallowed"
        self.warmups = 0

    def warmup(self, options):
        self.calls.append((self.framework, "warmup"))
        self.warmups += 1

    def run(self, options, seed):
        recipe, overrides = options.recipe, options.overrides
        train_data, test_data = options.train_data, options.test_data
        n_runs = sum(1 for c in self.calls if c[1] != "warmup")
        if self.fail_on is not None and n_runs + 1 == self.fail_on:
            self.calls.append((self.framework, "failed", seed))
            raise RuntimeError("simulated kill\nsecond line")
        self.calls.append((self.framework, seed))
        if self.ctrl_c is not None and self.ctrl_c[0] == seed:
            _ctrl_c_inside_a_library(self.ctrl_c[1])
        assert train_data[0].shape[1:] == (32, 32, 3)
        start = time.process_time()
        while time.process_time() - start < 0.02:   # some CPU work, for the records' cpu_seconds
            pass
        diverged = seed in self.diverge
        acc = None if diverged else 0.90 + self.noise * math.sin(seed * 1.7) + self.shift
        labels = np.asarray(test_data[1])
        preds = labels.astype(np.uint8).copy()
        preds[seed % 7::10] = (preds[seed % 7::10] + 1) % 10   # 10% wrong, varying by seed
        rec = make_record(
            recipe=recipe, overrides=overrides or {}, seed=seed, framework=self.framework,
            versions={"fake": "1"}, device="cpu", dtype="float32", flags={},
            acc=acc, acc_tta=None if diverged else acc + 0.001, tta_level=2,
            train_seconds=1.0 + 0.01 * seed + (0.5 if self.framework == "jax" else 0),
            eval_seconds=0.1, steps=4, status="diverged" if diverged else "ok",
            ns_dtype="float32", compile_seconds=0.3 if self.framework == "jax" else None,
            per_epoch=[{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3,
                        "val_acc": acc, "seconds": 1.0}],
            data=dict(options.data),
            error="loss became nan" if diverged else None)
        rec["_predictions"] = preds
        return rec


def _ctrl_c_inside_a_library(how):
    """A real SIGINT landing in library code that re-raises it as its own error ("wrapped", as
    JAX's pytree comparison does) or drops it and goes on ("swallowed")."""
    try:
        deliver(signal.SIGINT)
    except KeyboardInterrupt as exc:
        if how == "wrapped":
            raise ValueError("Exception raised while checking equality") from exc


def fakes(**kw):
    calls = []
    per = {fw: kw.pop(fw, {}) for fw in ("jax", "torch")}
    return calls, {fw: FakeRunner(fw, calls, **{**kw, **per[fw]}) for fw in ("jax", "torch")}


def argv(out, data_dir, *extra, runs=4):
    return ["--recipe", "airbench94_muon", "--preset", "smoke", "--runs", str(runs), "--out",
            str(out), "--data-dir", str(data_dir), "--no-progress", *extra]


@pytest.mark.parametrize("how", ["wrapped", "swallowed"])
def test_ctrl_c_inside_a_library_still_stops_the_study(how, tmp_path, data_dir, capsys, ctrl_c):
    """Ctrl-C during torch seed 1 that library code wrapped or swallowed: exit 130, that run is not
    stored, the finished ones are, and the same command resumes after it."""
    calls, runners = fakes(torch=dict(ctrl_c=(1, how)))
    out = tmp_path / "cmp"
    assert compare.main(argv(out, data_dir, runs=3), workloads=runners) == 130
    assert "interrupted; finished runs are in" in capsys.readouterr().err
    assert sorted((r["framework"], r["seed"]) for r in read_records(out / "runs.jsonl")) == [
        ("jax", 0), ("jax", 1), ("torch", 0)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    calls, runners = fakes()
    assert compare.main(argv(out, data_dir, runs=3), workloads=runners) == 0
    assert [c for c in calls if c[1] != "warmup"][0] == ("torch", 1)   # resumed where it stopped


def test_alternating_order_warmup_and_outputs(tmp_path, data_dir, capsys):
    calls, runners = fakes()
    out = tmp_path / "cmp"
    assert compare.main(argv(out, data_dir), workloads=runners) == 0
    assert calls[:2] == [("jax", "warmup"), ("torch", "warmup")]
    # identical accuracies: the first look (3 runs per side) decides "equivalent"; no 4th pair
    assert calls[2:] == [(fw, s) for s in range(3) for fw in ("jax", "torch")]
    recs = read_records(out / "runs.jsonl")
    assert len(recs) == 6
    assert all(r["preset"] == "smoke" and r["data"]["label"] == "JPEG CIFAR-10" for r in recs)
    assert all(r["data"]["n_train"] == 2000 and r["data"]["n_test"] == 1000 for r in recs)
    assert all(r["written_by"] == "parity.compare" and r["wall_seconds"] >= 0 for r in recs)
    assert all(0.02 <= r["cpu_seconds"] < 5 for r in recs)   # the runner's CPU time is recorded
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"] == "airbench94_muon" and cfg["preset"] == "smoke"
    assert cfg["overrides"]["widths"] == [16, 32, 32] and cfg["margin"] == 0.5
    assert cfg["data_label"] == "JPEG CIFAR-10" and cfg["frameworks"] == ["jax", "torch"]
    assert set(cfg["data_identity"]) == {"train_sha256", "test_images_sha256",
                                         "test_labels_sha256"}
    assert all(r["compare_config"] == cfg["config_hash"] for r in recs)
    # per-example predictions beside the records, uint8, one per test image
    for r in recs:
        p = np.load(out / r["predictions"])
        assert p.dtype == np.uint8 and p.shape == (1000,)
    for name in ("report.md", "report.json", "accuracy_ecdf.png", "time_per_run.png",
                 "val_acc_per_epoch.png"):
        assert (out / name).exists(), name
        assert (out / name).stat().st_mode & 0o777 == 0o644
    rep = json.loads((out / "report.json").read_text())
    assert rep["title"] == "airbench94_muon | preset smoke | JPEG CIFAR-10"
    assert rep["verdict"] == "equivalent" and rep["sequential"]["n"] == 3
    assert rep["comparison"]["acc"]["diff"] == 0  # identical fake accuracies on both sides
    assert rep["comparison"]["train_seconds"]["ratio"] > 1
    assert rep["per_example"]["agreement"]["msd"] == 0   # same fake predictions on both sides
    assert {s["test"].split(" (")[0] for s in rep["secondary"]} >= {
        "Welch t-test", "Mann-Whitney U", "Kolmogorov-Smirnov"}
    md = (out / "report.md").read_text()
    first = md.splitlines()[2:8]
    assert first[0].startswith("**Verdict: EQUIVALENT**")
    assert first[1].startswith("- margin: +/-0.5") and first[1].endswith("(fixed in advance by "
                                                                          "the preset)")
    assert first[2] == "- data: JPEG CIFAR-10, 2000 training / 1000 test images as run"
    assert first[3].startswith("- runs: 3 per side")
    assert first[4].startswith("- minutes:") and "GPU" in first[5]
    assert "Holm" in md and "Per-example parity" in md
    assert "JPEG CIFAR-10" in capsys.readouterr().out


def test_default_recipe_is_airbench94_muon(tmp_path, data_dir):
    _, runners = fakes()
    out = tmp_path / "cmp"
    args = ["--preset", "smoke", "--out", str(out), "--data-dir", str(data_dir), "--no-progress",
            "--no-plots"]
    assert compare.main(args, workloads=runners) == 0
    assert json.loads((out / "config.json").read_text())["recipe"] == "airbench94_muon"


def test_resume_after_kill_no_duplicates_nothing_lost(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    calls, runners = fakes(fail_on=4)   # jax0, torch0, jax1 finish; torch1 "dies"
    assert compare.main(argv(out, data_dir), workloads=runners) == 1
    err = capsys.readouterr().err
    assert "torch seed 1 failed: RuntimeError: simulated kill second line" in err
    first = read_records(out / "runs.jsonl")
    assert [(r["framework"], r["seed"]) for r in first] == [("jax", 0), ("torch", 0), ("jax", 1)]
    # resume: the same command again continues with torch seed 1 and decides at 3 pairs
    calls, runners = fakes()
    assert compare.main(argv(out, data_dir), workloads=runners) == 0
    assert [c for c in calls if c[1] != "warmup"] == [("torch", 1), ("jax", 2), ("torch", 2)]
    recs = read_records(out / "runs.jsonl")
    assert recs[:3] == first
    pairs = [(r["framework"], r["seed"]) for r in recs]
    assert len(pairs) == len(set(pairs)) == 6
    # decided: --resume with only --out (and a larger N) runs nothing, warms nothing up
    calls, runners = fakes()
    assert compare.main(["--resume", "--out", str(out), "--runs", "5", "--no-progress"],
                        workloads=runners) == 0
    assert calls == []


def test_undecided_study_continues_and_fewer_runs_reports_first_n(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    calls, runners = fakes(noise=0.02, jax={"shift": 0.004})   # 2-point spread: no decision
    assert compare.main(argv(out, data_dir, runs=5), workloads=runners) == 0
    assert len([c for c in calls if c[1] != "warmup"]) == 10      # ran to the cap N = 5
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "inconclusive" and rep["sequential"]["n"] == 5
    assert "runs per side" in rep["sequential"]["reason"]
    # --resume with fewer runs reports the first 3 per side, runs nothing
    calls, runners = fakes()
    assert compare.main(["--resume", "--out", str(out), "--runs", "3", "--no-progress",
                         "--no-plots"], workloads=runners) == 0
    assert calls == []
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["jax"]["total"] == 3 and rep["counts"]["torch"]["total"] == 3
    assert len(read_records(out / "runs.jsonl")) == 10            # nothing deleted


def test_config_mismatch_is_a_one_line_error(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, runs=3), workloads=runners) == 0
    capsys.readouterr()
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--set", "epochs=2", runs=3), workloads=runners) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "epochs" in err and "another --out" in err
    _, runners = fakes()
    rc = compare.main(["--recipe", "airbench94", "--preset", "smoke", "--runs", "2", "--out",
                       str(out), "--data-dir", str(data_dir), "--no-progress"], workloads=runners)
    assert rc == 2 and "another --out" in capsys.readouterr().err
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--margin", "0.3", runs=3), workloads=runners) == 2
    assert "margin" in capsys.readouterr().err
    # other data (one test label changed) is another study: refused, naming the field
    with np.load(data_dir / "test.npz") as z:
        images, labels = z["images"], z["labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    np.savez(data_dir / "test.npz", images=images, labels=labels)
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, runs=3), workloads=runners) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data_identity" in err and "test_labels_sha256" in err


@pytest.mark.parametrize("bad", [["--runs", "0"], ["--runs", "-3"], ["--runs", "x"],
                                 ["--margin", "inf"], ["--margin", "nan"], ["--margin", "0"],
                                 ["--margin", "-1"]])
def test_bad_runs_and_margin_are_one_line_errors(tmp_path, data_dir, capsys, bad):
    calls, runners = fakes()
    args = ["--preset", "smoke", "--out", str(tmp_path / "o"), "--data-dir", str(data_dir),
            "--no-progress", *bad]
    assert compare.main(args, workloads=runners) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and err.count("\n") == 0 and bad[0] in err
    assert "Traceback" not in err and calls == []


def test_report_margin_is_checked(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--no-plots", runs=3), workloads=runners) == 0
    for bad in ("nan", "-1", "inf"):
        assert compare.main(["--report", str(out), "--margin", bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_second_compare_on_same_out_exits_naming_the_holder(tmp_path, data_dir, capsys):
    from filelock import FileLock
    out = tmp_path / "cmp"
    out.mkdir()
    held = FileLock(str(out / "runs.jsonl.lock"))
    held.acquire()
    (out / "runs.jsonl.lock.pid").write_text("4242\n")
    try:
        calls, runners = fakes()
        assert compare.main(argv(out, data_dir), workloads=runners) == 2
        err = capsys.readouterr().err.strip()
        assert "pid 4242" in err and err.count("\n") == 0 and calls == []
    finally:
        held.release()
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--no-plots"), workloads=runners) == 0


def test_foreign_records_are_counted_not_mixed_in(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--no-plots", runs=3), workloads=runners) == 0
    own = read_records(out / "runs.jsonl")
    from airbench_common.records import append_record
    plain = dict(own[0], seed=7, acc_tta=0.1)          # as the plain CLI writes: no compare tags
    plain.pop("written_by")
    other = dict(own[1], seed=8, compare_config="0" * 16)   # another configuration
    append_record(out / "runs.jsonl", plain)
    append_record(out / "runs.jsonl", other)
    capsys.readouterr()
    assert compare.main(["--report", str(out), "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["jax"]["total"] == 3 and rep["counts"]["torch"]["total"] == 3
    assert any("2 record(s)" in w for w in rep["warnings"])


def test_wall_time_cap_ends_inconclusive(tmp_path, data_dir, monkeypatch):
    import dataclasses
    from parity.study import presets
    monkeypatch.setitem(presets.PRESETS, "smoke",
                        dataclasses.replace(presets.PRESETS["smoke"], wall_minutes=1e-9))
    calls, runners = fakes()
    out = tmp_path / "cmp"
    assert compare.main(argv(out, data_dir, "--no-plots"), workloads=runners) == 0
    assert [c for c in calls if c[1] != "warmup"] == []      # the warm-ups used the budget
    state = json.loads((out / "plan.json").read_text())
    assert state["final_n"] == 0 and "cap" in state["stop_reason"]


def test_diverged_runs_are_recorded_and_counted(tmp_path, data_dir):
    out = tmp_path / "cmp"
    _, runners = fakes(torch={"diverge": {1}})
    assert compare.main(argv(out, data_dir, runs=3), workloads=runners) == 0
    recs = read_records(out / "runs.jsonl")
    assert sum(r["status"] == "diverged" for r in recs) == 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["torch"] == {"total": 3, "ok": 2, "diverged": 1, "other": 0,
                                      "diverged_seeds": [1]}
    assert rep["comparison"]["acc"]["n_b"] == 2 and rep["comparison"]["acc"]["n_a"] == 3
    assert any("diverged" in w for w in rep["warnings"])
    assert "1 diverged" in (out / "report.md").read_text()


def test_different_divergence_rates_make_the_verdict_different(tmp_path, data_dir):
    out = tmp_path / "cmp"
    _, runners = fakes(torch={"diverge": set(range(20))})
    assert compare.main(argv(out, data_dir, "--no-plots", runs=12), workloads=runners) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "different" and "Fisher" in rep["sequential"]["reason"]


def test_report_rebuilds_from_runs_file_alone(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes(jax={"shift": 0.01})   # jax one point better, margin 0.5: "different"
    assert compare.main(argv(out, data_dir, runs=8), workloads=runners) == 0
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "runs.jsonl", lone / "runs.jsonl")
    capsys.readouterr()
    assert compare.main(["--report", str(lone)]) == 0
    text = capsys.readouterr().out
    assert "DIFFERENT" in text and "preset smoke" in text and "JPEG CIFAR-10" in text
    rep = json.loads((lone / "report.json").read_text())
    assert rep["verdict"] == "different"
    assert rep["comparison"]["acc"]["diff"] == pytest.approx(1.0)
    assert rep["preset"] == "smoke" and rep["data"]["label"] == "JPEG CIFAR-10"
    assert (lone / "report.md").exists() and (lone / "accuracy_ecdf.png").exists()
    # a torn final line (killed mid-write) is skipped, not fatal
    with open(lone / "runs.jsonl", "a") as f:
        f.write('{"schema": 1, "recipe": "airb')
    with pytest.warns(UserWarning):
        assert compare.main(["--report", str(lone), "--no-plots"]) == 0
    assert compare.main(["--report", str(tmp_path / "missing")]) == 2


def test_single_framework_and_bad_arguments(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    calls, runners = fakes()
    assert compare.main(argv(out, data_dir, "--frameworks", "torch", runs=2),
                        workloads={"torch": runners["torch"]}) == 0
    assert {c[0] for c in calls} == {"torch"}
    assert len([c for c in calls if c[1] != "warmup"]) == 2
    rep = json.loads((out / "report.json").read_text())
    assert rep["comparison"] is None
    assert compare.main(argv(tmp_path / "x", data_dir, "--set", "nonsense=1")) == 2
    assert "nonsense" in capsys.readouterr().err
    assert compare.main(argv(tmp_path / "y", data_dir, "--frameworks", "mxnet")) == 2


def test_progress_text_shows_estimate_and_distance():
    from parity.study import plan
    out = plan.decide([90.0, 90.2, 89.9, 90.1], [90.1, 89.8, 90.0, 90.2], plan.Plan(0.5, 10))
    from parity.study.local import progress_text
    text = progress_text(out, 125.0, 1800)
    assert "2.1/30 min" in text and "d " in text and "TOST p" in text and "needs <" in text


def test_presets_are_documented_and_valid():
    from airbench_common.recipes import RECIPES, get_recipe
    from parity.study.presets import PRESETS
    for p in PRESETS.values():
        assert p.description and p.label()
        for name in RECIPES:
            r = get_recipe(name, **p.recipe_overrides(name))
            if p.n_train:
                assert r.steps_per_epoch(p.n_train) >= 1 and r.whiten_images <= p.n_train
    assert not PRESETS["smoke"].trains and "NOT" in PRESETS["smoke"].label()


# ------------------------------------------------------------------ real implementations
def _real_runners_or_skip():
    if not os.environ.get("AIRBENCH_DATA"):
        pytest.skip("AIRBENCH_DATA is unset (e.g. AIRBENCH_DATA=/work/shared/data/cifar10-jpeg)")
    for mod in ("airbench_torch", "airbench_jax"):
        try:
            m = importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"{mod} cannot be imported: {type(exc).__name__}: {exc}")
        if not callable(getattr(m, "run_recipe", None)):
            pytest.skip(f"{mod} has no run_recipe yet")


@pytest.mark.slow
def test_smoke_preset_with_real_runners(tmp_path, capsys):
    _real_runners_or_skip()
    out = tmp_path / "real"
    rc = compare.main(["--recipe", "airbench94_muon", "--preset", "smoke", "--runs", "2",
                       "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    recs = read_records(out / "runs.jsonl")
    assert sorted((r["framework"], r["seed"]) for r in recs) == \
        [("jax", 0), ("jax", 1), ("torch", 0), ("torch", 1)]
    for r in recs:
        assert r["status"] in ("ok", "diverged") and r["preset"] == "smoke"
        if r["status"] == "ok":
            assert 0 <= r["acc"] <= 1 and r["train_seconds"] > 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["comparison"]["verdict"] in ("equivalent", "different", "inconclusive")


def test_module_entry_point_help():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "parity.compare", "--help"], capture_output=True,
                       text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and "--resume" in r.stdout and "--margin" in r.stdout


def test_vmapped_runs_stay_out_of_the_training_time_ratio():
    """A vmapped JAX record's train_seconds is its group's time: the report leaves it out of the
    per-run training times and the JAX/PyTorch ratio and shows the per-seed share apart."""
    from parity.study import summary
    recs = []
    for seed in range(4):
        for fw, secs in (("jax", 10.0), ("torch", 20.0)):
            recs.append(make_record(
                recipe="airbench94_muon", overrides={}, seed=seed, framework=fw, versions={},
                device="cpu", dtype="float32", flags={}, acc=0.9, acc_tta=0.9 + 0.001 * seed,
                tta_level=2, train_seconds=secs, eval_seconds=1.0, steps=4))
    vm = dict(recs[0], seed=9, train_seconds=400.0,       # a group of 4: 100 s each
              vmapped=dict(group_size=4, seeds=[9, 10, 11, 12], group_train_seconds=400.0,
                           per_seed_train_seconds=100.0))
    s = summary.summarize(recs + [vm], dict(recipe="airbench94_muon", frameworks=["jax", "torch"]),
                         margin=0.5)
    assert s["per_framework"]["jax"]["train_seconds"]["n"] == 4
    assert s["per_framework"]["jax"]["train_seconds"]["max"] == 10.0
    assert s["comparison"]["train_seconds"]["ratio"] == 0.5
    assert s["per_framework"]["jax"]["vmapped"]["per_seed_train_seconds"]["median"] == 100.0
    assert s["comparison"]["eval_seconds"]["a"]["n"] == 5    # evaluation is per seed anyway
    assert any("vmapped" in w for w in s["warnings"])
