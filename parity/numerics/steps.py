"""The optimizer-step checks of `python -m parity.numerics`: one and two full train steps per
optimizer group, the whitening bias's freezing, the lookahead EMA, Newton-Schulz on fixed matrices
and Muon's renormalization, each framework's own train_step from the same weights."""
from __future__ import annotations

import copy

import numpy as np

from airbench_common import param_groups

from . import convert
from .batches import to_nchw
from .rows import Report
from ..sides import (deltas, group_names, jax_ema_arrays, jax_state, jax_state64,
                     jax_state_arrays, jax_state_from, torch_state)


def check_steps(rep: Report, name, tnet, r, n_train, x, y, x2, y2, ns_dtype="float32",
                impl="matmul", jtemplate=None, groups_only=None, tol_muon=None, tag="",
                n_steps=2):
    """One and two full train steps on each side from the same weights; deltas per group."""
    import jax
    import jax.numpy as jnp
    import torch
    from airbench_jax import train_step as j_step
    from airbench_torch.train import train_step as t_step
    arrays0 = convert.torch_to_arrays(tnet)
    gnames = group_names(tnet, r, n_train)
    ts = torch_state(r, n_train, tnet, ns_dtype)
    # float64 references of both sides (the float32 noise floor) only for float32 comparisons
    ts64 = torch_state(r, n_train, tnet, double=True) if ns_dtype == "float32" else None
    if ts64 is not None:
        with jax.enable_x64(True):
            js64 = jax_state64(r, n_train, arrays0, impl)
    js = jtemplate if jtemplate is not None else jax_state(r, n_train, arrays0, impl, ns_dtype)
    js = jax_state_from(js, arrays0, 0)
    t_before, j_before, r_before, j64_before = arrays0, jax_state_arrays(js), arrays0, arrays0
    for s, (xb, yb) in enumerate(((x, y), (x2, y2))[:n_steps]):
        tl = t_step(ts, torch.from_numpy(to_nchw(xb)), torch.from_numpy(yb))
        js, jl = j_step(js, jnp.asarray(xb), jnp.asarray(yb))
        t_after, j_after = convert.torch_to_arrays(ts.net), jax_state_arrays(js)
        r_after = rl = j64_after = jl64 = None
        if ts64 is not None:
            rl = t_step(ts64, torch.from_numpy(to_nchw(xb)), torch.from_numpy(yb))
            r_after = convert.torch_to_arrays(ts64.net)
            with jax.enable_x64(True):
                js64, jl64 = j_step(js64, jnp.asarray(xb, jnp.float64), jnp.asarray(yb))
                j64_after, jl64 = jax_state_arrays(js64), float(jl64)
        rep.add(name, f"step {s + 1}{tag}: loss", float(jl), tl, "loss", impl, ref64=rl,
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


def check_freeze(rep: Report, name, tnet, r, n_train, x, y, jtemplate):
    """A step at the whitening bias's frozen_after: its update must be exactly zero on both sides;
    and a step just before: its update must be non-zero on both sides and agree."""
    import jax
    import jax.numpy as jnp
    import torch
    from airbench_jax import train_step as j_step
    from airbench_torch.train import train_step as t_step
    wb = next(g for g in param_groups(r, n_train) if g.name == "whiten_bias").frozen_after
    arrays0 = convert.torch_to_arrays(tnet)
    xt, yt = torch.from_numpy(to_nchw(x)), torch.from_numpy(y)
    for step, frozen in ((wb - 1, False), (wb, True)):
        ts = torch_state(r, n_train, tnet, "float32", step=step)
        t_step(ts, xt, yt)
        js, _ = j_step(jax_state_from(jtemplate, arrays0, step), jnp.asarray(x), jnp.asarray(y))
        td = convert.torch_to_arrays(ts.net)["0.bias"] - arrays0["0.bias"]
        jd = jax_state_arrays(js)["0.bias"] - arrays0["0.bias"]
        if frozen:
            rep.add_exact(name, f"whiten bias frozen at step {step}: delta == 0 (both)",
                          bool(np.all(td == 0) and np.all(jd == 0)),
                          f"torch max {np.abs(td).max():.1e}, jax max {np.abs(jd).max():.1e}")
        else:  # float64 references of both sides set the noise floor, as in check_steps
            ts64 = torch_state(r, n_train, tnet, step=step, double=True)
            t_step(ts64, xt.double(), yt)
            rd = convert.torch_to_arrays(ts64.net)["0.bias"] - arrays0["0.bias"]
            with jax.enable_x64(True):
                js64 = jax_state_from(jax_state64(r, n_train, arrays0), arrays0, step)
                js64, _ = j_step(js64, jnp.asarray(x, jnp.float64), jnp.asarray(y))
                jd64 = jax_state_arrays(js64)["0.bias"] - arrays0["0.bias"]
            rep.add(name, f"whiten bias delta at step {step} (last live)", jd, td, "sgd_delta",
                    "matmul", note="nonzero" if np.abs(td).max() > 0 else "ZERO on torch",
                    ref64=rd, jax64=jd64)


def check_lookahead(rep: Report, name, tnet, r, n_train, x, y, jtemplate):
    """A step ending at step 5 (a lookahead step) from an EMA distinct from the weights."""
    import jax.numpy as jnp
    import torch
    from airbench_jax import train_step as j_step
    from airbench_torch.optim import Lookahead
    from airbench_torch.train import train_step as t_step
    arrays0 = convert.torch_to_arrays(tnet)
    # a distinct EMA: the same net with every float tensor moved by a few percent
    rng = np.random.default_rng(5)
    ema_arrays = {k: (v * (1 + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype)
                      if v.dtype.kind == "f" and not (".norm" in k and k.endswith(".weight"))
                      else v) for k, v in arrays0.items()}
    ema_arrays = {k: v.astype(arrays0[k].dtype) for k, v in ema_arrays.items()}
    ts = torch_state(r, n_train, tnet, "float32", step=4)
    tmp = copy.deepcopy(tnet)
    convert.arrays_to_torch(ema_arrays, tmp)
    ts.lookahead = Lookahead(tmp)
    t_step(ts, torch.from_numpy(to_nchw(x)), torch.from_numpy(y))
    ts64 = torch_state(r, n_train, tnet, step=4, double=True)
    ts64.lookahead = Lookahead(copy.deepcopy(tmp).double())
    t_step(ts64, torch.from_numpy(to_nchw(x)), torch.from_numpy(y))
    r_net = convert.torch_to_arrays(ts64.net)
    r_ema = {k: v.numpy() for k, v in ts64.lookahead.ema.items()}
    js = jax_state_from(jtemplate, arrays0, 4, ema_arrays=ema_arrays)
    js, _ = j_step(js, jnp.asarray(x), jnp.asarray(y))
    t_net, j_net = convert.torch_to_arrays(ts.net), jax_state_arrays(js)
    t_ema = {k: v.numpy() for k, v in ts.lookahead.ema.items()}
    j_ema = jax_ema_arrays(js)
    floats = [k for k in t_ema]
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
    import jax.numpy as jnp
    import torch
    from airbench_jax.muon import newton_schulz as j_ns
    from airbench_torch.optim import newton_schulz as t_ns
    rng = np.random.default_rng(seed)
    for shape in ((256, 2304), (300, 64)):
        g = rng.standard_normal(shape).astype(np.float32)
        for dt, tol in (("float32", "ns_f32"), ("bfloat16", "ns_bf16")):
            t = t_ns(torch.from_numpy(g), 3, 1e-7, getattr(torch, dt)).float().numpy()
            j = np.asarray(j_ns(jnp.asarray(g), 3, 1e-7, getattr(jnp, dt)).astype(jnp.float32))
            rep.add("-", f"newton_schulz {dt} {shape[0]}x{shape[1]}", j, t, tol)


def check_renorm(rep: Report, name, tnet, r):
    """Muon with lr 0 on each conv filter: only the renormalization p*sqrt(out)/||p|| remains."""
    import jax.numpy as jnp
    import optax
    import torch
    from airbench_jax.muon import muon
    from airbench_torch.optim import Muon
    rng = np.random.default_rng(3)
    arrays = convert.torch_to_arrays(tnet)
    got, want = {}, {}
    for k, v in arrays.items():
        if v.ndim != 4 or k == "0.weight":
            continue
        g = rng.standard_normal(v.shape).astype(np.float32)
        p = torch.nn.Parameter(torch.from_numpy(v.copy()))
        p.grad = torch.from_numpy(g)
        Muon([p], lr=0.0, momentum=r.muon_momentum).step()
        want[k] = p.detach().numpy()
        jp, jg = jnp.asarray(v.transpose(2, 3, 1, 0)), jnp.asarray(g.transpose(2, 3, 1, 0))
        tx = muon(0.0, r.muon_momentum)
        u, _ = tx.update(jg, tx.init(jp), jp)
        got[k] = np.asarray(optax.apply_updates(jp, u)).transpose(3, 2, 0, 1)
    if want:
        rep.add_worst(name, "muon renorm (lr 0) on every filter", got, want, sorted(want), "renorm")
