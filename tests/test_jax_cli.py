"""CLI error handling and divergence records (synthetic data, fast)."""
import subprocess
import sys

import numpy as np


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "airbench_jax", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_bad_recipe_exit_2():
    p = _cli("--recipe", "nope")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "unknown recipe" in p.stderr


def test_cli_bad_override_exit_2():
    p = _cli("--recipe", "airbench94", "--set", "lr=abc")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_cli_missing_data_exit_2(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"garbage")
    p = _cli("--recipe", "airbench94", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_diverged_run_gives_record():
    from airbench_jax import run_recipe
    rng = np.random.default_rng(0)
    tr = (rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64))
    rec = run_recipe("airbench94", 0, overrides=dict(widths=(8, 8, 8), batch_size=32, epochs=2,
                                                     lr=1e30, whiten_images=64),
                     train_data=tr, test_data=tr, eval_every_epoch=False)
    assert rec["status"] == "diverged" and rec["acc"] is None and "non-finite" in rec["error"]
    assert rec["framework"] == "jax" and "per_epoch" in rec
