"""parity.plan: the group-sequential plan's boundaries against published values, its decisions,
its error rates by simulation, and its CLI."""
import math

import numpy as np
import pytest
from scipy.stats import norm

from airbench_common.errors import UsageError
from parity.study import plan as P

# Lan-DeMets O'Brien-Fleming-type boundaries (z scale), one-sided alpha 0.025, equally spaced
# looks, as published (e.g. Jennison & Turnbull, "Group Sequential Methods", and R gsDesign's
# gsDesign(k=5, test.type=1, sfu=sfLDOF)$upper$bound = 4.877 3.357 2.680 2.290 2.031;
# k=2: 2.963 1.969). Computed independently of this code.
PUBLISHED_K5 = [4.877, 3.357, 2.680, 2.290, 2.031]
PUBLISHED_K2 = [2.963, 1.969]


@pytest.fixture(autouse=True)
def _fresh_boundaries():
    """boundaries() is memoized: each test computes its own (else a test could pass on values
    cached by an earlier one)."""
    P.boundaries.cache_clear()
    yield


def test_boundaries_match_published_obrien_fleming_values():
    z5 = [norm.isf(p) for p in P.boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025)]
    assert z5 == pytest.approx(PUBLISHED_K5, abs=2e-3)
    z2 = [norm.isf(p) for p in P.boundaries((0.5, 1.0), 0.025)]
    assert z2 == pytest.approx(PUBLISHED_K2, abs=2e-3)


def test_single_look_is_the_fixed_sample_test():
    assert P.boundaries((1.0,), 0.05) == pytest.approx((0.05,), rel=1e-6)


def test_spending_function():
    assert P.obf_spending(1.0, 0.05) == pytest.approx(0.05)
    assert P.obf_spending(0.0) == 0.0
    assert P.obf_spending(0.5, 0.05) == pytest.approx(2 * norm.sf(norm.isf(0.025) / math.sqrt(.5)))


@pytest.mark.parametrize("bad", [(), (0.5, 0.4), (0.0, 1.0), (0.5, 1.2)])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(UsageError):
        P.boundaries(bad)


@pytest.mark.parametrize("kw", [dict(margin=0), dict(margin=math.inf), dict(margin=math.nan),
                                dict(margin=-1), dict(margin=0.5, max_runs=0)])
def test_bad_plans_are_refused(kw):
    with pytest.raises(UsageError):
        P.Plan(**{"max_runs": 10, **kw})


def test_levels_grow_to_alpha_and_final_look_spends_the_rest():
    plan = P.Plan(0.5, 14)
    eq = [plan.levels(n)[0] for n in plan.looks]
    assert all(x < y for x, y in zip(eq, eq[1:]))
    assert eq[-1] < 0.05 and eq[0] < 1e-3
    early_final = plan.levels(8, final=True)[0]
    assert eq[plan.looks.index(8)] < early_final < 0.05


def test_decide_equivalent_different_and_continue():
    plan = P.Plan(0.5, 14)
    rng = np.random.default_rng(0)
    a, b = 70 + 0.2 * rng.standard_normal(14), 70 + 0.2 * rng.standard_normal(14)
    assert P.decide(a, b, plan)["decision"] == "equivalent"
    assert P.decide(a + 2, b, plan)["decision"] == "different"
    assert P.decide(a - 2, b, plan)["decision"] == "different"
    noisy = P.decide(a[:4] + 5 * rng.standard_normal(4), b[:4], plan)
    assert noisy["decision"] == "continue"
    assert P.decide(a[:4] + 5 * rng.standard_normal(4), b[:4], plan,
                    final=True)["decision"] == "inconclusive"
    # swapping the frameworks flips the sign and keeps the decision
    r1, r2 = P.decide(a + 2, b, plan), P.decide(b, a + 2, plan)
    assert r1["diff"] == pytest.approx(-r2["diff"]) and r2["decision"] == "different"


def test_fisher_on_divergence_rates():
    plan = P.Plan(0.5, 10)
    a = [70.0, 70.1, 69.9, 70.0, 70.05, 69.95, 70.0, 70.1, 69.9, 70.0]
    out = P.decide(a, [70.0, 70.1], plan, diverged=(0, 8))
    assert out["decision"] == "different" and "Fisher" in out["reason"]
    out = P.decide(a, a[:9], plan, diverged=(0, 1))
    assert out["decision"] != "different" and out["fisher_p"] == pytest.approx(1.0)


def test_simulated_error_rates_at_small_scale():
    """Type-I errors stay near alpha: 'equivalent' at d = +/-margin, 'different' at d = 0
    (2000 repetitions: Monte Carlo sd of a 0.05 rate is 0.005)."""
    plan = P.Plan(0.5, 10)
    for d in (0.5, -0.5):
        assert P.simulate(0.4, 0.4, d, plan, reps=2000, seed=1)["equivalent"] <= 0.065
    at0 = P.simulate(0.4, 0.4, 0.0, plan, reps=2000, seed=2)
    assert at0["different"] <= 0.01 and at0["equivalent"] > 0.5
    far = P.simulate(0.4, 0.4, 1.5, plan, reps=500, seed=3)
    assert far["different"] > 0.95


def test_sequential_outcome_replays_pairs_in_seed_order():
    def rec(fw, seed, acc, status="ok"):
        return dict(framework=fw, seed=seed, acc_tta=acc / 100, acc=acc / 100, status=status)
    rng = np.random.default_rng(0)
    recs = [rec(fw, s, 70 + 0.1 * rng.standard_normal()) for s in range(6)
            for fw in ("jax", "torch")]
    out = P.sequential_outcome(recs, ["jax", "torch"], P.Plan(0.5, 6))
    assert out["decision"] == "equivalent" and out["n"] == 3
    # an incomplete pair does not count; a cap made final at 2 ends before the first look
    out = P.sequential_outcome(recs[:3], ["jax", "torch"], P.Plan(0.5, 6), final_n=1)
    assert out["decision"] == "inconclusive" and out["n"] == 1


