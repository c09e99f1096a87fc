"""The oneDNN custom-call library and the evaluation cache, attacked: a process that ends with
oneDNN work in flight exits 0; a damaged or unbuildable library never crashes JAX ('auto' falls
back to im2col with one line, explicit 'onednn' is a one-line UsageError); the evaluation cache
never answers one TTA level with another's logits."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *, env: dict | None = None, timeout: int = 600):
    """Run `code` in a fresh interpreter that imports this checkout's packages."""
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=full, timeout=timeout)


# ----------------------------------------------------------------------------- exit after TTA
_EXIT_SCRIPT = """
import numpy as np
import airbench_jax as ab
from airbench_jax import onednn
impls = ["matmul", "native"] + (["onednn"] if onednn.status().available else [])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 16)
loader = ab.CifarLoader(train=False, batch_size=8, data=(x, y))
for impl in impls:
    net = ab.make_net94(widths=(8, 16, 16), conv_impl=impl)
    for level in (0, 1, 2):
        logits = ab.infer(net, loader, level)
        acc = ab.evaluate(net, loader, level)
        assert logits.shape == (16, 10) and 0 <= acc <= 1, (impl, level)
# the crash's condition: evaluation work still running when the interpreter exits (JAX dispatches
# asynchronously; the results are dropped unread, as in `print(infer(...).shape)`)
big = ab.CifarLoader(train=False, data=(rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8),
                                        rng.integers(0, 10, 400)))
ab.infer(net, big, 2).block_until_ready()
for _ in range(8):
    ab.infer(net, big, 2)
print("ok", *impls)
"""


@pytest.mark.slow
def test_infer_and_evaluate_exit_cleanly_at_every_tta_level_and_lowering(tmp_path):
    """Before: SIGSEGV at exit (139) after TTA inference with oneDNN (exit() destroyed oneDNN's
    primitive cache and JIT-compiled kernels under custom calls still in flight)."""
    # as-trained: evaluation runs each lowering itself (by default im2col nets evaluate 'native')
    proc = _python(_EXIT_SCRIPT, env={"AIRBENCH_JAX_EVAL_CONV": "as-trained",
                                      "AIRBENCH_JAX_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-500:], proc.stderr[-3000:])
    assert proc.stdout.startswith("ok matmul native"), proc.stdout
    assert "exiting" not in proc.stderr, proc.stderr[-2000:]   # no error from a refused call
