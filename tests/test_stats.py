"""parity.stats against known cases and direct scipy / hand computations."""
import math

import numpy as np
import pytest
from scipy import stats as st

from parity import stats as S


def test_identical_samples_are_equivalent_with_zero_variance():
    a = [94.0] * 5
    r = S.compare_samples(a, list(a), margin=0.1)
    assert r["verdict"] == "equivalent"
    assert r["diff"] == 0 and r["a"]["std"] == 0
    assert r["tost_p"] == 0 and r["welch_p"] == 1.0
    assert r["diff_ci_low"] == r["diff_ci_high"] == 0


def test_identical_nonconstant_samples_are_equivalent():
    rng = np.random.default_rng(1)
    a = 94 + 0.02 * rng.standard_normal(20)
    r = S.compare_samples(a, a.copy(), margin=0.1)
    assert r["verdict"] == "equivalent"
    assert r["welch_p"] == pytest.approx(1.0)


def test_zero_variance_different_constants():
    assert S.compare_samples([94.0] * 4, [93.0] * 4, margin=0.1)["verdict"] == "different"
    assert S.compare_samples([94.0] * 4, [93.95] * 4, margin=0.1)["verdict"] == "equivalent"


def test_shifted_samples_are_different():
    rng = np.random.default_rng(2)
    a = 94 + 0.14 * rng.standard_normal(20)
    b = 93 + 0.14 * rng.standard_normal(20)
    r = S.compare_samples(a, b, margin=0.1)
    assert r["verdict"] == "different"
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]


def test_small_noisy_samples_are_inconclusive():
    a, b = [93.0, 94.5, 92.2], [94.1, 92.6, 93.7]
    r = S.compare_samples(a, b, margin=0.1)
    assert r["verdict"] == "inconclusive"
    assert r["runs_needed"] > 3


def test_n_below_two_is_inconclusive():
    r = S.compare_samples([94.0], [94.0, 93.9], margin=0.1)
    assert r["verdict"] == "inconclusive"
    assert math.isnan(r["welch_p"])
    r = S.compare_samples([], [94.0], margin=0.1)
    assert r["verdict"] == "inconclusive"


def test_pvalues_equal_scipy():
    rng = np.random.default_rng(3)
    a = 94 + 0.15 * rng.standard_normal(12)
    b = 93.9 + 0.1 * rng.standard_normal(9)
    r = S.compare_samples(a, b, margin=0.1)
    assert r["welch_p"] == st.ttest_ind(a, b, equal_var=False).pvalue
    assert r["welch_t"] == st.ttest_ind(a, b, equal_var=False).statistic
    assert r["mannwhitney_p"] == st.mannwhitneyu(a, b, alternative="two-sided").pvalue
    assert r["ks_p"] == st.ks_2samp(a, b).pvalue
    assert r["ks_stat"] == st.ks_2samp(a, b).statistic


def test_tost_matches_hand_computation():
    rng = np.random.default_rng(4)
    a = 94 + 0.13 * rng.standard_normal(15)
    b = 94.02 + 0.16 * rng.standard_normal(11)
    m = 0.1
    # statsmodels ttost_ind(usevar='unequal') written out by hand
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d = a.mean() - b.mean()
    p_lower = st.t.sf((d + m) / se, df)   # H0: d <= -m
    p_upper = st.t.cdf((d - m) / se, df)  # H0: d >= +m
    r = S.tost(a, b, m)
    assert r["p_lower"] == pytest.approx(p_lower, rel=1e-10)
    assert r["p_upper"] == pytest.approx(p_upper, rel=1e-10)
    assert r["p"] == pytest.approx(max(p_lower, p_upper), rel=1e-10)
    # TOST at alpha rejects iff the 90% Welch CI lies within the margin
    lo, hi = S.welch_ci(a, b, 0.90)
    assert (r["p"] < 0.05) == (-m < lo and hi < m)
    assert df == pytest.approx(S.welch_df(a, b)[1])


def test_runs_needed_matches_field_notes():
    # sd 0.13 .. 0.145 points per side, margin 0.1, true difference 0 -> 29 .. 36 runs per side
    assert S.runs_needed(0.13, 0.13, 0.0, 0.1) == 29
    assert S.runs_needed(0.145, 0.145, 0.0, 0.1) in (36, 37)  # 36.01, ceil
    assert S.runs_needed(0.13, 0.13, 0.1, 0.1) == math.inf
    assert S.runs_needed(0.13, 0.13, 0.5, 0.1) < 10


def test_bootstrap_ci_is_deterministic_and_covers_mean():
    x = np.random.default_rng(5).normal(94, 0.2, 30)
    d1, d2 = S.describe(x), S.describe(x)
    assert d1 == d2
    assert d1["ci_low"] < x.mean() < d1["ci_high"]


def test_times_ratio():
    a = [2.0, 2.2, 1.9, 2.1, 2.0]
    b = [1.0, 1.1, 0.95, 1.05, 1.0]
    r = S.compare_times(a, b)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["ratio_ci_low"] <= 2.0 <= r["ratio_ci_high"]
    assert r["a"]["iqr"] == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25))


def test_jsonable_drops_nan():
    assert S.jsonable({"x": float("nan"), "y": [np.float64(1.5), np.int64(2)]}) == \
        {"x": None, "y": [1.5, 2]}
