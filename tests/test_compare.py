"""python -m parity.compare end to end with fake runners (fast), plus one smoke run with the
real implementations when they and the data are available."""
import importlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from airbench_common.records import make_record, read_records
from parity import compare, report


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


class FakeRunner:
    """Deterministic fake accuracies/timings; raises on call number `fail_on` (1-based, counted
    over all frameworks sharing `calls`); diverges for the seeds in `diverge`."""

    def __init__(self, framework, calls, *, shift=0.0, fail_on=None, diverge=()):
        self.framework, self.calls, self.shift = framework, calls, shift
        self.fail_on, self.diverge = fail_on, set(diverge)
        self.warmups = 0

    def warmup(self, recipe, **kw):
        self.calls.append((self.framework, "warmup"))
        self.warmups += 1

    def __call__(self, recipe, seed, *, overrides=None, train_data=None, test_data=None,
                 data_dir=None, verbose=False, log=print, **kw):
        n_runs = sum(1 for c in self.calls if c[1] != "warmup")
        if self.fail_on is not None and n_runs + 1 == self.fail_on:
            self.calls.append((self.framework, "failed", seed))
            raise RuntimeError("simulated kill\nsecond line")
        self.calls.append((self.framework, seed))
        assert train_data[0].shape[1:] == (32, 32, 3)
        diverged = seed in self.diverge
        acc = None if diverged else 0.90 + 0.002 * math.sin(seed * 1.7) + self.shift
        return make_record(
            recipe=recipe, overrides=overrides or {}, seed=seed, framework=self.framework,
            versions={"fake": "1"}, device="cpu", dtype="float32", flags={},
            acc=acc, acc_tta=None if diverged else acc + 0.001, tta_level=2,
            train_seconds=1.0 + 0.01 * seed + (0.5 if self.framework == "jax" else 0),
            eval_seconds=0.1, steps=4, status="diverged" if diverged else "ok",
            ns_dtype="float32", compile_seconds=0.3 if self.framework == "jax" else None,
            per_epoch=[{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3,
                        "val_acc": acc, "seconds": 1.0}],
            data={"label": "?", "dir": None, "n_train": len(train_data[0]),
                  "n_test": len(test_data[0])},
            error="loss became nan" if diverged else None)


def fakes(**kw):
    calls = []
    per = {fw: kw.pop(fw, {}) for fw in ("jax", "torch")}
    return calls, {fw: FakeRunner(fw, calls, **{**kw, **per[fw]}) for fw in ("jax", "torch")}


def argv(out, data_dir, *extra, runs=4):
    return ["--recipe", "airbench94_muon", "--preset", "smoke", "--runs", str(runs), "--out",
            str(out), "--data-dir", str(data_dir), "--no-progress", *extra]


