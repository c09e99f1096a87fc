"""parity.stats against known cases and direct scipy / hand computations."""
import math

import numpy as np
import pytest
from scipy import stats as st

from parity.study import stats as S


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


# Reference values computed once, offline, with statsmodels 0.14 (an independent implementation;
# not a dependency of this project), on the committed cpu-preset TTA accuracies (points):
#   from statsmodels.stats.weightstats import ttost_ind, ttest_ind
#   ttest_ind(A, B, usevar="unequal")               -> t, p, df below
#   ttost_ind(A, B, -m, m, usevar="unequal")        -> (p, lower, upper) below, per margin m
#   multipletests(HOLM_P, method="holm")[1]         -> HOLM_ADJ
A = [67.38, 66.57, 68.70, 65.60, 67.70, 66.80, 67.70, 68.70]
B = [66.89, 66.50, 66.90, 66.40, 67.80, 65.30, 65.80, 66.60]
WELCH_T, WELCH_P, WELCH_DF = 1.8955502399618267, 0.08115195710594658, 12.619686719040962
TOST = {0.1: (0.9410061749185743, 0.027544434817047325),
        0.5: (0.7824584204504605, 0.00542029380856371),
        1.0: (0.39079172845673904, 0.000697177338167406),
        2.0: (0.014525921339015795, 1.6897107841793737e-05)}   # margin: (p, p_lower)
# CompareMeans(DescrStatsW(A), DescrStatsW(B)).tconfint_diff(alpha, usevar="unequal"):
CI95 = (-0.12458975567725505, 1.8645897556772357)
CI90 = (0.055318059174181866, 1.684681940825799)
HOLM_P = [0.01, 0.04, 0.03, 0.2, 0.005]
HOLM_ADJ = [0.04, 0.09, 0.09, 0.2, 0.025]


def test_welch_and_tost_equal_statsmodels_reference_values():
    r = S.compare_samples(A, B, margin=0.1)
    assert r["welch_t"] == pytest.approx(WELCH_T, rel=1e-9)
    assert r["welch_p"] == pytest.approx(WELCH_P, rel=1e-9)
    assert r["welch_df"] == pytest.approx(WELCH_DF, rel=1e-9)
    for m, (p, p_lower) in TOST.items():
        t = S.tost(A, B, m)
        assert t["p"] == pytest.approx(p, rel=1e-9), m
        assert t["p_lower"] == pytest.approx(p_lower, rel=1e-7), m
        assert t["p_upper"] == pytest.approx(p, rel=1e-9), m


def test_holm_equals_statsmodels_reference_values():
    assert S.holm(HOLM_P) == pytest.approx(HOLM_ADJ, rel=1e-12)
    out = S.holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert S.holm([]) == []


def test_ks_statistic_is_the_largest_ecdf_gap():
    # written out by hand: the largest vertical distance between the two ECDFs
    grid = sorted(A + B)
    gap = max(abs(np.mean(np.array(A) <= x) - np.mean(np.array(B) <= x)) for x in grid)
    assert S.compare_samples(A, B, 0.1)["ks_stat"] == pytest.approx(gap)


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


# ------------------------------------------------------------------ properties (hypothesis)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

_acc = hs.floats(min_value=50, max_value=100, allow_nan=False, allow_infinity=False)
_sample = hs.lists(_acc, min_size=3, max_size=12).filter(lambda v: np.ptp(v) > 1e-6)


@settings(max_examples=60, deadline=None)
@given(_sample, _sample, hs.floats(min_value=0.01, max_value=5))
def test_swapping_frameworks_flips_the_sign(a, b, m):
    ab, ba = S.tost(a, b, m), S.tost(b, a, m)
    assert ab["p"] == pytest.approx(ba["p"], rel=1e-9, abs=1e-12)
    assert ab["p_lower"] == pytest.approx(ba["p_upper"], rel=1e-9, abs=1e-12)
    lo, hi = S.welch_ci(np.array(a), np.array(b), 0.95)
    lo2, hi2 = S.welch_ci(np.array(b), np.array(a), 0.95)
    assert lo == pytest.approx(-hi2) and hi == pytest.approx(-lo2)


