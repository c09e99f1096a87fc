"""CLI error handling and divergence records (synthetic data, fast)."""
import subprocess
import sys

import numpy as np
import pytest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "airbench_jax", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_bad_recipe_exit_2():
    p = _cli("--recipe", "nope")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "unknown recipe" in p.stderr


# in process (the module entry point's exit status is test_cli_bad_recipe_exit_2's): an
# exception escaping main() fails the test as a traceback on stderr would
def test_cli_bad_override_exit_2(capsys):
    from airbench_jax.__main__ import main
    assert main(["--recipe", "airbench94", "--set", "lr=abc"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lr" in err


def test_cli_missing_data_exit_2(tmp_path, capsys):
    from airbench_jax.__main__ import main
    (tmp_path / "train.npz").write_bytes(b"garbage")
    assert main(["--recipe", "airbench94", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path) in err


def test_diverged_run_gives_record():
    from airbench_jax import run_recipe
    rng = np.random.default_rng(0)
    tr = (rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64))
    rec = run_recipe("airbench94", 0, overrides=dict(widths=(8, 8, 8), batch_size=32, epochs=2,
                                                     lr=1e30, whiten_images=64),
                     train_data=tr, test_data=tr, eval_every_epoch=False)
    assert rec["status"] == "diverged" and rec["acc"] is None and "non-finite" in rec["error"]
    assert rec["framework"] == "jax" and "per_epoch" in rec


@pytest.mark.slow
def test_cli_success_path_writes_full_records(tmp_path, capsys, monkeypatch):
    # a net this small may predict one class everywhere, which the record rightly calls a
    # collapse (tests/test_divergence.py holds that rule); here the success path is under test
    from airbench_common import outcome
    monkeypatch.setattr(outcome, "collapse_reason", lambda predictions: None)
    """The JAX CLI end to end (in process): two tiny runs, one record each with every field a
    compare needs, upstream's summary lines on stdout, nothing on stderr."""
    from airbench_jax.__main__ import main
    from airbench_common.records import REQUIRED_FIELDS, read_records
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 32)):
        np.savez(tmp_path / f"{split}.npz",
                 images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    out = tmp_path / "runs.jsonl"
    code = main(["--data-dir", str(tmp_path), "--recipe", "airbench94", "--set", "widths=4,8,8",
                 "--set", "batch_size=16", "--set", "whiten_images=16", "--epochs", "1",
                 "--runs", "2", "--seed", "3", "--n-train", "48", "--quiet", "--device", "cpu",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    recs = read_records(out)
    assert [r["seed"] for r in recs] == [3, 4]
    r = recs[0]
    assert all(k in r for k in REQUIRED_FIELDS)
    assert (r["framework"], r["recipe"], r["status"], r["steps"]) == ("jax", "airbench94", "ok", 3)
    assert r["device"].startswith("cpu") and r["dtype"] == "float32" and r["ns_dtype"] == "float32"
    assert r["data"]["n_train"] == 48 and r["data"]["n_test"] == 32
    assert r["data"]["label"].endswith("(first 48 train)")
    assert r["overrides"] == {"widths": "4,8,8", "batch_size": "16", "whiten_images": "16",
                              "epochs": 1.0}
    assert 0 <= r["acc"] <= 1 and 0 <= r["acc_tta"] <= 1 and r["compile_seconds"] > 0
    assert len(r["per_epoch"]) == 1 and r["recipe_params"]["widths"] == [4, 8, 8]
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("run 0 seed 3: acc ") and lines[1].startswith("run 1 seed 4: ")
    assert lines[-1].startswith("mean acc_tta ") and str(out) in lines[-1]
    assert (out.stat().st_mode & 0o777) == 0o644


def test_cli_unknown_device_lists_the_devices(capsys):
    from airbench_jax.__main__ import main
    assert main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda' is not available here; available: cpu" in err[0]
