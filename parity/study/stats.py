"""Statistics for comparing two frameworks' accuracy distributions and timings.

Everything here works in the units it is given; `summary.py` passes accuracies in *percentage
points* (acc * 100), so a margin of 0.1 means 0.1 accuracy points. Sample "a" is the first
framework (jax by convention), "b" the second (torch); differences are mean(a) - mean(b).

Tests (alpha = 0.05 unless stated):

* Welch's t-test: ``scipy.stats.ttest_ind(a, b, equal_var=False)``.
* TOST (two one-sided tests) for equivalence within ``(-margin, +margin)``, Welch variant:
  ``p_lower`` = one-sided Welch p of H0: d <= -margin (``ttest_ind(a + margin, b, alternative='greater')``),
  ``p_upper`` = one-sided Welch p of H0: d >= +margin (``ttest_ind(a - margin, b, alternative='less')``),
  ``p_tost = max(p_lower, p_upper)``. Rejecting both (p_tost < alpha) is the same as the
  (1 - 2 alpha) = 90% Welch CI of the difference lying inside the margin (statsmodels'
  ``ttost_ind(..., usevar='unequal')`` computes the same numbers).
* Mann-Whitney U (two-sided) and Kolmogorov-Smirnov two-sample (``ks_2samp``): secondary
  checks on shape and tails.
* Bootstrap CIs: ``scipy.stats.bootstrap``, percentile method, 9999 resamples, fixed seed, each
  sample resampled independently.

Verdict (``verdict()``), precisely:

* ``equivalent``   -- TOST p < alpha: the 90% Welch CI of the difference lies inside +/- margin.
* ``different``    -- Welch p < alpha AND the 95% Welch CI of the difference lies entirely
                      outside the margin region [-margin, +margin] (a difference that is both
                      statistically significant and larger than the margin).
* ``inconclusive`` -- anything else (e.g. too few runs, or a significant difference that may still
                      be inside the margin); ``runs_needed`` says how many runs per side would
                      decide it at the observed variance.

Degenerate cases: fewer than 2 runs on a side -> ``inconclusive`` (no variance estimate). Both
sides with zero variance (e.g. identical deterministic samples): the difference is known exactly,
so |d| < margin -> ``equivalent`` (p_tost = 0), |d| > margin -> ``different`` (Welch p = 0),
|d| == margin -> ``inconclusive``; Welch p is 1 when d == 0.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats as _st

ALPHA = 0.05
POWER = 0.8
N_RESAMPLES = 9999
BOOT_SEED = 0


def _arr(x: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in x], dtype=np.float64)
    return a[np.isfinite(a)]


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def bootstrap_ci(samples: tuple[np.ndarray, ...], statistic, *, confidence: float = 0.95,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(*samples, axis=-1) (vectorized). Degenerate
    (constant) data give a zero-width interval; too few points give (nan, nan)."""
    if any(len(s) < 2 for s in samples):
        return (math.nan, math.nan)
    if all(np.ptp(s) == 0 for s in samples):
        v = float(statistic(*[s[None, :] for s in samples], axis=-1)[0])
        return (v, v)
    res = _st.bootstrap(samples, statistic, vectorized=True, paired=False,
                        confidence_level=confidence, n_resamples=N_RESAMPLES,
                        method="percentile", rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff_means(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _ratio_medians(a, b, axis=-1):
    return np.median(a, axis=axis) / np.median(b, axis=axis)


def describe(x: Sequence[float]) -> dict:
    """n, mean, std (ddof=1), min, max, median and the 95% bootstrap CI of the mean."""
    a = _arr(x)
    n = len(a)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, min=math.nan, max=math.nan,
                    median=math.nan, ci_low=math.nan, ci_high=math.nan)
    lo, hi = bootstrap_ci((a,), _mean)
    return dict(n=n, mean=float(a.mean()), std=float(a.std(ddof=1)) if n > 1 else math.nan,
                min=float(a.min()), max=float(a.max()), median=float(np.median(a)),
                ci_low=lo, ci_high=hi)


def welch_df(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(standard error of mean(a)-mean(b), Welch-Satterthwaite degrees of freedom)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, math.nan
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return se, df


def welch_ci(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    d = a.mean() - b.mean()
    se, df = welch_df(a, b)
    if se == 0:
        return (float(d), float(d))
    h = _st.t.ppf(0.5 + confidence / 2, df) * se
    return (float(d - h), float(d + h))


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> dict:
    """Welch TOST for |mean(a) - mean(b)| < margin (see module docstring)."""
    a, b = _arr(a), _arr(b)
    if len(a) < 2 or len(b) < 2:
        return dict(p_lower=math.nan, p_upper=math.nan, p=math.nan)
    se, _ = welch_df(a, b)
    if se == 0:  # exact difference known
        d = a.mean() - b.mean()
        p_lo = 0.0 if d > -margin else 1.0
        p_up = 0.0 if d < margin else 1.0
        return dict(p_lower=p_lo, p_upper=p_up, p=max(p_lo, p_up))
    p_lo = float(_st.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue)
    p_up = float(_st.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue)
    return dict(p_lower=p_lo, p_upper=p_up, p=max(p_lo, p_up))


def runs_needed(sd_a: float, sd_b: float, diff: float, margin: float, *, alpha: float = ALPHA,
                power: float = POWER) -> float:
    """Runs per side needed to reach a decision at the observed variance (normal approximation,
    equal n per side, alpha 0.05, power 0.8), with S2 = sd_a**2 + sd_b**2 and d = |diff|:

    * d < margin (decide "equivalent" by TOST):
        d == 0: n = (z_{1-alpha} + z_{1-beta/2})**2 * S2 / margin**2
        d  > 0: n = (z_{1-alpha} + z_{1-beta})**2   * S2 / (margin - d)**2
    * d > margin (decide "different": the 95% CI clears the margin):
        n = (z_{1-alpha/2} + z_{1-beta})**2 * S2 / (d - margin)**2
    * d == margin: infinite.

    E.g. sd 0.13 points per side, margin 0.1, d 0: n = (1.645 + 1.282)**2 * 0.0338 / 0.01 = 29.
    Returns nan when the sds are unknown, 2 when both sds are zero."""
    if not (math.isfinite(sd_a) and math.isfinite(sd_b) and math.isfinite(diff)):
        return math.nan
    s2 = sd_a ** 2 + sd_b ** 2
    d = abs(diff)
    if s2 == 0:
        return 2.0 if d != margin else math.inf
    beta = 1 - power
    z = _st.norm.ppf
    if d < margin:
        zz = z(1 - alpha) + (z(1 - beta / 2) if d == 0 else z(1 - beta))
        n = zz ** 2 * s2 / (margin - d) ** 2
    elif d > margin:
        n = (z(1 - alpha / 2) + z(1 - beta)) ** 2 * s2 / (d - margin) ** 2
    else:
        return math.inf
    return float(max(2, math.ceil(n)))


def verdict(welch_p: float, tost_p: float, ci95: tuple[float, float], margin: float,
            alpha: float = ALPHA) -> str:
    """The three-way verdict defined in the module docstring."""
    if math.isfinite(tost_p) and tost_p < alpha:
        return "equivalent"
    lo, hi = ci95
    if (math.isfinite(welch_p) and welch_p < alpha and math.isfinite(lo) and math.isfinite(hi)
            and (lo > margin or hi < -margin)):
        return "different"
    return "inconclusive"


def compare_samples(a: Sequence[float], b: Sequence[float], margin: float, *,
                    alpha: float = ALPHA) -> dict:
    """All between-sample statistics for one metric; NaN where undefined (n < 2)."""
    a, b = _arr(a), _arr(b)
    out: dict[str, Any] = dict(n_a=len(a), n_b=len(b), margin=margin, alpha=alpha)
    out["a"], out["b"] = describe(a), describe(b)
    if len(a) == 0 or len(b) == 0:
        out.update(diff=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan, welch_t=math.nan,
                   welch_p=math.nan, welch_df=math.nan, ci95_low=math.nan, ci95_high=math.nan,
                   ci90_low=math.nan, ci90_high=math.nan, tost_p=math.nan, tost_p_lower=math.nan,
                   tost_p_upper=math.nan, mannwhitney_u=math.nan, mannwhitney_p=math.nan,
                   ks_stat=math.nan, ks_p=math.nan, runs_needed=math.nan,
                   verdict="inconclusive", reason="no runs on one side")
        return out
    d = float(a.mean() - b.mean())
    out["diff"] = d
    out["diff_ci_low"], out["diff_ci_high"] = bootstrap_ci((a, b), _diff_means)
    if len(a) >= 2 and len(b) >= 2:
        se, df = welch_df(a, b)
        if se == 0:
            t, p = (0.0, 1.0) if d == 0 else (math.copysign(math.inf, d), 0.0)
        else:
            r = _st.ttest_ind(a, b, equal_var=False)
            t, p = float(r.statistic), float(r.pvalue)
        ci95, ci90 = welch_ci(a, b, 1 - alpha), welch_ci(a, b, 1 - 2 * alpha)
        out.update(welch_t=t, welch_p=p, welch_df=df)
    else:
        ci95 = ci90 = (math.nan, math.nan)
        out.update(welch_t=math.nan, welch_p=math.nan, welch_df=math.nan)
    out.update(ci95_low=ci95[0], ci95_high=ci95[1], ci90_low=ci90[0], ci90_high=ci90[1])
    tt = tost(a, b, margin)
    out.update(tost_p=tt["p"], tost_p_lower=tt["p_lower"], tost_p_upper=tt["p_upper"])
    try:
        mw = _st.mannwhitneyu(a, b, alternative="two-sided")
        out.update(mannwhitney_u=float(mw.statistic), mannwhitney_p=float(mw.pvalue))
    except ValueError:
        out.update(mannwhitney_u=math.nan, mannwhitney_p=math.nan)
    try:
        ks = _st.ks_2samp(a, b)
        out.update(ks_stat=float(ks.statistic), ks_p=float(ks.pvalue))
    except ValueError:
        out.update(ks_stat=math.nan, ks_p=math.nan)
    out["runs_needed"] = runs_needed(out["a"]["std"], out["b"]["std"], d, margin,
                                     alpha=alpha) if len(a) >= 2 and len(b) >= 2 else math.nan
    v = verdict(out["welch_p"], out["tost_p"], ci95, margin, alpha)
    out["verdict"] = v
    if len(a) < 2 or len(b) < 2:
        out["reason"] = "fewer than 2 runs on a side: no variance estimate"
    elif v == "equivalent":
        out["reason"] = (f"TOST p={out['tost_p']:.3g} < {alpha}: 90% CI of the difference "
                         f"[{ci90[0]:+.3f}, {ci90[1]:+.3f}] lies inside +/-{margin}")
    elif v == "different":
        out["reason"] = (f"Welch p={out['welch_p']:.3g} < {alpha} and the 95% CI "
                         f"[{ci95[0]:+.3f}, {ci95[1]:+.3f}] lies outside +/-{margin}")
    else:
        sig = (math.isfinite(out["welch_p"]) and out["welch_p"] < alpha)
        out["reason"] = ("significant difference that may still lie within the margin"
                         if sig else "neither equivalence nor a difference beyond the margin "
                         "is established") + f"; about {out['runs_needed']:.0f} runs per side " \
            "would decide at the observed variance"
    return out


def describe_times(x: Sequence[float]) -> dict:
    """n, median, IQR (q25, q75, q75-q25), mean, min, max of a timing sample."""
    a = _arr(x)
    if len(a) == 0:
        return dict(n=0, median=math.nan, q25=math.nan, q75=math.nan, iqr=math.nan,
                    mean=math.nan, min=math.nan, max=math.nan)
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return dict(n=len(a), median=float(q50), q25=float(q25), q75=float(q75),
                iqr=float(q75 - q25), mean=float(a.mean()), min=float(a.min()),
                max=float(a.max()))


def compare_times(a: Sequence[float], b: Sequence[float]) -> dict:
    """Medians with IQR per side and the ratio median(a)/median(b) with a 95% bootstrap CI."""
    a, b = _arr(a), _arr(b)
    out = dict(a=describe_times(a), b=describe_times(b))
    if len(a) and len(b) and np.median(b) > 0:
        out["ratio"] = float(np.median(a) / np.median(b))
        out["ratio_ci_low"], out["ratio_ci_high"] = bootstrap_ci((a, b), _ratio_medians)
    else:
        out.update(ratio=math.nan, ratio_ci_low=math.nan, ratio_ci_high=math.nan)
    return out


def jsonable(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, for report.json."""
    return _nan_to_none(obj)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN and does
    not count in the family. adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)) in ascending
    order of the m finite p-values."""
    p = np.asarray([float(v) for v in pvalues], dtype=np.float64)
    out = np.full(len(p), math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