def test_alternating_order_warmup_and_outputs(tmp_path, data_dir, capsys):
    calls, runners = fakes()
    out = tmp_path / "cmp"
    assert compare.main(argv(out, data_dir), runners=runners) == 0
    assert calls[:2] == [("jax", "warmup"), ("torch", "warmup")]
    assert calls[2:] == [(fw, s) for s in range(4) for fw in ("jax", "torch")]
    recs = read_records(out / "runs.jsonl")
    assert len(recs) == 8
    assert all(r["preset"] == "smoke" and r["data"]["label"] == "JPEG CIFAR-10" for r in recs)
    assert all(r["data"]["n_train"] == 2000 and r["data"]["n_test"] == 1000 for r in recs)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["recipe"] == "airbench94_muon" and cfg["preset"] == "smoke"
    assert cfg["overrides"]["widths"] == [16, 32, 32] and cfg["margin"] == 0.1
    assert cfg["data_label"] == "JPEG CIFAR-10" and cfg["frameworks"] == ["jax", "torch"]
    for name in ("report.md", "report.json", "accuracy_ecdf.png", "time_per_run.png",
                 "val_acc_per_epoch.png"):
        assert (out / name).exists(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep["title"] == "airbench94_muon | preset smoke | JPEG CIFAR-10"
    assert rep["comparison"]["acc"]["diff"] == 0  # identical fake accuracies on both sides
    assert rep["comparison"]["verdict"] in ("equivalent", "inconclusive")
    assert rep["comparison"]["train_seconds"]["ratio"] > 1
    md = (out / "report.md").read_text()
    assert "preset smoke" in md and "JPEG CIFAR-10" in md
    assert "JPEG CIFAR-10" in capsys.readouterr().out


def test_resume_after_kill_no_duplicates_nothing_lost(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    calls, runners = fakes(fail_on=4)   # jax0, torch0, jax1 finish; torch1 "dies"
    assert compare.main(argv(out, data_dir), runners=runners) == 1
    err = capsys.readouterr().err
    assert "torch seed 1 failed: RuntimeError: simulated kill second line" in err
    first = read_records(out / "runs.jsonl")
    assert [(r["framework"], r["seed"]) for r in first] == [("jax", 0), ("torch", 0), ("jax", 1)]
    # resume: the same command again; then --resume with only --out and a larger N
    calls, runners = fakes()
    assert compare.main(argv(out, data_dir), runners=runners) == 0
    assert ("jax", 0) not in calls and ("torch", 1) in calls
    recs = read_records(out / "runs.jsonl")
    assert recs[:3] == first
    pairs = [(r["framework"], r["seed"]) for r in recs]
    assert len(pairs) == len(set(pairs)) == 8
    calls, runners = fakes()
    assert compare.main(["--resume", "--out", str(out), "--runs", "5", "--no-progress"],
                        runners=runners) == 0
    assert [c for c in calls if c[1] != "warmup"] == [("jax", 4), ("torch", 4)]
    assert len(read_records(out / "runs.jsonl")) == 10
    # nothing left to do: no warm-up, no runs
    calls, runners = fakes()
    assert compare.main(["--resume", "--out", str(out), "--no-progress"], runners=runners) == 0
    assert calls == []


def test_config_mismatch_is_a_one_line_error(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, runs=2), runners=runners) == 0
    capsys.readouterr()
    _, runners = fakes()
    assert compare.main(argv(out, data_dir, "--set", "epochs=2", runs=2), runners=runners) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "epochs" in err and "another --out" in err
    _, runners = fakes()
    rc = compare.main(["--recipe", "airbench94", "--preset", "smoke", "--runs", "2", "--out",
                       str(out), "--data-dir", str(data_dir), "--no-progress"], runners=runners)
    assert rc == 2 and "another --out" in capsys.readouterr().err


def test_diverged_runs_are_recorded_and_counted(tmp_path, data_dir):
    out = tmp_path / "cmp"
    _, runners = fakes(torch={"diverge": {1}})
    assert compare.main(argv(out, data_dir), runners=runners) == 0
    recs = read_records(out / "runs.jsonl")
    assert sum(r["status"] == "diverged" for r in recs) == 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["torch"] == {"total": 4, "ok": 3, "diverged": 1, "other": 0,
                                      "diverged_seeds": [1]}
    assert rep["comparison"]["acc"]["n_b"] == 3 and rep["comparison"]["acc"]["n_a"] == 4
    assert any("diverged" in w for w in rep["warnings"])
    assert "1 diverged" in (out / "report.md").read_text()


def test_report_rebuilds_from_runs_file_alone(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    _, runners = fakes(jax={"shift": 0.01})   # jax one point better: "different"
    assert compare.main(argv(out, data_dir, runs=6), runners=runners) == 0
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "runs.jsonl", lone / "runs.jsonl")
    capsys.readouterr()
    assert compare.main(["--report", str(lone)]) == 0
    text = capsys.readouterr().out
    assert "DIFFERENT" in text and "preset smoke" in text and "JPEG CIFAR-10" in text
    rep = json.loads((lone / "report.json").read_text())
    assert rep["comparison"]["acc"]["verdict"] == "different"
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
                        runners={"torch": runners["torch"]}) == 0
    assert {c[0] for c in calls} == {"torch"}
    rep = json.loads((out / "report.json").read_text())
    assert rep["comparison"] is None
    assert compare.main(argv(tmp_path / "x", data_dir, "--set", "nonsense=1")) == 2
    assert "nonsense" in capsys.readouterr().err
    assert compare.main(argv(tmp_path / "y", data_dir, "--frameworks", "mxnet")) == 2


def test_presets_are_documented_and_valid():
    from airbench_common.recipes import RECIPES, get_recipe
    from parity.presets import PRESETS
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
