"""Per-example parity: do the two frameworks get the *same test images* right, not only as many?

Mean accuracy can agree while the models differ (a flipped augmentation axis, a wrong
normalization, no label smoothing). From each run's per-example predictions (uint8 class per
test image, kept by parity.compare beside the run records) this module computes:

* distribution-wise variance per framework, after Jordan, "On the Variance of Neural Network
  Training with respect to Test Sets and Distributions" (arXiv 2304.01910): with p_i the
  fraction of runs that get test example i right and n test examples,
  Var_dist ~ Var(acc) - sum_i p_i (1 - p_i) / n^2 (the run-to-run variance of the test accuracy
  minus the part a fixed test set's example-level coin flips explain; p_i (1 - p_i) is taken
  times k / (k - 1) for k runs, its unbiased estimate, which matters when k is small);
* per-example agreement: the correlation across test examples between the two frameworks'
  per-example accuracies p_i, beside each framework's own split-half correlation (even vs odd
  seeds); and a permutation test over run labels of the statistic D = mean_i (p_i^a - p_i^b)^2:
  if the frameworks train the same distribution of models, relabelling runs at random gives
  values of D like the observed one; p = (1 + #{D_perm >= D}) / (1 + permutations);
* per-class accuracy differences (points) with Welch tests, Holm-adjusted p-values and
  Bonferroni-corrected (1 - alpha/10) confidence intervals.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

from airbench_common.errors import UsageError, cli_main
from airbench_common.files import write_json_atomic
from airbench_common.validate import check_out_file, integer

from ..args import parser
from . import stats as S
from .fmt import fmt, md_table, p_value
from .store import RunFolder

N_PERMUTATIONS = 999
MAX_PERMUTATIONS = 1_000_000
PERM_SEED = 0


def correctness(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(runs, n) boolean matrix: run r gets test example i right."""
    p = np.asarray(predictions)
    return p == np.asarray(labels)[None, :]


def distribution_variance(correct: np.ndarray) -> dict:
    """Jordan's decomposition of one framework's run-to-run accuracy variance (in points^2)."""
    c = np.asarray(correct, dtype=np.float64)
    k, n = c.shape
    acc = c.mean(1)
    p = c.mean(0)
    var_acc = float(acc.var(ddof=1)) if k > 1 else math.nan
    # p_i (1 - p_i) estimated without bias from k runs: the plug-in value times k / (k - 1)
    binom = float(np.sum(p * (1 - p)) / n ** 2) * (k / (k - 1) if k > 1 else 1.0)
    var_dist = var_acc - binom
    return dict(runs=k, n=n, var_acc=var_acc * 1e4, var_binomial=binom * 1e4,
                var_dist=var_dist * 1e4,
                sd_acc=math.sqrt(var_acc) * 100 if var_acc == var_acc else math.nan,
                sd_dist=math.sqrt(max(var_dist, 0.0)) * 100 if var_dist == var_dist else math.nan)


def _corr(x, y) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def split_half_correlation(correct: np.ndarray) -> float:
    """Correlation of per-example accuracy between even- and odd-numbered runs."""
    c = np.asarray(correct, dtype=np.float64)
    if len(c) < 2:
        return math.nan
    return _corr(c[0::2].mean(0), c[1::2].mean(0))


def msd(ca: np.ndarray, cb: np.ndarray) -> float:
    """D = mean over examples of the squared difference of per-example accuracy."""
    return float(np.mean((np.asarray(ca, np.float64).mean(0)
                          - np.asarray(cb, np.float64).mean(0)) ** 2))


def agreement(ca: np.ndarray, cb: np.ndarray, *, permutations: int = N_PERMUTATIONS,
              seed: int = PERM_SEED) -> dict:
    """Cross-framework per-example agreement and its permutation test (see module docstring)."""
    ca, cb = np.asarray(ca, bool), np.asarray(cb, bool)
    ka, kb = len(ca), len(cb)
    obs = msd(ca, cb)
    pooled = np.concatenate([ca, cb]).astype(np.float64)
    rng = np.random.default_rng(seed)
    ge = 0
    for _ in range(permutations):
        idx = rng.permutation(ka + kb)
        if msd(pooled[idx[:ka]], pooled[idx[ka:]]) >= obs:
            ge += 1
    return dict(runs_a=ka, runs_b=kb, corr=_corr(ca.mean(0), cb.mean(0)),
                split_half_a=split_half_correlation(ca), split_half_b=split_half_correlation(cb),
                msd=obs, permutations=permutations, p=(1 + ge) / (1 + permutations))


