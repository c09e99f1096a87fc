"""Both frameworks under one precision policy, over the first training steps from shared weights.

For a policy (airbench_common.precision) each framework builds its train state *in that policy*
(weights stored in `params`, activations in `compute`, BatchNorm float32, Newton-Schulz in
`newton_schulz`) from the same reference weights (parity.numerics.inputs: machine-independent
weights, rounded once to the policy's params dtype by each side's own cast, which is the same
round-to-nearest), takes `steps` full train steps on the same batches (parity.numerics.batches)
and is compared with the other framework and with a float64 PyTorch run from the same rounded
weights:

* the summed loss of each step (the forward pass);
* the parameter change since the start of each optimizer group, relative L2
  ||d_a - d_b|| / ||d_ref|| (one and two steps: training is chaotic after that);
* each side's stored parameter dtypes, which must be the policy's (a side that silently kept
  another dtype fails here, whatever the numbers).

Bounds, derived from the formats (`bound`): FACTOR = 2 x the error one correct implementation
may carry, the sum of
* propagation: each of the L convolution/linear layers (whitening, the groups' convs, head),
  crossed forward and backward, rounds its output to the compute format (eps/2) after a float32
  accumulation of fan_in products (eps32 x sqrt(fan_in), a random walk of one rounding per
  partial sum); 2L such layers add as a random walk: sqrt(2L) x (eps/2 + eps32 x sqrt(fan_in)),
  times the step number;
* storage: a parameter change is the difference of two stored values, each rounded to the params
  format, so its relative error is eps_params x ||w|| / ||change|| (x sqrt(steps));
* Muon's filters: Newton-Schulz amplifies its input's error by up to a^steps (a = 3.4445, the
  quintic's slope at 0, acting on small singular values), or adds its own rounding
  eps_ns x sqrt(fan_in), whichever is larger.
No bound exceeds MAX_BOUND = 0.5 (the worst-case a^steps makes the bfloat16 filters' derived
bound 1.3, which would pass any two updates of equal norm). The same rule holds the float32
policy. Step 2's loss is asserted; its parameter-change rows are reported, not asserted (via
"info"): training is chaotic, and step 1's differences grow (parity.lockstep measures how fast).
Each side's own error against float64 is reported (the row's floor and "format error" note);
under a 16-bit policy it must also be at least FLOOR x eps on the SGD groups' step-1 change (a
side that silently computed in float32 would sit far below). The rows are parity.numerics.rows'
(`Report.add_value`, `add_exact`); `python -m parity.policies` prints and writes them.
"""
from __future__ import annotations

import math

import numpy as np

from airbench_common import param_groups
from airbench_common import precision as P
from airbench_common.recipes import NS_COEFFS
from airbench_common.workload import get_workload

from .batches import BatchStream, normalize, synthetic_images
from .groups import group_names
from .inputs import reference_weights, scaled_recipe
from .rows import Report

FACTOR = 2.0      # bound = FACTOR x the expected error of one implementation (docstring)
FLOOR = 1 / 16    # a 16-bit side's own step-1 error must exceed FLOOR x eps (see docstring)
MAX_BOUND = 0.5   # no bound above this: a relative difference near 1 says nothing
CHECK_WIDTH = 64  # the table's check column: the longest check name fits


def fan_in_max(r) -> int:
    w1, w2, w3 = r.widths
    return 9 * max(24, w1, w2, w3)


def n_layers(r) -> int:
    """Convolutions and linear layers a signal crosses (whitening, the groups' convs, head)."""
    return 2 + 3 * r.depth


def bound(pol: P.Precision, r, kind: str, step: int, store_ratio: float = 0.0) -> float:
    """The bound of one row, FACTOR x the error a correct implementation of the policy may have
    (see the module docstring): kind 'loss', 'sgd' or 'muon'; store_ratio = ||w|| / ||change||
    of the row's parameters (0 for the loss)."""
    k = fan_in_max(r)
    layer = P.EPS[pol.compute] / 2 + P.EPS["float32"] * math.sqrt(k)
    err = step * math.sqrt(2 * n_layers(r)) * layer
    if kind == "muon":
        # Newton-Schulz: its input's error amplified by up to a^steps (the quintic's slope at 0
        # acts on small singular values), or its own rounding, whichever is larger
        err = max(err * NS_COEFFS[0] ** r.muon_ns_steps,
                  P.EPS[pol.newton_schulz] * math.sqrt(k))
    err += P.EPS[pol.params] * store_ratio * math.sqrt(step)
    return min(FACTOR * err, MAX_BOUND)


def _rel(a: dict, b: dict, ref: dict, names) -> float:
    num = sum(float(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2))
              for k in names)
    den = sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in names)
    return math.sqrt(num) / max(math.sqrt(den), 1e-300)


def expected_dtype(name: str, pol: P.Precision) -> str:
    """The dtype the policy stores an upstream-named float tensor in."""
    return pol.batchnorm if ".norm" in name else pol.params