@settings(max_examples=60, deadline=None)
@given(_sample, _sample, hs.floats(min_value=0.01, max_value=5),
       hs.floats(min_value=0.01, max_value=5))
def test_tost_p_is_monotone_in_the_margin(a, b, m1, m2):
    lo, hi = sorted((m1, m2))
    assert S.tost(a, b, hi)["p"] <= S.tost(a, b, lo)["p"] + 1e-12


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.floats(min_value=0, max_value=1), min_size=1, max_size=20))
def test_holm_is_at_least_raw_and_keeps_the_order(ps):
    adj = S.holm(ps)
    assert all(q >= p - 1e-15 and q <= 1 for p, q in zip(ps, adj))
    order = np.argsort(ps, kind="stable")
    assert all(adj[i] <= adj[j] + 1e-15 for i, j in zip(order, order[1:]))


@settings(max_examples=40, deadline=None)
@given(hs.floats(min_value=0.01, max_value=3), hs.floats(min_value=0.01, max_value=3),
       hs.floats(min_value=0.05, max_value=2))
def test_runs_needed_shrinks_with_a_wider_margin(sa, sb, m):
    assert S.runs_needed(sa, sb, 0.0, 2 * m) <= S.runs_needed(sa, sb, 0.0, m)


def test_describe_times_fields_by_hand():
    # sorted [1, 2, 3, 4, 10]: numpy's linear percentiles q25 = 2, q50 = 3, q75 = 4
    d = S.describe_times([3.0, 1.0, 10.0, 2.0, 4.0, float("nan")])
    assert d == dict(n=5, median=3.0, q25=2.0, q75=4.0, iqr=2.0, mean=4.0, min=1.0, max=10.0)
    e = S.describe_times([])
    assert e["n"] == 0 and all(math.isnan(v) for k, v in e.items() if k != "n")


def test_compare_times_ratio_and_its_interval():
    a = [4.0, 4.4, 3.8, 4.2, 4.0, 4.1]
    b = [1.0, 1.1, 0.9, 1.05, 1.0, 0.95]
    r = S.compare_times(a, b)
    assert r["ratio"] == pytest.approx(np.median(a) / np.median(b))
    assert 3.5 < r["ratio_ci_low"] < r["ratio"] < r["ratio_ci_high"] < 4.8
    assert r["a"]["median"] == pytest.approx(4.05) and r["b"]["median"] == pytest.approx(1.0)
    for empty in (S.compare_times([], b), S.compare_times(a, []), S.compare_times(a, [0.0, 0.0])):
        assert math.isnan(empty["ratio"]) and math.isnan(empty["ratio_ci_low"])
        assert math.isnan(empty["ratio_ci_high"])


def test_compare_samples_every_field():
    import statistics
    r = S.compare_samples(A, B, margin=0.1)
    assert (r["n_a"], r["n_b"], r["margin"], r["alpha"]) == (8, 8, 0.1, 0.05)
    assert r["diff"] == pytest.approx(statistics.mean(A) - statistics.mean(B))
    assert (r["ci95_low"], r["ci95_high"]) == pytest.approx(CI95, rel=1e-9)
    assert (r["ci90_low"], r["ci90_high"]) == pytest.approx(CI90, rel=1e-9)
    assert r["tost_p"] == pytest.approx(TOST[0.1][0], rel=1e-9)
    assert r["tost_p_lower"] == pytest.approx(TOST[0.1][1], rel=1e-7)
    assert r["tost_p_upper"] == pytest.approx(TOST[0.1][0], rel=1e-9)
    # Mann-Whitney U by hand: pairs with a > b, ties counting one half
    u = sum((x > y) + 0.5 * (x == y) for x in A for y in B)
    assert r["mannwhitney_u"] == u and 0 < r["mannwhitney_p"] < 1
    assert 0 < r["ks_p"] <= 1
    assert r["diff_ci_low"] < r["diff"] < r["diff_ci_high"]
    sd_a, sd_b = statistics.stdev(A), statistics.stdev(B)
    assert r["a"]["std"] == pytest.approx(sd_a) and r["b"]["std"] == pytest.approx(sd_b)
    assert r["runs_needed"] == S.runs_needed(sd_a, sd_b, r["diff"], 0.1)
    assert r["verdict"] == "inconclusive"
    assert r["reason"] == ("neither equivalence nor a difference beyond the margin is "
                           f"established; about {r['runs_needed']:.0f} runs per side would "
                           "decide at the observed variance")