def per_class(ca: np.ndarray, cb: np.ndarray, labels, *, alpha: float = S.ALPHA) -> list[dict]:
    """Per-class accuracy difference a - b (points): Welch p, Holm-adjusted p, and a
    Bonferroni-corrected confidence interval (level 1 - alpha / classes)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rows = []
    for c in classes:
        m = labels == c
        a = 100 * np.asarray(ca, np.float64)[:, m].mean(1)
        b = 100 * np.asarray(cb, np.float64)[:, m].mean(1)
        row = dict(cls=int(c), n=int(m.sum()), mean_a=float(a.mean()), mean_b=float(b.mean()),
                   diff=float(a.mean() - b.mean()))
        if len(a) >= 2 and len(b) >= 2 and (a.var() + b.var()) > 0:
            row["p"] = float(_st.ttest_ind(a, b, equal_var=False).pvalue)
            lo, hi = S.welch_ci(a, b, 1 - alpha / len(classes))
        else:
            row["p"], lo, hi = math.nan, math.nan, math.nan
        row.update(ci_low=lo, ci_high=hi)
        rows.append(row)
    adj = S.holm([r["p"] for r in rows])
    for r, q in zip(rows, adj):
        r["p_holm"] = q
    return rows


def analyse(preds_a: np.ndarray, preds_b: np.ndarray, labels, *,
            permutations: int = N_PERMUTATIONS) -> dict:
    """Everything above for two frameworks' prediction matrices (runs x n, uint8)."""
    ca, cb = correctness(preds_a, labels), correctness(preds_b, labels)
    return dict(var_a=distribution_variance(ca), var_b=distribution_variance(cb),
                agreement=agreement(ca, cb, permutations=permutations),
                per_class=per_class(ca, cb, labels))


# ----------------------------------------------------------------------------- report section
def per_example_md(summary) -> list[str]:
    """The per-example section (markdown lines) of summary["per_example"] (the report, and
    python -m parity.examples)."""
    pe = summary.get("per_example")
    if not pe:
        return ["", "## Per-example parity", "",
                "(no per-example predictions stored for both frameworks)"]
    fws = summary["frameworks"]
    ag = pe["agreement"]
    out = ["", "## Per-example parity (secondary)", "",
           "Distribution-wise variance after Jordan (arXiv 2304.01910): Var_dist ~ Var(acc) - "
           "sum_i p_i(1-p_i)/n^2, in points^2 (sd in points).", "",
           md_table(["framework", "runs", "sd(acc)", "Var(acc)", "binomial part", "Var_dist",
                      "sd_dist"],
                     [[fw, v["runs"], fmt(v["sd_acc"]), fmt(v["var_acc"], ".4f"),
                       fmt(v["var_binomial"], ".4f"), fmt(v["var_dist"], ".4f"),
                       fmt(v["sd_dist"])] for fw, v in zip(fws, (pe["var_a"], pe["var_b"]))]),
           "",
           f"Per-example accuracy correlation {fws[0]} vs {fws[1]}: {fmt(ag['corr'])}; "
           f"split-half (even vs odd seeds) within {fws[0]}: {fmt(ag['split_half_a'])}, within "
           f"{fws[1]}: {fmt(ag['split_half_b'])}. Mean squared per-example difference "
           f"D = {fmt(ag['msd'], '.5f')}; permutation test over run labels "
           f"({ag['permutations']} permutations): p = {p_value(ag['p'])}.", "",
           "Per-class accuracy (points), Welch p Holm-adjusted over the classes, CI "
           "Bonferroni-corrected (95% family-wise):", "",
           md_table(["class", "n", f"{fws[0]}", f"{fws[1]}", "diff", "CI", "p", "p Holm"],
                     [[r["cls"], r["n"], fmt(r["mean_a"], ".2f"), fmt(r["mean_b"], ".2f"),
                       fmt(r["diff"], "+.2f"),
                       f"[{fmt(r['ci_low'], '+.2f')}, {fmt(r['ci_high'], '+.2f')}]",
                       p_value(r["p"]), p_value(r["p_holm"])] for r in pe["per_class"]])]
    return out


