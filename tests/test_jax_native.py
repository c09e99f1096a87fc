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


# ----------------------------------------------------------------------------- evaluation cache
def test_a_bad_tta_level_is_refused_and_never_answers_for_another_level():
    """Before: after infer(net, loader, 1.5) (cached under int(1.5) == 1, compiled as level 2), a
    later infer(net, loader, 1) returned level 2's logits; evaluate(net, loader, 7) returned level
    2's accuracy."""
    import jax
    import numpy as np
    import airbench_jax as ab
    from airbench_common.errors import UsageError
    from airbench_jax import augment as aug
    import importlib
    T = importlib.import_module("airbench_jax.train")  # the module (the package exports train())

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 8)
    loader = ab.CifarLoader(train=False, batch_size=8, data=(x, y))
    net = ab.make_net94(widths=(8, 8, 8), conv_impl="native")
    for bad in (1.5, 7, -1, True, 1.0, "1", None):
        with pytest.raises(UsageError, match=r"tta_level .* is not one of 0, 1, 2") as e:
            ab.infer(net, loader, bad)
        assert repr(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="tta_level 7 is not one of 0, 1, 2"):
        ab.evaluate(net, loader, 7)
    g, p, r = T._split(net)
    images = aug.normalize(loader.images)
    for call in (lambda: T.infer_arrays(g, p, r, images, 1.5),
                 lambda: T.infer_both(g, p, r, images, 3),
                 lambda: T.predict(net, images, 1.5),
                 lambda: T.predict_both(net, images, False),
                 lambda: T.accuracy(net, images, y, 2.5),
                 lambda: T.compile_eval(g, p, r, 8, 1.5)):
        with pytest.raises(UsageError, match="is not one of 0, 1, 2"):
            call()
    level1 = np.asarray(ab.infer(net, loader, np.int64(1)))       # numpy ints are ints
    level2 = np.asarray(ab.infer(net, loader, 2))
    want1 = np.asarray(jax.jit(T._eval_logits, static_argnums=(0, 4))(g, p, r, images, 1)[1])
    np.testing.assert_allclose(level1, want1, rtol=1e-5, atol=1e-5)
    assert not np.allclose(level1, level2)
    np.testing.assert_array_equal(np.asarray(ab.infer(net, loader, 1)), level1)
    assert ab.evaluate(net, loader, 1) == float((level1.argmax(1) == y).mean())


def test_check_tta_level():
    from airbench_common.validate import OptionError, check_tta_level
    assert [check_tta_level(v) for v in (0, 1, 2)] == [0, 1, 2]
    for bad in (3, -1, 1.5, 1.0, True, False, "2", None):
        with pytest.raises(OptionError, match="is not one of 0, 1, 2"):
            check_tta_level(bad)
    with pytest.raises(OptionError, match="^--tta-level 9 "):
        check_tta_level(9, "--tta-level")
