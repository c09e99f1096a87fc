"""The optimizer-step checks of `python -m parity.numerics`: one and two full train steps per
optimizer group, the whitening bias's freezing, the lookahead EMA, Newton-Schulz on fixed matrices
and Muon's renormalization, each framework's own train_step from the same weights."""
from __future__ import annotations

import numpy as np

from airbench_common import param_groups
from airbench_common.workload import get_workload

from .groups import deltas, group_names
from .rows import Report


def check_steps(rep: Report, name, arrays0, r, n_train, x, y, x2, y2, ns_dtype="float32",
                impl="matmul", jtemplate=None, groups_only=None, tol_muon=None, tag="",
                n_steps=2):
    """One and two full train steps on each side from the same weights; deltas per group."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    gnames = group_names(arrays0, r, n_train)
    ts = torch_wl.from_arrays(r, n_train, arrays0, ns_dtype=ns_dtype)
    # float64 references of both sides (the float32 noise floor) only for float32 comparisons
    ts64 = js64 = None
    if ns_dtype == "float32":
        ts64 = torch_wl.from_arrays(r, n_train, arrays0, precision="float64")
        js64 = jax_wl.from_arrays(r, n_train, arrays0, precision="float64", conv_impl=impl)
    js = jax_wl.from_arrays(r, n_train, arrays0, ns_dtype=ns_dtype, conv_impl=impl,
                            template=jtemplate)
    t_before, j_before, r_before, j64_before = arrays0, js.arrays(), arrays0, arrays0
    for s, (xb, yb) in enumerate(((x, y), (x2, y2))[:n_steps]):
        tl, jl = ts.step(xb, yb), js.step(xb, yb)
        t_after, j_after = ts.arrays(), js.arrays()
        r_after = rl = j64_after = jl64 = None
        if ts64 is not None:
            rl = ts64.step(xb, yb)
            r_after = ts64.arrays()
            jl64 = js64.step(xb, yb)
            j64_after = js64.arrays()
        rep.add(name, f"step {s + 1}{tag}: loss", jl, tl, "loss", impl, ref64=rl,
                jax64=jl64)
        for gname, names in gnames.items():
            if groups_only and gname not in groups_only:
                continue
            spec = next(g for g in param_groups(r, n_train) if g.name == gname)
            tol = ("sgd_delta" if spec.kind == "sgd" else
                   (tol_muon or ("muon_delta_f32" if ns_dtype == "float32" else "muon_delta_bf16")))
            td, jd = deltas(t_after, t_before, names), deltas(j_after, j_before, names)
            rd = None if r_after is None else deltas(r_after, r_before, names)
            jd64 = None if j64_after is None else deltas(j64_after, j64_before, names)
            rep.add_worst(name, f"step {s + 1}{tag}: delta [{gname}] ({spec.kind})", jd, td, names,
                          tol, impl, ref64=rd, jax64=jd64)
            if jd64 is not None and s == 0:
                # the algorithms, compared without float32 rounding: one step from the same
                # weights (after one step the two float64 runs no longer start from the same
                # point, and tie-breaking / Newton-Schulz amplify last-bit differences)
                rep.add_worst(name, f"step {s + 1}{tag}: delta [{gname}] float64 both", jd64, rd,
                              names, "delta_f64", impl)
        stat = [k for k in t_after if k.endswith(("running_mean", "running_var"))]
        rep.add_worst(name, f"step {s + 1}{tag}: BN running stats", j_after, t_after, stat,
                      "running_stats", impl, ref64=r_after, jax64=j64_after)
        t_before, j_before, r_before, j64_before = t_after, j_after, r_after, j64_after
    return js


def check_freeze(rep: Report, name, arrays0, r, n_train, x, y, jtemplate):
    """A step at the whitening bias's frozen_after: its update must be exactly zero on both sides;
    and a step just before: its update must be non-zero on both sides and agree."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    wb = next(g for g in param_groups(r, n_train) if g.name == "whiten_bias").frozen_after
    for step, frozen in ((wb - 1, False), (wb, True)):
        ts = torch_wl.from_arrays(r, n_train, arrays0, step=step)
        ts.step(x, y)
        js = jax_wl.from_arrays(r, n_train, arrays0, step=step, template=jtemplate)
        js.step(x, y)
        td = ts.arrays()["0.bias"] - arrays0["0.bias"]
        jd = js.arrays()["0.bias"] - arrays0["0.bias"]
        if frozen:
            rep.add_exact(name, f"whiten bias frozen at step {step}: delta == 0 (both)",
                          bool(np.all(td == 0) and np.all(jd == 0)),
                          f"torch max {np.abs(td).max():.1e}, jax max {np.abs(jd).max():.1e}")
        else:  # float64 references of both sides set the noise floor, as in check_steps
            ts64 = torch_wl.from_arrays(r, n_train, arrays0, step=step, precision="float64")
            ts64.step(x, y)
            rd = ts64.arrays()["0.bias"] - arrays0["0.bias"]
            js64 = jax_wl.from_arrays(r, n_train, arrays0, step=step, precision="float64")
            js64.step(x, y)
            jd64 = js64.arrays()["0.bias"] - arrays0["0.bias"]
            rep.add(name, f"whiten bias delta at step {step} (last live)", jd, td, "sgd_delta",
                    "matmul", note="nonzero" if np.abs(td).max() > 0 else "ZERO on torch",
                    ref64=rd, jax64=jd64)