def test_compare_samples_reasons_and_degenerate_cases():
    eq = S.compare_samples([70.0, 70.01, 69.99, 70.0], [70.0, 70.01, 69.99, 70.02], 0.5)
    assert eq["verdict"] == "equivalent" and eq["reason"].startswith("TOST p=")
    assert f"[{eq['ci90_low']:+.3f}, {eq['ci90_high']:+.3f}] lies inside +/-0.5" in eq["reason"]
    diff = S.compare_samples([72.0, 72.01, 71.99, 72.0], [70.0, 70.01, 69.99, 70.02], 0.5)
    assert diff["verdict"] == "different" and diff["reason"].startswith("Welch p=")
    assert "lies outside +/-0.5" in diff["reason"]
    sig = S.compare_samples([70.25, 70.35, 70.15, 70.3], [70.0, 70.05, 69.95, 70.02], 0.2)
    assert sig["verdict"] == "inconclusive"
    assert sig["reason"].startswith("significant difference that may still lie within")
    empty = S.compare_samples([], [70.0, 71.0], 0.5)
    assert empty["verdict"] == "inconclusive" and empty["reason"] == "no runs on one side"
    for k in ("diff", "welch_p", "tost_p", "ci95_low", "ci90_high", "mannwhitney_p", "ks_p",
              "runs_needed", "diff_ci_low"):
        assert math.isnan(empty[k]), k
    one = S.compare_samples([70.0], [70.0, 71.0], 0.5)
    assert one["reason"] == "fewer than 2 runs on a side: no variance estimate"
    assert math.isnan(one["welch_p"]) and math.isnan(one["runs_needed"])


def test_describe_fields_by_hand():
    d = S.describe([3.0, 1.0, 2.0, float("inf")])
    assert (d["n"], d["mean"], d["min"], d["max"], d["median"]) == (3, 2.0, 1.0, 3.0, 2.0)
    assert d["std"] == pytest.approx(1.0) and d["ci_low"] <= 2.0 <= d["ci_high"]
    one = S.describe([5.0])
    assert one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert S.describe([])["n"] == 0 and math.isnan(S.describe([])["mean"])


