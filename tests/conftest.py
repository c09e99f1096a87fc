"""Shared fixtures. Real-data tests use $AIRBENCH_DATA (CI points it at ../shared's JPEG copy)."""
import atexit
import os
import signal
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# One JAX persistent compilation cache for the whole session (a fresh folder, removed at exit; a
# cache the caller configured is kept): a program compiled once -- by a test, by a fresh closure
# that numerics jits again, or by a CLI subprocess, which inherits the environment -- is read back
# instead of compiled again. Set before any test module imports jax; results are the same bits (the
# cached executable is the compiled one).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="airbench-test-jax-cache-")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_JAX_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LOSSLESS = SHARED / "cifar10-lossless-subset"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The configured CIFAR-10 folder; skip (with the reason) when none is configured."""
    d = os.environ.get("AIRBENCH_DATA")
    if not d:
        pytest.skip("no dataset configured: set AIRBENCH_DATA to a folder with train.npz/test.npz "
                    "(.ci/run uses ../shared/data/cifar10-jpeg)")
    if not any(Path(d, p).exists() for p in ("train.npz", "jpeg/train.npz", "cifar-10-batches-py")):
        pytest.skip(f"AIRBENCH_DATA={d} holds no train.npz / jpeg/train.npz / cifar-10-batches-py")
    return Path(d)


@pytest.fixture(scope="session")
def lossless_subset():
    """Exact official pixels of train 0..3999 and test 0..999 (skip if ../shared lacks them)."""
    if not (LOSSLESS / "train.npz").exists():
        pytest.skip(f"{LOSSLESS} not present (it sits beside the repo in ../shared)")
    with np.load(LOSSLESS / "train.npz") as tr, np.load(LOSSLESS / "test.npz") as te:
        return (tr["images"], tr["labels"]), (te["images"], te["labels"])


@pytest.fixture()
def ctrl_c():
    """SIGINT as Python's default handler takes it (KeyboardInterrupt), for a test that sends a
    real Ctrl-C: a suite started in the background (`.ci/run &`, nohup) inherits an ignored
    SIGINT, and Python then installs no handler at all."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


# CI sets AIRBENCH_REQUIRE_DATA=1: a test skipped for want of the dataset is then a failure, so a
# CI machine without ../shared cannot go green by silently skipping the real-data tests.
_DATA_SKIP_WORDS = ("AIRBENCH_DATA", "dataset", "lossless", "not present")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("AIRBENCH_REQUIRE_DATA") != "1" or not rep.skipped:
        return
    reason = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if any(w in reason for w in _DATA_SKIP_WORDS):
        rep.outcome = "failed"
        rep.longrepr = f"AIRBENCH_REQUIRE_DATA=1 but the data this test needs is missing: {reason}"
