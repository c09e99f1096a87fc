"""python -m airbench_torch: bad input gives one line on stderr and exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "airbench_torch", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinycifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    return d


def assert_one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_recipe(tmp_path):
    line = assert_one_line_error(run_cli("--recipe", "nope", "--out", str(tmp_path / "r.jsonl")))
    assert "unknown recipe" in line and "airbench94" in line


def test_bad_override(tmp_path):
    line = assert_one_line_error(run_cli("--recipe", "airbench94", "--set", "lr=abc",
                                         "--out", str(tmp_path / "r.jsonl")))
    assert "lr" in line
    line = assert_one_line_error(run_cli("--recipe", "airbench94", "--set", "bogus=1",
                                         "--out", str(tmp_path / "r.jsonl")))
    assert "bogus" in line


def test_corrupt_dataset(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"not a zip")
    line = assert_one_line_error(run_cli("--recipe", "airbench94", "--data-dir", str(tmp_path),
                                         "--out", str(tmp_path / "r.jsonl")))
    assert "corrupt" in line


def test_nan_loss_is_recorded_and_exit_2(tiny_dataset, tmp_path):
    out = tmp_path / "r.jsonl"
    line = assert_one_line_error(run_cli(
        "--recipe", "airbench94", "--data-dir", str(tiny_dataset), "--device", "cpu",
        "--set", "widths=4,8,8", "--set", "batch_size=16", "--set", "whiten_images=16",
        "--set", "lr=1e30", "--epochs", "2", "--no-progress", "--out", str(out)))
    assert "non-finite training loss in epoch 0" in line     # the JAX side's words
    rec = json.loads(out.read_text().splitlines()[-1])
    assert rec["status"] == "diverged" and rec["acc"] is None and "error" in rec
    # as a diverged JAX run: the epochs up to the divergence kept, trained time but no run time
    assert [e["epoch"] for e in rec["per_epoch"]] == [0] and rec["per_epoch"][0]["val_acc"] is None
    assert rec["train_seconds"] > 0 and rec["time_seconds"] is None


def test_tiny_run_prints_table_and_appends_record(tiny_dataset, tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_cli("--recipe", "airbench94_muon", "--data-dir", str(tiny_dataset), "--device",
                   "cpu", "--set", "widths=4,8,8", "--set", "batch_size=16",
                   "--set", "whiten_images=16", "--epochs", "1", "--runs", "2", "--seed", "3",
                   "--no-progress", "--no-channels-last", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "tta_val_acc" in proc.stdout and "eval" in proc.stdout
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["seed"] for r in recs] == [3, 4]
    r = recs[0]
    assert r["framework"] == "torch" and r["status"] == "ok" and r["steps"] == 4
    assert r["ns_dtype"] == "float32" and r["dtype"] == "float32" and r["device"] == "cpu"
    assert r["data"]["n_train"] == 64 and r["data"]["n_test"] == 32
    assert len(r["per_epoch"]) == 1 and set(r["per_epoch"][0]) == {
        "epoch", "train_loss", "train_acc", "val_acc", "seconds"}
    assert r["flags"]["threads"] >= 1 and r["flags"]["channels_last"] is False