def test_bootstrap_ci_is_the_documented_percentile_bootstrap():
    """Pins the documented method (percentile, 9999 resamples, seed 0, each sample resampled
    independently) by comparing with scipy's bootstrap called with exactly those settings."""
    a = np.array([1.0, 2.5, 2.0, 4.0, 3.1, 2.2])
    b = np.array([0.5, 1.5, 1.0, 2.2])
    ref = st.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                       vectorized=True, paired=False, confidence_level=0.95, n_resamples=9999,
                       method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert S.bootstrap_ci((a, b), S._diff_means) == pytest.approx((ref.low, ref.high), rel=1e-12)
    ref90 = st.bootstrap((a,), lambda x, axis=-1: x.mean(axis), vectorized=True,
                         confidence_level=0.9, n_resamples=9999, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    assert S.bootstrap_ci((a,), S._mean, confidence=0.9) == pytest.approx(
        (ref90.low, ref90.high), rel=1e-12)
    # two points are enough; one is not; constant samples give a zero-width interval
    lo, hi = S.bootstrap_ci((np.array([1.0, 3.0]),), S._mean)
    assert 1.0 <= lo < hi <= 3.0
    assert all(math.isnan(v) for v in S.bootstrap_ci((np.array([1.0]),), S._mean))
    assert S.bootstrap_ci((np.array([5.0, 5.0]), np.array([2.0, 2.0, 2.0])),
                          S._diff_means) == (3.0, 3.0)
    assert S.bootstrap_ci((np.array([5.0, 5.0]), np.array([1.0, 2.0])),
                          S._diff_means)[0] < 4.0
    r = S.compare_times([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (r["ratio_ci_low"], r["ratio_ci_high"]) == (2.0, 2.0)


def test_runs_needed_each_branch_by_hand():
    z975, z95, z80, z90 = 1.959964, 1.644854, 0.841621, 1.281552   # standard normal quantiles
    # a difference beyond the margin: (z_.975 + z_.80)^2 * S2 / (d - m)^2
    assert S.runs_needed(0.5, 0.5, 1.0, 0.5) == math.ceil((z975 + z80) ** 2 * 0.5 / 0.25)  # 16
    assert S.runs_needed(0.5, 0.5, -1.0, 0.5) == 16
    # equivalence with d > 0: (z_.95 + z_.80)^2 * S2 / (m - d)^2
    assert S.runs_needed(0.3, 0.3, 0.2, 0.5) == math.ceil((z95 + z80) ** 2 * 0.18 / 0.09)  # 13
    # equivalence at d = 0: (z_.95 + z_.90)^2 * S2 / m^2
    assert S.runs_needed(0.4, 0.4, 0.0, 0.5) == math.ceil((z95 + z90) ** 2 * 0.32 / 0.25)  # 11
    assert S.runs_needed(0.01, 0.01, 0.0, 0.5) == 2                   # never below 2
    assert S.runs_needed(0.0, 0.0, 0.1, 0.5) == 2.0
    assert S.runs_needed(0.0, 0.0, 0.5, 0.5) == math.inf
    for bad in ((math.nan, 1.0, 0.0), (1.0, math.nan, 0.0), (1.0, 1.0, math.nan)):
        assert math.isnan(S.runs_needed(*bad, 0.5))


def test_verdict_boundaries_are_strict():
    assert S.verdict(1.0, 0.05, (0.0, 0.0), 0.5) == "inconclusive"        # p == alpha
    assert S.verdict(1.0, 0.0499, (0.0, 0.0), 0.5) == "equivalent"
    assert S.verdict(0.05, 1.0, (0.6, 0.9), 0.5) == "inconclusive"
    assert S.verdict(0.01, 1.0, (0.5, 0.9), 0.5) == "inconclusive"        # touches the margin
    assert S.verdict(0.01, 1.0, (-0.9, -0.51), 0.5) == "different"


def test_describe_empty_and_two_points():
    e = S.describe([])
    assert e["n"] == 0 and set(e) == {"n", "mean", "std", "min", "max", "median", "ci_low",
                                      "ci_high"}
    assert all(math.isnan(v) for k, v in e.items() if k != "n")
    assert S.describe([1.0, 3.0])["std"] == pytest.approx(math.sqrt(2))


# --- pinned by mutation testing (benchmarks/mutation.sh): each test below failed against a
# surviving mutant of parity/study/stats.py (named in the comment) before it was added.

def test_compare_times_ratio_is_a_quotient_not_a_product():
    # medians 6 and 2 (the ratio tests above have median(b) == 1, where a / b == a * b)
    a = [6.0, 6.3, 5.8, 6.1, 6.0, 5.9]
    b = [2.0, 2.1, 1.9, 2.05, 2.0, 1.95]
    r = S.compare_times(a, b)
    assert r["ratio"] == pytest.approx(3.0)                     # compare_times: / -> *
    assert 2.8 < r["ratio_ci_low"] < 3.0 < r["ratio_ci_high"] < 3.2  # _ratio_medians: / -> *


def test_ratio_statistic_is_vectorized_per_resample():
    # scipy's vectorized bootstrap hands (n_resamples, n) arrays: one ratio per row, not one
    # number over all rows (_ratio_medians: axis dropped or None)
    a = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])
    b = np.array([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0]])
    np.testing.assert_allclose(S._ratio_medians(a, b, axis=-1), [2.0, 2.0])
    np.testing.assert_allclose(S._diff_means(a, b, axis=-1), [1.0, 3.0])
    np.testing.assert_allclose(S._mean(a, axis=-1), [2.0, 6.0])