def check_lookahead(rep: Report, name, arrays0, r, n_train, x, y, jtemplate):
    """A step ending at step 5 (a lookahead step) from an EMA distinct from the weights."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    # a distinct EMA: the same net with every float tensor moved by a few percent
    rng = np.random.default_rng(5)
    ema_arrays = {k: (v * (1 + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype)
                      if v.dtype.kind == "f" and not (".norm" in k and k.endswith(".weight"))
                      else v) for k, v in arrays0.items()}
    ema_arrays = {k: v.astype(arrays0[k].dtype) for k, v in ema_arrays.items()}
    ts = torch_wl.from_arrays(r, n_train, arrays0, step=4, ema_arrays=ema_arrays)
    ts.step(x, y)
    ts64 = torch_wl.from_arrays(r, n_train, arrays0, step=4, ema_arrays=ema_arrays,
                                precision="float64")
    ts64.step(x, y)
    r_net, r_ema = ts64.arrays(), ts64.ema_arrays()
    js = jax_wl.from_arrays(r, n_train, arrays0, step=4, ema_arrays=ema_arrays,
                            template=jtemplate)
    js.step(x, y)
    t_net, j_net = ts.arrays(), js.arrays()
    t_ema, j_ema = ts.ema_arrays(), js.ema_arrays()
    floats = [k for k, v in t_ema.items() if v.dtype.kind == "f"]   # what the EMA averages
    for label, ta, ja, ra in (("net", t_net, j_net, r_net), ("ema", t_ema, j_ema, r_ema)):
        rep.add_worst(name, f"lookahead step 5: {label} (all float tensors)", ja, ta, floats,
                      "param_after_step", "matmul", ref64=ra)
    # the EMA must actually have moved towards the net and the net be the EMA
    moved = float(np.abs(t_ema["7.weight"] - ema_arrays["7.weight"]).max())
    rep.add_exact(name, "lookahead step 5: torch net == its ema",
                  all(np.array_equal(t_net[k], t_ema[k]) for k in floats), f"ema moved {moved:.1e}")
    rep.add_exact(name, "lookahead step 5: jax net == its ema",
                  all(np.array_equal(j_net[k], j_ema[k]) for k in floats))


def check_newton_schulz(rep: Report, seed: int = 0):
    """NS of the same matrices (wide: a 256 x 2304 filter gradient shape; tall: transposed path)."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    rng = np.random.default_rng(seed)
    for shape in ((256, 2304), (300, 64)):
        g = rng.standard_normal(shape).astype(np.float32)
        for dt, tol in (("float32", "ns_f32"), ("bfloat16", "ns_bf16")):
            t = torch_wl.newton_schulz(g, 3, 1e-7, dt)
            j = jax_wl.newton_schulz(g, 3, 1e-7, dt)
            rep.add("-", f"newton_schulz {dt} {shape[0]}x{shape[1]}", j, t, tol)


def check_renorm(rep: Report, name, arrays, r):
    """Muon with lr 0 on each conv filter: only the renormalization p*sqrt(out)/||p|| remains."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    rng = np.random.default_rng(3)
    got, want = {}, {}
    for k, v in arrays.items():
        if v.ndim != 4 or k == "0.weight":
            continue
        g = rng.standard_normal(v.shape).astype(np.float32)
        want[k] = torch_wl.muon_step(v, g, 0.0, r.muon_momentum)
        got[k] = jax_wl.muon_step(v, g, 0.0, r.muon_momentum)
    if want:
        rep.add_worst(name, "muon renorm (lr 0) on every filter", got, want, sorted(want), "renorm")
