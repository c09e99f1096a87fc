"""A short lockstep run: the two frameworks from the same weights on one batch stream stay within
a stated multiple of the one-ulp self-perturbation baselines in the first steps."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from parity.numerics import lockstep  # noqa: E402
from parity.numerics.setting import setup_precision  # noqa: E402

# Early steps: the cross-framework distance is float32 summation-order noise, the same order as a
# one-ulp change of the initial weights; a bug shows up as a jump of orders of magnitude. We
# allow 100x the larger self baseline (or anything below 1e-5).
FACTOR = 100.0


@pytest.fixture(scope="module")
def rec():
    setup_precision()
    return lockstep.run("airbench94_muon", 4, n_train=64, n_test=32, width_scale=1 / 16,
                        data="synthetic", overrides=dict(batch_size=16), log=None,
                        tta_levels=(0,))


def test_cross_distance_within_self_baselines(rec):
    cross = np.asarray(rec["dist"]["cross"]["global"])
    base = np.maximum(rec["dist"]["self_torch"]["global"], rec["dist"]["self_jax"]["global"])
    assert len(cross) == 4 and np.all(np.isfinite(cross))
    assert np.all(base > 0)                       # the ulp perturbation is real
    assert np.all((cross <= FACTOR * base) | (cross < 1e-5)), (cross, base)
    assert rec["summary"]["early_jump"] == []


def test_losses_agree_and_records_complete(rec):
    ta, ja = np.asarray(rec["loss"]["torch_A"]), np.asarray(rec["loss"]["jax_A"])
    np.testing.assert_allclose(ja, ta, rtol=1e-4)
    assert set(rec["accuracy"]) == {"torch_A", "jax_A", "torch_B", "jax_B"}
    for pair in ("cross", "self_torch", "self_jax"):
        assert set(rec["dist"][pair]["per_layer"]) == set(rec["layers"])


def test_summary_helpers():
    s = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    assert lockstep.first_crossing(s, 1e-3) == 6 and lockstep.first_crossing(s, 1) is None
    k, f, n = lockstep.log_slope(s)
    assert abs(k - 1) < 1e-9 and abs(f - 10) < 1e-6 and n == 5
    a = {"w": np.ones(3, np.float32)}
    b = lockstep.perturb_ulp(a)
    assert np.all(b["w"] > a["w"]) and np.all(np.nextafter(a["w"], np.float32(2)) == b["w"])