def test_describe_times_empty_has_the_same_fields():
    full, empty = S.describe_times([1.0, 2.0]), S.describe_times([])
    assert list(empty) == list(full)                            # a renamed/dropped key
    assert empty["n"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "n")


def test_compare_samples_empty_side_has_every_field_as_nan():
    full, empty = S.compare_samples(A, B, 0.1), S.compare_samples([], [70.0, 71.0], 0.1)
    assert set(empty) == set(full)                              # a dropped key
    for k, v in empty.items():
        if k not in ("n_a", "n_b", "margin", "alpha", "a", "b", "verdict", "reason"):
            assert isinstance(v, float) and math.isnan(v), k    # nan, not None


def test_compare_samples_one_run_on_a_side_is_not_an_empty_side():
    r = S.compare_samples([70.0, 71.0, 72.0], [70.0], 0.5)      # `len(b) == 0` -> `== 1`
    assert r["diff"] == pytest.approx(1.0)
    assert r["reason"] == "fewer than 2 runs on a side: no variance estimate"
    for k in ("welch_t", "welch_p", "welch_df", "ci95_low", "ci90_high"):   # `and` -> `or`
        assert math.isnan(r[k]), k


def test_compare_samples_two_runs_per_side_is_enough_for_welch():
    a, b = [70.0, 70.4], [69.0, 69.2]                           # `>= 2` -> `> 2` / `>= 3`
    r = S.compare_samples(a, b, 0.5)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert r["welch_t"] == pytest.approx(ref.statistic) and r["welch_p"] == pytest.approx(ref.pvalue)
    assert math.isfinite(r["ci95_low"]) and math.isfinite(r["runs_needed"])
    assert not r["reason"].startswith("fewer than 2 runs")       # `< 2` -> `<= 2` / `< 3`
    r = S.compare_samples(b, a, 0.5)
    assert r["welch_t"] == pytest.approx(-ref.statistic)


def test_identical_constant_samples_have_welch_t_zero():
    r = S.compare_samples([70.0] * 3, [70.0] * 3, 0.5)          # t (0.0 -> 1.0) at d == 0
    assert (r["welch_t"], r["welch_p"]) == (0.0, 1.0)
    r = S.compare_samples([71.0] * 3, [70.0] * 3, 0.5)
    assert (r["welch_t"], r["welch_p"]) == (math.inf, 0.0)


def test_compare_samples_passes_its_alpha_on():
    # a margin where the TOST p lies between 0.05 and 0.10: equivalent at alpha 0.10 only
    m = next(m for m in np.arange(1.0, 2.0, 0.01)
             if 0.05 < S.tost(A, B, m)["p"] < 0.10)
    assert S.compare_samples(A, B, m)["verdict"] == "inconclusive"
    r = S.compare_samples(A, B, m, alpha=0.10)
    assert r["verdict"] == "equivalent" and r["alpha"] == 0.10    # verdict(..., alpha) dropped
    assert r["runs_needed"] == S.runs_needed(r["a"]["std"], r["b"]["std"], r["diff"], m,
                                             alpha=0.10)            # runs_needed(alpha=) dropped
    assert r["runs_needed"] != S.runs_needed(r["a"]["std"], r["b"]["std"], r["diff"], m)


def test_rank_tests_that_refuse_the_data_give_nan(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("refused")
    monkeypatch.setattr(S._st, "mannwhitneyu", refuse)
    monkeypatch.setattr(S._st, "ks_2samp", refuse)
    r = S.compare_samples(A, B, 0.1)
    for k in ("mannwhitney_u", "mannwhitney_p", "ks_stat", "ks_p"):
        assert isinstance(r[k], float) and math.isnan(r[k]), k
    assert r["verdict"] == "inconclusive" and math.isfinite(r["welch_p"])


def test_verdict_below_the_margin_boundaries():
    assert S.verdict(0.01, 1.0, (-0.9, -0.5), 0.5) == "inconclusive"      # hi == -margin
    assert S.verdict(0.01, 1.0, (-0.9, 0.2), 0.5) == "inconclusive"       # hi inside the margin
    assert S.verdict(0.01, 1.0, (-0.9, -0.6), 0.5) == "different"


def test_different_reason_in_full():
    r = S.compare_samples([72.0, 72.01, 71.99, 72.0], [70.0, 70.01, 69.99, 70.02], 0.5)
    assert r["reason"] == (f"Welch p={r['welch_p']:.3g} < 0.05 and the 95% CI "
                           f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}] lies outside +/-0.5")
    assert r["ci95_low"] != r["ci95_high"]