def run_policy(policy: str | P.Precision, *, recipe="airbench94_muon", width_scale=0.125,
               batch=32, steps=2, impl="native", seed=0, n_train=50000, jax_policy=None,
               torch_policy=None) -> Report:
    """Both sides under `policy` (jax_policy/torch_policy: give one side another policy, to see
    the comparison fail): the rows, and in meta the policies and the set-up."""
    pol = P.resolve(policy) if not isinstance(policy, P.Precision) else policy
    jpol = P.resolve(jax_policy) if jax_policy else pol
    tpol = P.resolve(torch_policy) if torch_policy else pol
    r = scaled_recipe(recipe, width_scale)
    imgs, labs = synthetic_images(max(512, batch * steps), seed=seed)
    stream = BatchStream(imgs, labs, batch_size=batch, seed=seed, flip=r.flip, altflip=r.altflip,
                         translate=r.translate, cutout=r.cutout, total_steps=steps)
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    arrays = reference_weights(r, normalize(imgs[:512]), seed)
    ts = torch_wl.from_arrays(r, n_train, arrays, precision=tpol)
    start = ts.arrays()                           # the shared weights, rounded to the policy
    js = jax_wl.from_arrays(r, n_train, start, precision=jpol, conv_impl=impl)
    ref = torch_wl.from_arrays(r, n_train, start, precision="float64")
    gnames = group_names(arrays, r, n_train)
    kinds = {g.name: g.kind for g in param_groups(r, n_train)}
    rep = Report(meta=dict(policy=pol.to_dict(), jax_policy=jpol.to_dict(),
                           torch_policy=tpol.to_dict(), recipe=r.name, widths=list(r.widths),
                           batch=batch, steps=steps, conv_impl=impl, fan_in=fan_in_max(r),
                           factor=FACTOR))

    def dtype_row(check, want, got, note=None):
        rep.add_exact(r.name, check, got == want, str(got) if note is None else note,
                      tol_name="dtype")

    x0, _ = stream.batch(0)
    dtypes = {"torch": ts.dtypes(x0), "jax": js.dtypes(x0)}
    for side, got in dtypes.items():
        dtype_row(f"{side}: activations are {pol.compute}", pol.compute, got["activations"])
    if r.optimizer == "muon":
        for side, got in dtypes.items():
            dtype_row(f"{side}: Newton-Schulz is {pol.newton_schulz}", pol.newton_schulz,
                      got["newton_schulz"])
    for side, got in dtypes.items():
        bad = {k: v for k, v in got["stored"].items() if v != expected_dtype(k, pol)}
        dtype_row(f"{side}: stored dtypes are the policy's", {}, bad,
                  ", ".join(f"{k} {v}" for k, v in list(bad.items())[:4]))

    def errors(t_err, j_err) -> dict:
        """Each side's own error against float64, as the row's floor and note."""
        return dict(floor=max(t_err, j_err), impl=impl,
                    note=f"format error vs float64: torch {t_err:.2e}, jax {j_err:.2e}")

    for s in range(steps):
        x, y = stream.batch(s)
        tl, jl, rl = ts.step(x, y), js.step(x, y), ref.step(x, y)
        rep.add_value(r.name, f"step {s + 1}: loss, jax vs torch (rel)", abs(jl - tl) / abs(rl),
                      bound(pol, r, "loss", s + 1),
                      **errors(abs(tl - rl) / abs(rl), abs(jl - rl) / abs(rl)))
        t_arr, j_arr, r_arr = ts.arrays(), js.arrays(), ref.arrays()
        for g, names in gnames.items():
            if not names:
                continue
            td = {k: t_arr[k].astype(np.float64) - start[k] for k in names}
            jd = {k: j_arr[k].astype(np.float64) - start[k] for k in names}
            rd = {k: r_arr[k].astype(np.float64) - start[k] for k in names}
            if not any(np.any(v) for v in rd.values()):
                continue  # a frozen group (no change to compare)
            ratio = _rel(start, {k: 0 * start[k] for k in names}, rd, names)  # ||w|| / ||d||
            t_err, j_err = _rel(td, rd, rd, names), _rel(jd, rd, rd, names)
            # after step 1 training is chaotic (step 1's differences grow): reported, not asserted
            rep.add_value(r.name, f"step {s + 1}: change [{g}], jax vs torch (rel L2)",
                          _rel(jd, td, rd, names), bound(pol, r, kinds[g], s + 1, ratio),
                          asserted=s == 0, **errors(t_err, j_err))
            if s == 0 and pol.compute != "float32" and kinds[g] == "sgd":
                rep.add_value(r.name, f"step 1: change [{g}], each side's error is "
                                      f"{pol.compute}-sized", min(t_err, j_err),
                              FLOOR * P.EPS[pol.compute], lower=True, impl=impl)
    return rep


def table(rep: Report) -> str:
    """The policy and set-up in one line, then the rows."""
    m = rep.meta
    p = m["policy"]
    head = (f"policy {p['name']}: params {p['params']}, compute {p['compute']}, batchnorm "
            f"{p['batchnorm']}, newton_schulz {p['newton_schulz']}, tf32 {p['tf32']} | "
            f"{m['recipe']} widths {tuple(m['widths'])} batch {m['batch']} conv "
            f"{m['conv_impl']} fan_in {m['fan_in']}")
    return head + "\n" + rep.table(check_width=CHECK_WIDTH)
