"""The group-sequential plan of `python -m parity.compare`: runs are added in pairs (one per
framework) and after every pair the data are looked at, until the question is decided.

Fixed in advance (the preset gives them, not the data): the endpoint (mean TTA accuracy over the
test set, in points), the equivalence margin m, alpha = 0.05, the first look (3 runs per side)
and the most runs per side N (the plan's information horizon; looks are at n = 3, 4, ..., N
pairs, information fraction t = n / N). Two sequential tests run side by side:

* equivalence (TOST): H0 |d| >= m. At each look both one-sided Welch tests (d > -m, d < +m) are
  done; "equivalent" when both p-values are below the look's nominal level for alpha.
* difference beyond the margin: H0 |d| <= m. One-sided Welch tests of d > +m and of d < -m, each
  at alpha / 2; "different" when either p-value is below the look's nominal level for alpha / 2.

The nominal levels come from Lan-DeMets alpha spending with the O'Brien-Fleming-type function
alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) (one-sided level alpha at t = 1): the boundary of
each look is solved so that, for a standard normal statistic observed at the looks (a Brownian
motion on the information scale), the chance to cross at that look and not before is
alpha(t_k) - alpha(t_{k-1}); the crossing probabilities are computed by numerical integration
over the continuation region (Armitage, McPherson and Rowe's recursion). The Welch statistics'
p-values are compared with the normal nominal levels (nominal-significance matching, the usual
treatment of an estimated variance); `simulate` checks the error rates this gives.

A look whose runs reach the cap (the preset's wall-time cap, or N) is the last one and spends all
the alpha left (t set to 1 there; the cap does not depend on the data, so the error rate stays
controlled). The equivalence rule is an intersection-union test, so each of its one-sided
sequential tests at level alpha keeps its type-I error at most alpha; the two decisions cannot
both hold (one needs the interval inside the margin, the other outside).

Run `python -m parity.plan --simulate` (this module's `main`) for the operating characteristics at a given spread.
"""
from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

from airbench_common.errors import UsageError, cli_main

from ..args import count, parser
from .store import latest_by_run

ALPHA = 0.05
FIRST_LOOK = 3          # runs per side at the first look (a variance needs a few runs)
_GRID = 801             # points of the numerical integration per look