def test_welch_p_equal_to_alpha_is_not_significant(monkeypatch):
    # p == alpha exactly (forced): not significant, so the reason is not "significant difference"
    class Res:
        statistic, pvalue = 2.0, 0.05
    monkeypatch.setattr(S._st, "ttest_ind", lambda *a, **k: Res())
    r = S.compare_samples(A, B, 0.1)
    assert (r["welch_p"], r["verdict"]) == (0.05, "inconclusive")
    assert r["reason"].startswith("neither equivalence nor a difference beyond the margin")


def test_one_run_gives_nan_without_numpy_warnings():
    # the n < 2 guards are what keep numpy's "degrees of freedom <= 0" warnings out of reports
    # (tost: `or` -> `and`; describe: `n > 1` -> `n >= 1` / always)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in S.tost([1.0], [1.0, 2.0], 0.5).values())
        assert all(math.isnan(v) for v in S.tost([1.0, 2.0], [1.0], 0.5).values())
        assert math.isnan(S.describe([1.0])["std"])
        for a, b in (([70.0, 71.0, 72.0], [70.0]), ([70.0], [70.0, 71.0, 72.0])):
            assert math.isnan(S.compare_samples(a, b, 0.5)["welch_p"])  # Welch: `and` -> `or`


def test_bootstrap_ci_of_data_with_range_one_is_not_degenerate():
    d = S.describe([1.0, 2.0, 1.5])                              # np.ptp == 1, not 0
    assert (d["ci_low"], d["ci_high"]) == (1.0, 2.0)


def test_runs_needed_with_unit_variance_and_a_far_difference():
    z = st.norm.ppf
    assert S.runs_needed(1.0, 0.0, 0.0, 0.5) == math.ceil(
        (z(0.95) + z(0.9)) ** 2 * 1.0 / 0.25)                   # s2 == 1 is not s2 == 0
    assert S.runs_needed(0.3, 0.4, 0.7, 0.5) == math.ceil(
        (z(0.975) + z(0.8)) ** 2 * 0.25 / 0.2 ** 2)              # (d - m) ** 2, not * 2


def test_welch_df_with_unit_standard_error():
    se, df = S.welch_df(np.array([0.0, 2.0]), np.array([5.0, 5.0]))   # se == 1 is not se == 0
    assert (se, df) == (1.0, 1.0)


def test_tost_exact_difference_at_the_margin():
    # zero variance: the difference is known exactly; d == -margin / +margin is not inside
    assert S.tost([1.0] * 3, [1.5] * 3, 0.5) == dict(p_lower=1.0, p_upper=0.0, p=1.0)
    assert S.tost([1.5] * 3, [1.0] * 3, 0.5) == dict(p_lower=0.0, p_upper=1.0, p=1.0)
    assert S.tost([1.25] * 3, [1.0] * 3, 0.5) == dict(p_lower=0.0, p_upper=0.0, p=0.0)


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy, on the constant reference side
def test_tost_with_two_runs_per_side_and_unit_standard_error():
    a, b = np.array([0.0, 2.0]), np.array([5.0, 5.5])            # n = 2: `< 2` -> `<= 2` / `< 3`
    for x, y in ((a, b), (b, a), (a, np.array([5.0, 5.0]))):     # last: se == 1 exactly
        r = S.tost(x, y, 0.5)
        lo = st.ttest_ind(x + 0.5, y, equal_var=False, alternative="greater").pvalue
        up = st.ttest_ind(x - 0.5, y, equal_var=False, alternative="less").pvalue
        assert r == pytest.approx(dict(p_lower=lo, p_upper=up, p=max(lo, up)))
        assert 0.0 < r["p"] < 1.0