def test_cli_simulate(capsys):
    assert P.main(["--simulate", "--sd", "0.4", "--margin", "0.5", "--max-runs", "6",
                   "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert "true d +0.000: equivalent" in out and out.count("true d") == 4
    assert P.main(["--simulate", "--sd", "0.4", "--reps", "0"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def _rec(fw, seed, acc, status="ok", key="acc_tta"):
    r = dict(framework=fw, seed=seed, acc_tta=None, acc=None, status=status)
    if acc is not None:
        r[key] = acc / 100
    return r


def test_endpoint_prefers_tta_and_falls_back_to_plain():
    assert P.endpoint(dict(acc_tta=0.7, acc=0.6)) == pytest.approx(70.0)
    assert P.endpoint(dict(acc_tta=None, acc=0.6)) == pytest.approx(60.0)
    assert math.isnan(P.endpoint(dict(acc_tta=None, acc=None)))
    assert math.isnan(P.endpoint({}))


def test_sequential_outcome_details():
    fws = ["jax", "torch"]
    plan = P.Plan(0.5, 5)
    base = [70.0, 70.03, 69.98, 70.01, 69.99]
    recs = [_rec("jax", s, base[s] + 0.05) for s in range(5)]
    recs += [_rec("torch", s, base[s], key="acc") for s in range(5)]   # plain-only endpoint
    out = P.sequential_outcome(recs, fws, plan)
    assert out["decision"] == "equivalent" and out["n"] == 3
    assert out["diff"] == pytest.approx(0.05) and out["final"] is False
    # not enough pairs yet: continue, saying where the first look is
    out = P.sequential_outcome(recs[:2] + recs[5:7], fws, plan)
    assert out == dict(decision="continue", n=2, final=False,
                       reason="first look at 3 runs per side")
    # a diverged run counts as a run of its side but not in the sample
    bad = [dict(r) for r in recs]
    bad[6]["status"] = "diverged"            # torch seed 1
    out = P.sequential_outcome(bad, fws, plan)
    assert out["decision"] == "equivalent" and out["n"] == 3 and out["fisher_p"] == 1.0
    # records with a missing or non-numeric seed are ignored
    junk = recs + [dict(framework="jax", seed=None), dict(framework="jax", seed="x")]
    assert P.sequential_outcome(junk, fws, plan)["n"] == 3
    # one framework: nothing to compare; the study runs to N
    one = P.sequential_outcome(recs[:5], ["jax"], plan)
    assert one["decision"] == "not compared" and one["n"] == 5 and one["final"] is True
    assert P.sequential_outcome(recs[:3], ["jax"], plan)["decision"] == "continue"


def test_sequential_outcome_undecided_and_final():
    fws = ["jax", "torch"]
    rng = np.random.default_rng(5)
    a, b = 70 + 3 * rng.standard_normal(6), 70 + 3 * rng.standard_normal(6)
    recs = [_rec("jax", s, a[s]) for s in range(6)] + [_rec("torch", s, b[s]) for s in range(6)]
    plan = P.Plan(0.5, 10)
    out = P.sequential_outcome(recs, fws, plan)
    assert out["decision"] == "continue" and out["n"] == 6 and not out["final"]
    assert "p_equivalence" in out and out["level_equivalence"] == plan.levels(6)[0]
    fin = P.sequential_outcome(recs, fws, plan, final_n=6)
    assert fin["decision"] == "inconclusive" and fin["final"] is True and fin["n"] == 6
    assert fin["level_equivalence"] == plan.levels(6, final=True)[0]
    # the looks replayed stop at the final one: later pairs do not count
    early = P.sequential_outcome(recs, fws, plan, final_n=4)
    assert early["decision"] == "inconclusive" and early["n"] == 4


def test_positive_argument_parser():
    import argparse
    assert P._positive("0.5") == 0.5
    for bad in ("x", "0", "-1", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            P._positive(bad)


def test_levels_are_the_schedule_for_equivalence_and_half_alpha_for_difference():
    plan = P.Plan(0.5, 6)
    fr = tuple(k / 6 for k in plan.looks)
    for i, n in enumerate(plan.looks):
        eq, diff = plan.levels(n)
        assert eq == pytest.approx(P.boundaries(fr, 0.05)[i], rel=1e-9)
        assert diff == pytest.approx(P.boundaries(fr, 0.025)[i], rel=1e-9)
    # an early final look: the earlier looks as planned, then t = 1
    eq, diff = plan.levels(4, final=True)
    assert eq == pytest.approx(P.boundaries((3 / 6, 1.0), 0.05)[-1])
    assert diff == pytest.approx(P.boundaries((3 / 6, 1.0), 0.025)[-1])
    # the last planned look is final anyway
    assert plan.levels(6) == plan.levels(6, final=True)


def test_simulate_defaults_are_reproducible():
    plan = P.Plan(0.5, 5)
    r = P.simulate(0.4, 0.4, 0.0, plan)
    assert r["reps"] == 2000 and r == P.simulate(0.4, 0.4, 0.0, plan, reps=2000, seed=0)
    assert r != P.simulate(0.4, 0.4, 0.0, plan, seed=1)
    assert r["max_pairs"] == 5 and 3 <= r["mean_runs"] <= 5
    assert sum(r[k] for k in ("equivalent", "different", "inconclusive")) == pytest.approx(1.0)
    capped = P.simulate(0.4, 0.4, 0.0, plan, max_pairs=3, reps=500)
    assert capped["max_pairs"] == 3 and capped["mean_runs"] == 3