def obf_spending(t: float, alpha: float = ALPHA) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha spent by information fraction t."""
    if t <= 0:
        return 0.0
    t = min(float(t), 1.0)
    return float(2.0 * _st.norm.sf(_st.norm.isf(alpha / 2.0) / math.sqrt(t)))


@functools.lru_cache(maxsize=64)
def boundaries(fractions: tuple[float, ...], alpha: float = ALPHA) -> tuple[float, ...]:
    """Nominal one-sided p-value levels of the looks at the given information fractions
    (strictly increasing, in (0, 1]) for OBF-type spending of `alpha` (see module docstring)."""
    t = np.asarray(fractions, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or t[-1] > 1 + 1e-12:
        raise UsageError(f"information fractions must increase within (0, 1], got {fractions}")
    levels = []
    spent_before = 0.0
    grid = dens = None          # density of the score S = Z sqrt(t) on the continuation region
    t_prev = 0.0
    for tk in t:
        spend = obf_spending(tk, alpha) - spent_before
        dt = tk - t_prev
        sd = math.sqrt(dt)
        if grid is None:        # first look: S ~ N(0, t1)
            def cross(b):
                return _st.norm.sf(b / sd)
        else:
            w = _trap_weights(grid) * dens

            def cross(b, w=w, grid=grid, sd=sd):
                return float(np.dot(w, _sp.ndtr((grid - b) / sd)))
        if spend <= 1e-15:
            b = math.inf
        else:
            hi = 12.0 * math.sqrt(tk)
            b = _bisect(lambda x: cross(x) - spend, -hi, hi)
        # nominal one-sided level of Z = S / sqrt(t) at this look
        levels.append(float(_st.norm.sf(b / math.sqrt(tk))) if math.isfinite(b) else 0.0)
        spent_before += spend if math.isfinite(b) else 0.0
        # the density of S at this look, restricted to S < b
        top = b if math.isfinite(b) else 10.0 * math.sqrt(tk)
        new_grid = np.linspace(-10.0 * math.sqrt(tk), top, _GRID)
        if grid is None:
            new_dens = _st.norm.pdf(new_grid / sd) / sd
        else:
            z = (new_grid[:, None] - grid[None, :]) / sd
            kern = np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))
            new_dens = kern @ (_trap_weights(grid) * dens)
        grid, dens, t_prev = new_grid, new_dens, tk
    return tuple(levels)


def _trap_weights(x: np.ndarray) -> np.ndarray:
    w = np.empty_like(x)
    h = np.diff(x)
    w[0], w[-1] = h[0] / 2, h[-1] / 2
    w[1:-1] = (h[:-1] + h[1:]) / 2
    return w


def _bisect(f, lo, hi, tol=1e-10):
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Plan:
    """A sequential plan: margin (points), most runs per side, alpha, first look."""
    margin: float
    max_runs: int
    alpha: float = ALPHA
    first_look: int = FIRST_LOOK

    def __post_init__(self):
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin)
                and self.margin > 0):
            raise UsageError(f"margin {self.margin!r} must be a positive finite number of "
                             "accuracy points")
        if int(self.max_runs) < 1:
            raise UsageError(f"runs per side {self.max_runs!r} must be at least 1")
        if not 0 < self.alpha < 0.5:
            raise UsageError(f"alpha {self.alpha!r} must lie in (0, 0.5)")

    @property
    def looks(self) -> list[int]:
        """Runs per side at each planned look."""
        first = min(self.first_look, self.max_runs)
        return list(range(max(first, 2), self.max_runs + 1)) or [self.max_runs]

    def levels(self, n: int, final: bool = False) -> tuple[float, float]:
        """(equivalence level, difference level): nominal one-sided p-value levels of the look
        at n runs per side; `final` makes it the last look (spends all the alpha left)."""
        looks = [k for k in self.looks if k < n] + [n]
        if not (final or n >= self.max_runs) and n in self.looks:
            # a planned look: boundaries are sequential, so the full schedule's prefix serves
            i = self.looks.index(n)
            return (self._schedule(self.alpha)[i], self._schedule(self.alpha / 2)[i])
        fr = [k / self.max_runs for k in looks]
        fr[-1] = 1.0
        fr = tuple(round(min(f, 1.0), 12) for f in fr)
        if len(fr) > 1 and fr[-1] <= fr[-2]:  # a final look right after one at t = 1
            fr = fr[:-1]
        return (boundaries(fr, self.alpha)[-1], boundaries(fr, self.alpha / 2)[-1])

    def _schedule(self, alpha: float) -> tuple[float, ...]:
        return boundaries(tuple(round(k / self.max_runs, 12) for k in self.looks), alpha)


def one_sided_pvalues(a, b, margin: float) -> dict:
    """Welch one-sided p-values of d = mean(a) - mean(b): p_gt_minus (H0 d <= -m),
    p_lt_plus (H0 d >= +m), p_gt_plus (H0 d <= +m), p_lt_minus (H0 d >= -m)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        def p(x, greater):  # exact difference known
            return 0.0 if (d > x if greater else d < x) else 1.0
    else:
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))

        def p(x, greater):
            tstat = (d - x) / se
            return float(_st.t.sf(tstat, df) if greater else _st.t.cdf(tstat, df))
    return dict(diff=float(d), se=se, p_gt_minus=p(-margin, True), p_lt_plus=p(margin, False),
                p_gt_plus=p(margin, True), p_lt_minus=p(-margin, False))


