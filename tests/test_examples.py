"""parity.examples: Jordan's variance decomposition, per-example agreement and per-class tests
on synthetic per-example outcomes whose truth is known."""
import numpy as np
import pytest

from parity import examples as E
from parity import stats as S


def _runs(p, runs, rng, shift=None):
    """Bernoulli outcomes per (run, example) with per-example probabilities p (+ run shifts)."""
    p = np.clip(p[None, :] + (0 if shift is None else shift[:, None]), 0, 1)
    return rng.random((runs, p.shape[1])) < p


def test_variance_decomposition_finds_no_distribution_variance_in_coin_flips():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 1.0, 4000)
    v = E.distribution_variance(_runs(p, 300, rng))
    # Var(acc) is the binomial part alone: Var_dist ~ 0 (well inside the binomial part)
    assert abs(v["var_dist"]) < 0.35 * v["var_binomial"]
    shifted = E.distribution_variance(_runs(p, 40, rng, shift=rng.normal(0, 0.02, 40)))
    # a run-level shift of sd 2 points gives Var_dist ~ 4 points^2
    assert shifted["var_dist"] == pytest.approx(4.0, rel=0.5)


def test_per_example_test_flags_what_mean_accuracy_misses():
    rng = np.random.default_rng(1)
    n = 3000
    p = rng.uniform(0.3, 1.0, n)
    q = p.copy()
    # 'broken' variant: the same mean accuracy, but other examples right (swap halves of p)
    idx = rng.permutation(n)[:1000]
    q[idx] = rng.permutation(q[idx])
    a, b, a2 = _runs(p, 8, rng), _runs(q, 8, rng), _runs(p, 8, rng)
    acc_a, acc_b = 100 * a.mean(1), 100 * b.mean(1)
    assert S.compare_samples(acc_a, acc_b, 0.5)["welch_p"] > 0.05   # mean accuracy: no signal
    broken = E.agreement(a, b, permutations=199)
    same = E.agreement(a, a2, permutations=199)
    assert broken["p"] <= 0.01 and same["p"] > 0.05
    assert broken["corr"] < min(broken["split_half_a"], broken["split_half_b"])


def test_per_class_differences_with_holm():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 300)
    p = np.full(3000, 0.7)
    q = p.copy()
    q[labels == 3] = 0.4                      # class 3 much worse on side b
    rows = E.per_class(_runs(p, 8, rng), _runs(q, 8, rng), labels)
    worst = min(rows, key=lambda r: r["p_holm"])
    assert worst["cls"] == 3 and worst["p_holm"] < 0.01 and worst["ci_low"] > 0
    assert all(r["p_holm"] >= r["p"] for r in rows)


def test_analyse_takes_prediction_matrices():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 500)
    preds = np.where(rng.random((4, 500)) < 0.8, labels, (labels + 1) % 10).astype(np.uint8)
    out = E.analyse(preds, preds, labels, permutations=19)
    assert out["agreement"]["msd"] == 0 and out["agreement"]["corr"] == pytest.approx(1.0)
    assert len(out["per_class"]) == 10