# ----------------------------------------------------------------------------- command line
# python -m parity.examples A_DIR:FW B_DIR:FW compares the ok runs of two compare folders (or two
# frameworks of one folder) per example, e.g. a deliberately broken variant against the
# reference, next to what mean accuracy alone says (Welch's test).

def load_sweep(spec: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(label, predictions runs x n, accuracies in points, test labels) of 'DIR:FRAMEWORK'."""
    folder_name, sep, fw = spec.rpartition(":")
    if not sep or not folder_name or fw not in ("jax", "torch"):
        raise UsageError(f"{spec!r}: give a compare folder and a framework as DIR:jax or "
                         "DIR:torch")
    folder = RunFolder(folder_name)
    try:
        labels = folder.load_labels()
        if labels is None:
            raise UsageError(f"{folder.labels_file} missing: {folder_name} is not a "
                             "parity.compare folder with per-example predictions")
        runs, preds = folder.load_predictions(folder.records(), fw, labels)
        accs = np.asarray([100.0 * float(r["acc_tta"]) for r in runs])
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{spec}: cannot read its runs and predictions ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:100]}); is {folder_name} a finished "
                         "parity.compare folder?") from None
    if len(runs) < 2:
        raise UsageError(f"{spec}: {len(runs)} ok {fw} runs with predictions; need at least 2")
    return f"{folder.root.name}:{fw}", preds, accs, labels


@cli_main
def main(argv=None) -> int:
    ap = parser("python -m parity.examples", "Per-example parity of two sweeps (compare folders)")
    ap.add_argument("a", help="DIR:FRAMEWORK, e.g. results/compare-airbench94_muon-cpu:jax")
    ap.add_argument("b", help="DIR:FRAMEWORK")
    ap.add_argument("--permutations", type=int, default=N_PERMUTATIONS,
                    help=f"permutations of the agreement test (default {N_PERMUTATIONS}; 1 to "
                         f"{MAX_PERMUTATIONS})")
    ap.add_argument("--json", help="also write the analysis to this JSON file")
    args = ap.parse_args(argv)
    args.permutations = integer("--permutations", args.permutations, low=1,
                                high=MAX_PERMUTATIONS)
    if args.json is not None:
        check_out_file(args.json, "--json")
    la, pa, acc_a, labels_a = load_sweep(args.a)
    lb, pb, acc_b, labels_b = load_sweep(args.b)
    if not np.array_equal(labels_a, labels_b):
        raise UsageError(f"{args.a} and {args.b} were evaluated on different test sets")
    result = analyse(pa, pb, labels_a, permutations=args.permutations)
    welch = _st.ttest_ind(acc_a, acc_b, equal_var=False)
    result["mean_accuracy"] = dict(a=float(acc_a.mean()), b=float(acc_b.mean()),
                                   sd_a=float(acc_a.std(ddof=1)), sd_b=float(acc_b.std(ddof=1)),
                                   welch_p=float(welch.pvalue))
    m = result["mean_accuracy"]
    print(f"mean TTA accuracy: {la} {m['a']:.2f} +/- {m['sd_a']:.2f} ({len(acc_a)} runs), "
          f"{lb} {m['b']:.2f} +/- {m['sd_b']:.2f} ({len(acc_b)} runs); Welch p = "
          f"{m['welch_p']:.3g}")
    print("\n".join(per_example_md(dict(per_example=result, frameworks=[la, lb]))))
    if args.json:
        write_json_atomic(args.json, dict(a=args.a, b=args.b, **result))
    return 0
