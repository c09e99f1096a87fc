"""The tolerance of every numerics check, and why.

A check compares a JAX array `a` with the PyTorch reference `b` (same shapes, float64 on the host)
and reports

* ``max_abs`` = max |a - b|
* ``scale``   = max |b|  (the tensor's magnitude; a few checks use another stated scale)
* ``rel``     = max_abs / scale  (normwise relative difference, in the inf-norm)

and passes iff ``max_abs <= atol + rtol * scale`` -- or, where parity.numerics also computes float64
references of both frameworks from the same inputs, iff ``max_abs <= NOISE_FACTOR * floor`` with
``floor = max(max|torch_f32 - torch_f64|, max|jax_f32 - jax_f64|)`` (the float32 noise floor, see
NOISE_FACTOR). Every row reports its bound, its margin (bound / max_abs) and which rule it passed
by (parity.numerics.rows), so a row that passes by a hair is visible. The forward/backward checks
also run on a well-conditioned copy of the batch (parity.numerics.inputs.well_conditioned: no exact
max-pool ties), where both frameworks' float64 results are compared directly and must agree to
float64 rounding: that row certifies the algorithms are the same, and the floor certifies the
float32 rows differ by rounding only.
The floor is needed because some quantities are ill-conditioned with respect to rounding on real
images: exact ties in max-pool windows are broken differently by any rounding change, which
re-routes gradient, so each framework's own float32 conv-filter gradients differ from its float64
ones far beyond what the summation order alone explains; and float32 eigh of the whitening
covariance (PyTorch, as upstream) vs float64 eigh (airbench_jax) differ most in the filters of small
or nearly equal eigenvalues. We deliberately use the normwise (not the per-element) relative
error: gradients and logits contain elements near zero whose per-element relative error is
meaningless, while the error of a float32 reduction is bounded relative to the magnitude of the
terms summed, i.e. of the tensor's scale. What was measured against these bounds:
docs/results/HISTORY.md ("Measurements behind code choices").

Where the numbers come from (float32, unit roundoff u = 2**-24 ~ 6e-8):

* A dot product of length K accumulated in a different order differs by up to ~K*u*sum|x_i*y_i| in
  the worst case and ~sqrt(K)*u*... typically. The net's reductions: convs K = 9*Cin (up to
  9*512 = 4608 for airbench96's third group), BatchNorm means over N*H*W (up to 32*31*31 ~ 3e4 per
  channel at batch 32), the head K = width. Activations pass ~7-10 such layers, each BatchNorm
  re-normalizing (so errors do not compound in scale but do accumulate relatively): a few
  sqrt(K)*u per layer, well below rtol 1e-4 on forward quantities; 1e-3 on gradients.
* Gradients are sums over the batch and over all positions of products of two backpropagated
  quantities, themselves each carrying forward error; BatchNorm's backward subtracts means
  (cancellation), and with eps = 1e-12 a channel with tiny variance amplifies differences. Hence
  rtol 1e-3 (normwise) for gradients.
* Loss: a sum over the batch of O(1) terms; the relative error of the sum is that of the logits
  (the log-sum-exp is well conditioned): rtol 1e-5 on the loss value itself.
* Whitening: eigenvectors are defined up to sign (and up to rotation inside degenerate eigenspaces,
  which do not occur for image patch covariances). The filters are +v/-v pairs, so a sign flip of v
  swaps filter i with filter i+12: we align signs per eigenvector before comparing, and also
  compare the sign-free product W^T W (= sum_i v_i v_i^T / (l_i+eps) * 2, the inverse-covariance
  filter). The smallest eigenvalues (~1e-3 of the largest after normalization) make the scaled
  filters up to ~30x larger than the unit eigenvectors, and eigh in float32 vs float64 differ by
  ~u*cond; rtol 1e-3.
* Optimizer steps: compared as parameter *deltas* (new - old) per group, relative to the delta's
  own scale. An SGD delta is lr*(g + wd*p + m*buf) elementwise, so its error is the gradient error:
  rtol 1e-3 like the gradients. Muon's delta is NS(g)/||g|| for float32 NS: NS is a degree-5
  polynomial iterated 3 times with coefficients ~5, which amplifies relative input error by at most
  ~a^3 ~ 40 on the largest singular directions: rtol 5e-3. In bfloat16 (8 bits mantissa,
  u = 2**-8 = 3.9e-3) the two frameworks round at different points (upstream's X /= norm in bf16,
  matmul accumulation in float32 vs bf16), so elementwise differences of several bf16 ulps of the
  result are expected: we bound the normwise relative difference by 0.1 and report it.
* Renorm (weights rescaled to Frobenius norm sqrt(out_channels) before the step): exact up to a
  norm's rounding: rtol 1e-5.
* Lookahead: a lerp of two float32 tensors with a float64-computed decay cast to float32: rtol 1e-6.
* Learning-rate schedules: both sides read airbench_common.lr_schedules (float64) and apply it in
  float32 (torch stores lr as a Python float, optax as float32): rtol 1e-6 against the float64
  value, atol 1e-12.
* Running statistics (after one train-mode forward from the converted state): a convex
  combination of the old value and a batch mean/var; the batch variance is a two-pass reduction
  over N*H*W elements: rtol 1e-4.
* Conversion round trips: exact (atol = rtol = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_FACTOR = 4.0
"""A check with float64 references also passes when max|jax - torch| <= NOISE_FACTOR x the float32
noise floor, floor = max(|torch32 - torch64|, |jax32 - jax64|): JAX may differ from PyTorch's
float32 result by as much as rounding alone moves either framework's own float32 result away from
its float64 computation (two independent float32 errors: up to 2x; margin 2x). Which framework
rounding happens to move further is chance, so the floor is the larger of the two, and the float64
results are compared directly (the "float64 both" rows)."""


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float
    why: str

    def passes(self, max_abs: float, scale: float) -> bool:
        return bool(np.isfinite(max_abs) and max_abs <= self.atol + self.rtol * scale)

    def text(self) -> str:
        return f"rtol {self.rtol:.0e} atol {self.atol:.0e}"


TOLERANCES: dict[str, Tol] = {
    "roundtrip": Tol(0.0, 0.0, "conversion copies/transposes bits: must be exact"),
    "batch_input": Tol(0.0, 0.0, "both frameworks get the identical float32 batch"),
    "logits_train": Tol(1e-4, 1e-6, "float32 forward, K<=4608 reductions over ~10 layers; train "
                        "mode uses batch statistics"),
    "logits_eval": Tol(1e-4, 1e-6, "float32 forward with running statistics"),
    "loss": Tol(1e-5, 1e-5, "summed label-smoothed CE; error ~ that of the logits"),
    "grad": Tol(1e-3, 1e-8, "batch-summed products of backpropagated quantities, BN backward "
                "cancellation with eps=1e-12"),
    "running_stats": Tol(1e-4, 1e-7, "convex combination with a two-pass batch mean/var"),
    "tta": Tol(1e-4, 1e-6, "averages of eval-mode logits"),
    "whiten_filters": Tol(1e-3, 1e-5, "eigh (float32/float64) up to sign per eigenvector; "
                          "1/sqrt(l+eps) amplifies small-eigenvalue directions"),
    "whiten_gram": Tol(1e-3, 1e-5, "sign-free W^T W of the whitening filters"),
    "sgd_delta": Tol(1e-3, 1e-9, "lr*(g + wd*p + m*buf): gradient-level error"),
    "muon_delta_f32": Tol(5e-3, 1e-7, "3 quintic NS steps amplify the gradient error (coeffs ~5)"),
    "muon_delta_bf16": Tol(1e-1, 1e-4, "bfloat16 NS: u=2**-8 and rounding at different points"),
    "delta_f64": Tol(5e-3, 1e-12, "both frameworks in float64: the algorithms agree to float64 "
                     "rounding amplified by one step, except where max-pool windows are tied in "
                     "exact arithmetic (cutout's constant squares): there each side's last-bit "
                     "rounding picks the max, so the first conv's gradient routing differs"),
    "forward_f64": Tol(1e-4, 1e-12, "both frameworks' float64 forward/backward on the "
                       "well-conditioned batch: float64 rounding, with room for a residual "
                       "near-tie in a max-pool window at small batches; real bugs are orders of "
                       "magnitude above"),
    "forward_f64_ties": Tol(1e-2, 1e-12, "both frameworks' float64 forward/backward on real "
                            "images: exact max-pool ties (equal pixels, GELU underflow) are broken "
                            "by last-bit rounding, re-routing a conv-weight gradient"),
    "ns_f32": Tol(1e-4, 1e-6, "NS of the same float32 matrix: matmul summation order only"),
    "ns_bf16": Tol(6e-2, 1e-3, "NS of the same matrix in bfloat16: several bf16 ulps"),
    "renorm": Tol(1e-5, 1e-8, "p * sqrt(out)/||p||: one norm's rounding"),
    "lookahead": Tol(1e-6, 1e-9, "float32 lerp with the same decay"),
    "lr": Tol(1e-6, 1e-12, "float64 schedule applied as float32"),
    "param_after_step": Tol(1e-4, 1e-8, "p + delta: delta error relative to |p|"),
}


def compare(a, b, tol: Tol | str, scale: float | None = None) -> dict:
    """Compare a (JAX) with b (reference) under tol; returns the row fields."""
    tol = TOLERANCES[tol] if isinstance(tol, str) else tol
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return dict(max_abs=float("inf"), rel=float("inf"), scale=float("nan"), ok=False,
                    tol=tol.text(), note=f"shape {a.shape} vs {b.shape}")
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        max_abs = float("inf") if not np.array_equal(a, b, equal_nan=True) else max_abs
    s = float(np.abs(b).max()) if scale is None and b.size else float(scale or 0.0)
    rel = max_abs / s if s > 0 else (0.0 if max_abs == 0 else float("inf"))
    return dict(max_abs=max_abs, rel=rel, scale=s, ok=tol.passes(max_abs, s), tol=tol.text())