def decide(a, b, plan: Plan, *, final: bool = False, diverged=(0, 0)) -> dict:
    """The decision at a look with samples a, b (ok runs, points) after n = max(len) pairs.

    Returns dict(decision in {"equivalent", "different", "continue", "inconclusive"}, reason,
    n, levels and p-values). `diverged` = (diverged runs of a, of b) out of n pairs each: a rate
    difference significant by Fisher's exact test at the look's level makes it "different"."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = max(len(a) + diverged[0], len(b) + diverged[1])
    final = final or n >= plan.max_runs
    out = dict(n=n, final=final, margin=plan.margin)
    lev_eq, lev_diff = plan.levels(n, final) if n >= plan.looks[0] else (0.0, 0.0)
    out.update(level_equivalence=lev_eq, level_difference=lev_diff)
    if any(diverged):
        fisher = float(_st.fisher_exact([[diverged[0], n - diverged[0]],
                                         [diverged[1], n - diverged[1]]]).pvalue)
        out["fisher_p"] = fisher
        if fisher < 2 * lev_diff:  # two-sided test of the rates at the look's level
            out.update(decision="different",
                       reason=f"diverged runs {diverged[0]}/{n} vs {diverged[1]}/{n}: Fisher's "
                              f"exact p={fisher:.3g} < {2 * lev_diff:.3g}")
            return out
    if len(a) < 2 or len(b) < 2 or n < plan.looks[0]:
        out.update(decision="inconclusive" if final else "continue",
                   reason="fewer than 2 finished runs on a side" if len(a) < 2 or len(b) < 2
                   else f"first look at {plan.looks[0]} runs per side")
        return out
    p = one_sided_pvalues(a, b, plan.margin)
    out.update(p)
    p_eq = max(p["p_gt_minus"], p["p_lt_plus"])
    p_diff = min(p["p_gt_plus"], p["p_lt_minus"])
    out.update(p_equivalence=p_eq, p_difference=p_diff)
    if p_eq < lev_eq:
        out.update(decision="equivalent",
                   reason=f"TOST p={p_eq:.3g} < {lev_eq:.3g} (this look's O'Brien-Fleming level)")
    elif p_diff < lev_diff:
        out.update(decision="different",
                   reason=f"p={p_diff:.3g} < {lev_diff:.3g} for a difference beyond "
                          f"+/-{plan.margin} (this look's level, alpha/2 a side)")
    else:
        out.update(decision="inconclusive" if final else "continue",
                   reason=f"TOST p={p_eq:.3g} (needs < {lev_eq:.3g}), difference p={p_diff:.3g} "
                          f"(needs < {lev_diff:.3g})")
    return out


def endpoint(record: dict) -> float:
    """The primary endpoint of a run, in points: TTA accuracy (plain if the recipe has none)."""
    v = record.get("acc_tta")
    if v is None:
        v = record.get("acc")
    return 100.0 * float(v) if v is not None else math.nan


def sequential_outcome(records, frameworks, plan: Plan, final_n: int | None = None) -> dict:
    """Replay the plan's looks over run records (seed k is the k-th pair) and return the first
    decision, or decision "continue" with the latest look's numbers. n is the number of complete
    pairs (both frameworks have seeds 0..n-1), at most plan.max_runs; `final_n` is a look made
    final by the wall-time cap."""
    fws = list(frameworks)
    by = latest_by_run(records)
    n = 0
    while n < plan.max_runs and all((fw, n) in by for fw in fws):
        n += 1
    if len(fws) != 2:
        return dict(decision="continue" if n < plan.max_runs else "not compared", n=n,
                    final=n >= plan.max_runs, reason="one framework: nothing to compare")

    def sample(fw, m):
        recs = [by[(fw, s)] for s in range(m)]
        ok = [endpoint(r) for r in recs if r.get("status") == "ok"]
        return [v for v in ok if math.isfinite(v)], len(recs) - len(ok)

    last = None
    for m in [k for k in plan.looks if k <= n]:
        (a, da), (b, db) = sample(fws[0], m), sample(fws[1], m)
        final = m == plan.max_runs or (final_n is not None and m >= final_n)
        last = decide(a, b, plan, final=final, diverged=(da, db))
        last["n"] = m
        if last["decision"] != "continue":
            return last
    if final_n is not None and n >= final_n:
        return dict(decision="inconclusive", n=n, final=True,
                    reason=f"stopped at {n} runs per side, before the first look at "
                           f"{plan.looks[0]}")
    if last is None:
        return dict(decision="continue", n=n, final=False,
                    reason=f"first look at {plan.looks[0]} runs per side")
    last["n"] = n
    return last


def comparisons(frameworks) -> list[tuple[str, str]]:
    """The pairs a study decides: the first framework (the port) against each other arm, e.g.
    jax-vs-torch and jax-vs-upstream."""
    fws = list(frameworks)
    return [(fws[0], fw) for fw in fws[1:]]


def pair_name(pair) -> str:
    return f"{pair[0]}-vs-{pair[1]}"


def study_outcome(records, frameworks, plan: Plan, final_n: int | None = None) -> dict:
    """sequential_outcome for two frameworks; for more, each pair of `comparisons` is its own
    sequential test at alpha / (number of pairs), the split fixed in advance (Bonferroni), and the
    study goes on while any pair does. The result is the pairs' outcomes under `pairs`, with a
    combined `decision` ("continue" while any pair continues, else "a: d1; b: d2", or the one
    decision all pairs share), `n` the fewest complete runs per side of any pair."""
    pairs = comparisons(frameworks)
    if len(pairs) <= 1:
        return sequential_outcome(records, frameworks, plan, final_n)
    sub = Plan(plan.margin, plan.max_runs, alpha=plan.alpha / len(pairs),
               first_look=plan.first_look)
    outs = {pair_name(p): sequential_outcome(records, p, sub, final_n) for p in pairs}
    decisions = {k: o["decision"] for k, o in outs.items()}
    if "continue" in decisions.values():
        decision = "continue"
    elif len(set(decisions.values())) == 1:
        decision = next(iter(decisions.values()))
    else:
        decision = "; ".join(f"{k}: {d}" for k, d in decisions.items())
    return dict(decision=decision, n=min(o["n"] for o in outs.values()),
                final=all(o.get("final") for o in outs.values()), pairs=outs,
                alpha_per_pair=sub.alpha,
                reason="; ".join(f"{k}: {o['decision']} ({o['reason']})" for k, o in outs.items()))


# ----------------------------------------------------------------------- simulation
def simulate(sd_a: float, sd_b: float, diff: float, plan: Plan, *, max_pairs: int | None = None,
             reps: int = 2000, seed: int = 0) -> dict:
    """Monte Carlo operating characteristics: normal per-run accuracies (points) with the given
    spreads and true difference; the study stops at the first decision or after `max_pairs`
    pairs (the wall-time cap as a number of pairs; default plan.max_runs). Returns the
    probabilities of each decision and the mean number of runs per side."""
    rng = np.random.default_rng(seed)
    cap = min(max_pairs or plan.max_runs, plan.max_runs)
    a = rng.normal(diff, sd_a, (reps, cap))
    b = rng.normal(0.0, sd_b, (reps, cap))
    outcome = np.full(reps, "", dtype=object)
    used = np.full(reps, cap, dtype=np.int64)
    m = plan.margin
    for n in range(min(plan.looks[0], cap), cap + 1):
        live = outcome == ""
        if not live.any():
            break
        lev_eq, lev_diff = plan.levels(n, final=(n == cap))
        x, y = a[live, :n], b[live, :n]
        d = x.mean(1) - y.mean(1)
        va, vb = x.var(1, ddof=1) / n, y.var(1, ddof=1) / n
        se = np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
        p_eq = np.maximum(_st.t.sf((d + m) / se, df), _st.t.cdf((d - m) / se, df))
        p_diff = np.minimum(_st.t.sf((d - m) / se, df), _st.t.cdf((d + m) / se, df))
        res = np.where(p_eq < lev_eq, "equivalent",
                       np.where(p_diff < lev_diff, "different",
                                "inconclusive" if n == cap else ""))
        idx = np.flatnonzero(live)
        outcome[idx] = res
        used[idx[res != ""]] = n
    return dict({k: float(np.mean(outcome == k)) for k in
                 ("equivalent", "different", "inconclusive")},
                mean_runs=float(used.mean()), reps=reps, sd_a=sd_a, sd_b=sd_b, diff=diff,
                margin=plan.margin, max_runs=plan.max_runs, max_pairs=cap)


def _positive(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    return v


@cli_main
def main(argv=None) -> int:
    ap = parser("python -m parity.plan", __doc__.split("\n")[0])
    ap.add_argument("--simulate", action="store_true", help="Monte Carlo operating "
                    "characteristics at d = 0, d = +/-margin and d = 2 margin")
    ap.add_argument("--sd", type=_positive, nargs="+", required=True,
                    help="per-run standard deviation in points (one, or jax and torch)")
    ap.add_argument("--margin", type=_positive, default=0.5)
    ap.add_argument("--max-runs", type=int, default=30, help="the plan's N (runs per side)")
    ap.add_argument("--max-pairs", type=int, default=None,
                    help="the cap as pairs (e.g. 30 minutes / seconds per pair)")
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args(argv)
    count("--max-runs", args.max_runs)
    count("--max-pairs", args.max_pairs)         # None: no cap but N
    count("--reps", args.reps)
    sd_a, sd_b = (args.sd * 2)[:2]
    plan = Plan(args.margin, args.max_runs)
    print(f"plan: margin +/-{plan.margin}, N = {plan.max_runs} runs per side, looks at "
          f"{plan.looks[0]}..{plan.max_runs}, cap {args.max_pairs or plan.max_runs} pairs, "
          f"sd {sd_a:g}/{sd_b:g} points, {args.reps} repetitions")
    for diff in (0.0, plan.margin, -plan.margin, 2 * plan.margin):
        r = simulate(sd_a, sd_b, diff, plan, max_pairs=args.max_pairs, reps=args.reps)
        print(f"true d {diff:+.3f}: equivalent {r['equivalent']:.3f}  different "
              f"{r['different']:.3f}  inconclusive {r['inconclusive']:.3f}  mean runs/side "
              f"{r['mean_runs']:.1f}")
    return 0
