"""Upstream's own code as a third arm (parity/study/upstream.py): its checks, the plan and the report
with three arms, and compare end to end with the script arm on a stand-in script written for the
test (tests/fixtures/standin_airbench94_muon.py) and, slow, the package arm on upstream's real
airbench 0.1.8, both on the CPU through tests/upstream_cpu.py's patches."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from airbench_common.records import make_record, read_records
from parity.study import compare, plan as P, presets, report, summary, upstream
from test_compare import FakeRunner

FIXTURE = Path(__file__).parent / "fixtures" / "standin_airbench94_muon.py"
PREPARE = "upstream_cpu:patch"


@pytest.fixture()
def standin(tmp_path):
    path = tmp_path / "checkout" / "airbench94_muon.py"
    path.parent.mkdir()
    shutil.copy(FIXTURE, path)
    return path


# ------------------------------------------------------------------------------ the checks
def test_script_arm_is_checked_before_any_work(tmp_path, standin):
    with pytest.raises(upstream.UpstreamError, match="no such file"):
        upstream.check_arm("airbench94_muon", {}, tmp_path / "nope.py", PREPARE)
    other = tmp_path / "mine.py"
    other.write_text("")
    with pytest.raises(upstream.UpstreamError, match="not one of upstream's scripts"):
        upstream.check_arm("airbench94_muon", {}, other, PREPARE)
    with pytest.raises(upstream.UpstreamError, match="use --recipe airbench94_muon"):
        upstream.check_arm("airbench94", {}, standin, PREPARE)
    with pytest.raises(upstream.UpstreamError, match="changes batch_size, epochs, widths"):
        upstream.check_arm("airbench94_muon", dict(widths=(32, 64, 64), epochs=4,
                                                   batch_size=250), standin, PREPARE)
    # the recipe's own values and a recipe without a proxy's proxy widths change nothing
    arm = upstream.check_arm("airbench94_muon", dict(epochs=8, proxy_widths=(8, 16, 16)),
                             standin, PREPARE)
    assert arm.source["kind"] == "script" and len(arm.source["sha256"]) == 64


def test_package_arm_takes_its_functions_arguments_only():
    with pytest.raises(upstream.UpstreamError, match="has no airbench94_muon; give "
                                                      "--upstream-script"):
        upstream.check_arm("airbench94_muon", {}, None, PREPARE)
    with pytest.raises(upstream.UpstreamError, match="cannot take whiten_kernel"):
        upstream.check_arm("airbench94", dict(whiten_kernel=3), None, PREPARE)
    arm = upstream.check_arm("airbench94", dict(widths=(16, 32, 32), epochs=1,
                                                 proxy_widths=(8, 16, 16)), None, PREPARE)
    assert arm.args == dict(widths=(16, 32, 32), epochs=1.0)
    assert arm.source == dict(kind="package", airbench="0.1.8", function="train94")


def test_no_cuda_is_one_line(standin):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(upstream.UpstreamError, match="needs CUDA"):
        upstream.check_arm("airbench94_muon", {}, standin)


def test_compare_refuses_a_script_without_the_arm(tmp_path, standin, capsys):
    code = compare.main(["--recipe", "airbench94_muon", "--preset", "smoke", "--out",
                         str(tmp_path / "out"), "--upstream-script", str(standin),
                         "--no-progress"], workloads={})
    assert code == 2 and "needs 'upstream' in --frameworks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------- plan and report
def _records(shift_upstream):
    recs = []
    for seed in range(6):
        for fw, shift in (("jax", 0.0), ("torch", 0.0), ("upstream", shift_upstream)):
            acc = 0.90 + 0.001 * ((seed * 7 + len(fw)) % 5) + shift
            recs.append(make_record(recipe="r", overrides={}, seed=seed, framework=fw,
                                    versions={}, device="cpu", dtype="float32", flags={},
                                    acc=acc, acc_tta=acc, tta_level=2, train_seconds=1.0,
                                    eval_seconds=0.5, steps=1, time_seconds=1.5 + seed / 100,
                                    timed_compile_seconds=0.0))
    return recs


def test_three_arms_two_decisions_alpha_split_in_advance():
    plan = P.Plan(0.5, 6)
    out = P.study_outcome(_records(0.03), ["jax", "torch", "upstream"], plan)
    assert set(out["pairs"]) == {"jax-vs-torch", "jax-vs-upstream"}
    assert out["alpha_per_pair"] == pytest.approx(plan.alpha / 2)
    assert out["pairs"]["jax-vs-torch"]["decision"] == "equivalent"
    assert out["pairs"]["jax-vs-upstream"]["decision"] == "different"
    assert out["decision"] == "jax-vs-torch: equivalent; jax-vs-upstream: different"
    # each pair is decided by the two-arm plan at alpha / 2
    two = P.sequential_outcome(_records(0.03), ["jax", "upstream"], P.Plan(0.5, 6, alpha=0.025))
    assert out["pairs"]["jax-vs-upstream"] == two


def test_report_shows_every_arm_and_pair():
    s = summary.summarize(_records(0.0), dict(frameworks=["jax", "torch", "upstream"], runs=6,
                                             margin=0.5, margin_source="--margin"))
    assert [(p["a"], p["b"]) for p in s["pairs"]] == [("jax", "torch"), ("jax", "upstream")]
    assert all(p["decision"] == "equivalent" for p in s["pairs"])
    md = report.to_markdown(s, [])
    assert "Every pair the plan decides" in md and "upstream" in md
    assert "fixed in advance by --margin" in md
    assert s["per_framework"]["upstream"]["time_seconds"]["median"] == pytest.approx(1.525)


# ------------------------------------------------------------------ end to end on the CPU
def _data(tmp_path, lossless_subset, n_train, n_test):
    (tr_x, tr_y), (te_x, te_y) = lossless_subset
    d = tmp_path / "data"
    d.mkdir()
    np.savez(d / "train.npz", images=tr_x[:n_train], labels=tr_y[:n_train])
    np.savez(d / "test.npz", images=te_x[:n_test], labels=te_y[:n_test])
    return d


@pytest.mark.slow
def test_three_arm_compare_with_the_script_arm(tmp_path, standin, lossless_subset, monkeypatch,
                                              capsys):
    """jax and torch faked (fast); upstream's arm on the stand-in script, in its worker
    process, under a preset that only takes a data subset (what a script arm accepts)."""
    monkeypatch.setenv("AIRBENCH_UPSTREAM_PREPARE", PREPARE)
    monkeypatch.setitem(presets.PRESETS, "subset", presets.Preset(
        name="subset", description="the exact recipe on a data subset", n_train=2000,
        n_test=200, margin=5.0, max_runs=3))
    data = _data(tmp_path, lossless_subset, 2000, 200)
    calls = []
    runners = {fw: FakeRunner(fw, calls) for fw in ("jax", "torch")}
    out = tmp_path / "out"
    code = compare.main(["--recipe", "airbench94_muon", "--preset", "subset", "--frameworks",
                         "jax,torch,upstream", "--upstream-script", str(standin), "--out",
                         str(out), "--data-dir", str(data), "--no-progress", "--no-plots"],
                        workloads=runners)
    assert code == 0, capsys.readouterr().err
    recs = read_records(out / "runs.jsonl")
    ups = [r for r in recs if r["framework"] == "upstream"]
    assert [r["seed"] for r in ups] == [0, 1, 2]
    for r in ups:
        assert r["flags"]["upstream"]["kind"] == "script"
        assert r["flags"]["driven_as"] == "airbench94_muon.py as its __main__"
        assert r["timed_compile_seconds"] == 0           # the worker's warm-up compiled
        assert r["time_seconds"] == pytest.approx(r["train_seconds"] + r["eval_seconds"])
        preds = np.load(out / r["predictions"])
        labels = np.load(out / "test_labels.npy")
        assert preds.shape == (200,) and r["acc_tta"] == pytest.approx((preds == labels).mean())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["upstream"]["sha256"] == upstream.Arm("airbench94_muon", str(standin)).source[
        "sha256"]
    summary = json.loads((out / "report.json").read_text())
    assert summary["frameworks"] == ["jax", "torch", "upstream"]
    assert {p["b"]: p["decision"] for p in summary["pairs"]}.keys() == {"torch", "upstream"}
    assert all(p["decision"] not in (None, "continue") for p in summary["pairs"])
    assert "Every pair the plan decides" in (out / "report.md").read_text()


@pytest.mark.slow
def test_three_arm_compare_with_upstreams_package(tmp_path, lossless_subset, monkeypatch):
    """The real frameworks and upstream's real airbench 0.1.8 train94 (patched for the CPU
    only), preset smoke: every arm trains, no timed run of any arm compiles."""
    import importlib.util
    if importlib.util.find_spec("airbench") is None:   # not imported here: it needs torchvision
        pytest.skip("the airbench 0.1.8 package is not installed (requirements-cpu.txt has it)")
    monkeypatch.setenv("AIRBENCH_UPSTREAM_PREPARE", PREPARE)
    data = _data(tmp_path, lossless_subset, 2000, 1000)
    out = tmp_path / "out"
    code = compare.main(["--recipe", "airbench94", "--preset", "smoke", "--runs", "3",
                         "--frameworks", "jax,torch,upstream", "--out", str(out), "--data-dir",
                         str(data), "--no-progress", "--no-plots"])
    assert code == 0
    recs = read_records(out / "runs.jsonl")
    assert sorted((r["framework"], r["seed"]) for r in recs) == sorted(
        (fw, s) for fw in ("jax", "torch", "upstream") for s in range(3))
    for r in recs:
        assert r["timed_compile_seconds"] == 0, (r["framework"], r["seed"])
        assert r["time_seconds"] > 0 and r["steps"] == 4
    up = [r for r in recs if r["framework"] == "upstream"]
    assert up[0]["flags"]["upstream"] == dict(kind="package", airbench="0.1.8",
                                              function="train94")
    summary = json.loads((out / "report.json").read_text())
    assert [p["b"] for p in summary["pairs"]] == ["torch", "upstream"]
