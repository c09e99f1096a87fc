"""Numerical equivalence of airbench_jax and airbench_torch on CPU, float32.

With the same weights and inputs on every machine (parity.inputs: made in numpy float64 and rounded
to 20 significant bits, with canonical eigenvector signs, so no kernel's choice of sign or
summation order reaches them; their sha256 is in the JSON per recipe) -- weights loaded into the
torch net and converted to Flax by parity.convert, one batch of parity.batches' stream -- per net:

* logits in train mode (batch statistics) and eval mode (running statistics), for each JAX conv
  implementation ('native' lax.conv, the CPU 'matmul' im2col, and 'onednn' where available; the
  steps below use the lowering training uses here), on the real batch and on a
  "[well-conditioned]" copy (parity.inputs.well_conditioned: no exact max-pool ties, which make
  some gradients of real images discontinuous in rounding), and both sides' float64 results
  compared directly ("float64 both": on the well-conditioned copy they agree to ~1e-14);
* the label-smoothed summed loss; gradients of every trainable parameter (by upstream name);
  BatchNorm running statistics after one train-mode forward;
* TTA logits at levels 0, 1, 2 (each framework's own infer); the whitening filters from the same
  images (up to sign per eigenvector) and W^T W (sign-free);
* one and two full train steps (each framework's own train_step: forward, backward, optimizer),
  compared as parameter deltas per optimizer group, with Muon's Newton-Schulz in float32, and for
  airbench94_muon also in bfloat16 (own looser bound); the whitening bias's freezing (a step at
  `frozen_after` must leave it bit-identical on both sides); the lookahead EMA (a step that ends on
  a multiple of 5, from a distinct EMA); Newton-Schulz itself on fixed wide and tall matrices;
  Muon's weight renormalization (lr 0);
* the learning rate per group per step of a 50000-image run (torch: what train_step sets per
  param group, 0 for a frozen whitening bias; JAX: probed from the optax transform).

Each row reports its bound (the tolerance's, or NOISE_FACTOR x the float32 floor from a float64
reference of both sides), its margin (bound / max_abs) and what it passed by. Tolerances and their
reasons: parity.tolerances. Exit status 1 on any failure.

    python -m parity.numerics [--recipe R|all] [--width-scale F] [--batch B] [--json out.json]
"""
from __future__ import annotations

import copy
import sys
import time

import numpy as np

from airbench_common import get_recipe, param_groups
from airbench_common.errors import cli_main
from airbench_common.validate import OptionError
from airbench_common.recipes import Recipe
from airbench_common.records import write_json_atomic

from . import args as A
from . import convert, inputs
from .batches import BatchStream, to_nchw
from .lr_checks import check_lrs
from .rows import NOISE_FACTOR, Report
from .sides import (deltas, group_names, jax_ema_arrays, jax_forward, jax_net, jax_net64,
                    jax_state, jax_state64, jax_state_arrays, jax_state_from, load_images,
                    reference_torch_net, scaled_recipe, setup_precision, torch_forward,
                    torch_state)

IMPLS = ("native", "matmul")


MAX_BATCH = 1024  # the checks hold 4 batches of images and float64 copies of every activation


def check_impls(text) -> tuple[str, ...] | None:
    """--impls: None (the default lowerings) or JAX conv lowerings that exist and run here."""
    impls = tuple(i.strip() for i in str(text).split(",") if i.strip())
    if not impls:
        return None
    known = IMPLS + ("onednn", "hybrid")
    for impl in impls:
        if impl not in known:
            raise OptionError(f"--impls: {impl!r} is not a JAX conv lowering; give "
                              f"comma-separated names among {', '.join(known)}")
    if "onednn" in impls:
        from airbench_jax import onednn  # noqa: PLC0415
        st = onednn.status()
        if not st.available:
            raise OptionError(f"--impls onednn: oneDNN is not available here ({st.reason}); "
                              f"give {', '.join(IMPLS)}")
    return impls


def default_impls() -> tuple[str, ...]:
    """The lowerings checked: native and matmul always, and oneDNN where JAX runs on the CPU and
    it is available."""
    import jax
    from airbench_jax import onednn
    on_cpu = jax.default_backend() == "cpu"
    return IMPLS + (("onednn",) if on_cpu and onednn.status().available else ())


# ---------------------------------------------------------------------- the checks
def check_roundtrip(rep: Report, name: str, tnet, r: Recipe):
    import torch
    arrays = convert.torch_to_arrays(tnet)
    for impl in IMPLS[:1]:
        jnet = jax_net(r, arrays, impl)
        back = convert.jax_to_arrays(jnet)
        bad = convert.bitwise_equal(arrays, back)
        rep.add_exact(name, "convert torch->jax->arrays bitwise", not bad, ", ".join(bad[:3]))
        t2 = copy.deepcopy(tnet)
        with torch.no_grad():
            for p in t2.state_dict().values():
                p.zero_()
        convert.jax_to_torch(jnet, t2)
        bad = convert.bitwise_equal(arrays, convert.torch_to_arrays(t2))
        rep.add_exact(name, "convert torch->jax->torch bitwise", not bad, ", ".join(bad[:3]))
        local = convert.local_to_torch_arrays(jnet)
        bad = convert.bitwise_equal(arrays, local)
        rep.add_exact(name, "convert local map == airbench_jax map", not bad, ", ".join(bad[:3]))


def check_forward(rep: Report, name, tnet, r, x, y, impls, tag="", allow_floor=True,
                  f64_tol="forward_f64_ties"):
    """Logits, loss, every gradient and BatchNorm running stats after one forward, in train and eval
    mode, for each JAX conv impl; float64 forwards of both sides set each row's noise floor."""
    import jax
    xc = to_nchw(x)
    arrays = convert.torch_to_arrays(tnet)
    t_train = torch_forward(tnet, r, xc, y, train=True)
    t_eval = torch_forward(tnet, r, xc, y, train=False)
    t64 = copy.deepcopy(tnet).double()
    r_train = torch_forward(t64, r, xc, y, train=True)
    r_eval = torch_forward(t64, r, xc, y, train=False)
    stat_keys = [k for k in arrays if k.endswith(("running_mean", "running_var"))]
    for impl in impls:
        j_train = jax_forward(jax_net(r, arrays, impl), r, x, y, train=True)
        j_eval = jax_forward(jax_net(r, arrays, impl), r, x, y, train=False)
        with jax.enable_x64(True):
            x64 = np.asarray(x, np.float64)
            q_train = jax_forward(jax_net64(r, arrays, impl), r, x64, y, train=True)
            q_eval = jax_forward(jax_net64(r, arrays, impl), r, x64, y, train=False)

        def add(check, j, t, ref, q, tol):
            rep.add(name, check + tag, j, t, tol, impl, ref64=ref, jax64=q,
                    allow_floor=allow_floor)

        add("logits train mode", j_train["logits"], t_train["logits"], r_train["logits"],
            q_train["logits"], "logits_train")
        add("logits eval mode", j_eval["logits"], t_eval["logits"], r_eval["logits"],
            q_eval["logits"], "logits_eval")
        add("loss (train mode, summed, ls 0.2)", j_train["loss"], t_train["loss"], r_train["loss"],
            q_train["loss"], "loss")
        add("loss (eval mode)", j_eval["loss"], t_eval["loss"], r_eval["loss"], q_eval["loss"],
            "loss")
        for k in sorted(t_train["grads"]):
            add(f"grad {k}", j_train["grads"].get(k, np.full(1, np.inf)), t_train["grads"][k],
                r_train["grads"][k], q_train["grads"].get(k, np.full(1, np.inf)), "grad")
        # the float64 results of both sides, compared directly: the algorithms agree, so the floor
        # each float32 row may use is rounding, not a difference between the frameworks
        f64 = {"logits": (q_train["logits"], r_train["logits"])}
        f64.update({k: (q_train["grads"].get(k, np.full(1, np.inf)), r_train["grads"][k])
                    for k in t_train["grads"]})
        rep.add_worst(name, "float64 both: logits and every grad" + tag,
                      {k: v[0] for k, v in f64.items()}, {k: v[1] for k, v in f64.items()},
                      sorted(f64), f64_tol, impl)
        extra = sorted(set(k for k, v in j_train["grads"].items() if np.any(v != 0))
                       - set(t_train["grads"]))
        if extra:  # a JAX parameter with gradient that torch does not train
            rep.add_exact(name, "no grads beyond torch's trainables" + tag, False,
                          ", ".join(extra[:4]))
        rep.add_worst(name, "BN running stats after 1 train fwd" + tag, j_train["after"],
                      t_train["after"], stat_keys, "running_stats", impl, ref64=r_train["after"],
                      jax64=q_train["after"], allow_floor=allow_floor)
        nbt = [k for k in arrays if k.endswith("num_batches_tracked")]
        same = all(int(j_train["after"][k]) == int(t_train["after"][k]) for k in nbt)
        rep.add_exact(name, "BN num_batches_tracked after 1 fwd" + tag, same)
    return t_train


def check_tta(rep: Report, name, tnet, r, x, impls):
    import torch
    from flax import nnx
    from airbench_torch.train import infer_images
    from airbench_jax.evaluation import infer_arrays
    xc = torch.from_numpy(to_nchw(x))                 # already normalized
    arrays = convert.torch_to_arrays(tnet)
    for level in (0, 1, 2):
        tl = infer_images(copy.deepcopy(tnet), xc, level)[1].numpy()
        for impl in impls[-1:]:
            g, p, rest = nnx.split(jax_net(r, arrays, impl), nnx.Param, ...)
            p, rest = nnx.to_pure_dict(p), nnx.to_pure_dict(rest)
            jl = np.asarray(infer_arrays(g, p, rest, x, level, batch=len(x)))
            rep.add(name, f"TTA logits level {level}", jl, tl, "tta", impl)


def whitening_compare(rep: Report, name, r, w_nhwc):
    import torch
    from airbench_torch.net import whitening_filters
    from airbench_jax.model import whitening_kernel
    k = r.whiten_kernel
    tw = whitening_filters(torch.from_numpy(to_nchw(w_nhwc)), k, r.whiten_eps).numpy()
    jw = np.asarray(whitening_kernel(w_nhwc, k, r.whiten_eps)).transpose(3, 2, 0, 1)  # -> OIHW
    half = tw.shape[0] // 2
    a = jw.reshape(tw.shape[0], -1).astype(np.float64)
    b = tw.reshape(tw.shape[0], -1).astype(np.float64)
    signs = np.sign(np.sum(a[:half] * b[:half], axis=1))
    signs[signs == 0] = 1
    a_al = np.concatenate([a[:half] * signs[:, None], a[half:] * signs[:, None]])
    nflip = int((signs < 0).sum())
    # float64 reference: covariance and eigh in float64 from the same images
    ref = inputs.whitening_filters64(w_nhwc, k, r.whiten_eps).reshape(2 * half, -1)
    ev = np.linalg.eigvalsh(inputs.patch_covariance64(w_nhwc, k))[::-1]
    sg = np.sign(np.sum(ref[:half] * b[:half], axis=1))
    sg[sg == 0] = 1
    ref_al = np.concatenate([ref[:half] * sg[:, None], ref[half:] * sg[:, None]])
    rep.add(name, "whitening filters (sign-aligned)", a_al, b, "whiten_filters",
            note=f"{nflip}/{half} eigenvector signs differ; eig ratio {ev[0] / ev[-1]:.1e}",
            ref64=ref_al)
    rep.add(name, "whitening W^T W (sign-free)", a.T @ a, b.T @ b, "whiten_gram",
            ref64=ref.T @ ref, note="PyTorch's float32 eigh (as upstream) vs JAX's float64 eigh: "
            "small-eigenvalue directions are scaled up by 1/sqrt(l + eps)")
    # per-eigenvector detail: worst relative error of one filter
    per = np.abs(a_al - b).max(1) / np.abs(b).max(1)
    rep.rows[-2].note += f"; worst filter {int(per.argmax())} rel {per.max():.1e}"


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


# ---------------------------------------------------------------------- driver
class _Timer:
    def __init__(self, name, on):
        self.name, self.on, self.t = name, on, time.time()

    def __call__(self, what):
        if self.on:
            print(f"[numerics] {self.name}: {what} {time.time() - self.t:.1f} s", file=sys.stderr,
                  flush=True)
        self.t = time.time()


def run_recipe_checks(rep: Report, name: str, *, width_scale=1.0, batch=32, seed=0, data="auto",
                      impls=None, whiten_n=5000, n_train=50000, steps=True, lrs=True,
                      bf16=True, log=True):
    t0 = time.time()
    r = scaled_recipe(name, width_scale)
    if r.filter_keep:
        # the main net's checks do not involve the proxy's selection (it needs batch > keep);
        # the step checks keep it off: the selection is a separate, discrete mechanism
        r = get_recipe(r, filter_keep=0)
        note = "filter_keep=0 for the step checks (proxy selection not compared)"
    else:
        note = ""
    impls = default_impls() if impls is None else impls
    imgs, labs, src = load_images(max(whiten_n, 4 * batch), data, seed)
    stream = BatchStream(imgs, labs, batch_size=batch, seed=seed, flip=r.flip, altflip=r.altflip,
                         translate=r.translate, cutout=r.cutout, total_steps=2)
    (x, y), (x2, y2) = stream.batch(0), stream.batch(1)
    from .batches import normalize
    w_imgs = normalize(imgs[:whiten_n])
    tnet = reference_torch_net(r, w_imgs, seed)
    xd = inputs.well_conditioned(x, seed)
    rep.meta.setdefault("recipes", {})[name] = dict(
        widths=r.widths, depth=r.depth, batch=batch, data=src, whiten_images=len(w_imgs),
        note=note, inputs_sha256=inputs.inputs_sha256(convert.torch_to_arrays(tnet), x, y, x2, y2,
                                                      xd))
    timer = _Timer(name, log)
    first_row = len(rep.rows)
    check_roundtrip(rep, name, tnet, r)
    whitening_compare(rep, name, r, w_imgs)
    timer("roundtrip+whitening")
    n0 = len(rep.rows)
    check_forward(rep, name, tnet, r, x, y, impls)
    for row in rep.rows[n0:]:
        if row.via == "floor":
            row.note = ("ill-conditioned input: real images tie max-pool windows exactly, and "
                        "rounding breaks ties differently; see the [well-conditioned] rows" +
                        (f"; {row.note}" if row.note else ""))
    # the same checks on a well-conditioned input (no exact ties): there both sides' float64
    # results must agree to float64 rounding ("float64 both", tight); a float32 row may still need
    # the floor, where float32 itself loses digits (conv weights behind BatchNorm)
    n1 = len(rep.rows)
    check_forward(rep, name, tnet, r, xd, y, impls, tag=" [well-conditioned]",
                  f64_tol="forward_f64")
    for row in rep.rows[n1:]:
        if row.via == "floor":
            row.note = ("float32 conditioning, no ties: one framework's float32 result is this far "
                        "from float64 by rounding alone; the float64 results agree (float64 both)")
    timer("forward/grad")
    check_tta(rep, name, tnet, r, x, impls)
    timer("tta")
    if steps:
        from airbench_jax.conv import resolve_impl
        arrays0 = convert.torch_to_arrays(tnet)
        impl = resolve_impl("auto")  # the steps run with the lowering training uses here
        jt = jax_state(r, n_train, arrays0, impl, "float32")
        check_steps(rep, name, tnet, r, n_train, x, y, x2, y2, impl=impl, jtemplate=jt)
        check_freeze(rep, name, tnet, r, n_train, x, y, jt)
        if r.lookahead:
            check_lookahead(rep, name, tnet, r, n_train, x, y, jt)
        if r.optimizer == "muon":
            check_renorm(rep, name, tnet, r)
            if bf16:
                jb = jax_state(r, n_train, arrays0, impl, "bfloat16")
                check_steps(rep, name, tnet, r, n_train, x, y, x2, y2, ns_dtype="bfloat16",
                            impl=impl, jtemplate=jb, groups_only=("filters",), tag=" bf16 NS", n_steps=1)
        timer("steps")
    if lrs:
        check_lrs(rep, name, r, tnet)
        timer("lrs")
    if log:
        rep.flush_failures(first_row)
        mine = [x for x in rep.rows if x.recipe == name]
        print(f"[numerics] {name}: {len(mine)} checks, {sum(not x.ok for x in mine)} failed, "
              f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return rep


@cli_main
def main(argv=None) -> int:
    ap = A.parser("python -m parity.numerics", __doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="all",
                    help="a recipe name, comma-separated names, or 'all' (default)")
    ap.add_argument("--width-scale", type=float, default=1.0,
                    help="multiply the widths (default 1; at most 4)")
    ap.add_argument("--batch", type=int, default=32,
                    help=f"batch size of the checks (default 32; 2 to {MAX_BATCH})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto",
                    help="images: CIFAR-10 if configured (auto), or synthetic")
    ap.add_argument("--whiten-images", type=int, default=5000,
                    help="images the whitening is computed from (1 to 50000)")
    ap.add_argument("--impls", default="",
                    help="JAX conv impls for forward checks, comma-separated (default: native, "
                         "matmul, and onednn where available)")
    ap.add_argument("--no-steps", action="store_true", help="skip the optimizer-step checks")
    ap.add_argument("--no-lrs", action="store_true", help="skip the lr-schedule checks")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 Muon step")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    # -- every option and the output path, before any check runs
    names = A.recipe_list(args.recipe)
    args.width_scale = A.width_scale(args.width_scale)
    for name in names:
        A.check_recipe(name, args.width_scale)
    args.batch = A.count("--batch", args.batch, low=2, high=MAX_BATCH)
    args.seed = A.seed(args.seed)
    args.whiten_images = A.count("--whiten-images", args.whiten_images, high=50000)
    args.threads = A.threads(args.threads)
    impls = check_impls(args.impls)
    A.out_file(args.json)
    setup_precision(args.threads)
    rep = Report(meta=dict(argv=sys.argv[1:] if argv is None else list(argv),
                           width_scale=args.width_scale, batch=args.batch, seed=args.seed))
    from airbench_common.env import cpu_flags_of_interest, machine_info, package_versions
    rep.meta["versions"] = package_versions("jax", "jaxlib", "flax", "optax", "torch")
    rep.meta["machine"] = dict(machine_info(), cpu_flags=cpu_flags_of_interest())
    rep.meta["floor_rule"] = (f"pass iff max_abs <= atol + rtol*scale, or (rows marked 'floor') "
                              f"max_abs <= {NOISE_FACTOR:g} * floor, floor = max(max|torch32 - "
                              f"torch64|, max|jax32 - jax64|) from the same inputs; margin = "
                              f"bound / max_abs")
    t0 = time.time()
    check_newton_schulz(rep, args.seed)
    for name in names:
        run_recipe_checks(rep, name, width_scale=args.width_scale, batch=args.batch,
                          seed=args.seed, data=args.data, whiten_n=args.whiten_images,
                          impls=impls,
                          steps=not args.no_steps, lrs=not args.no_lrs, bf16=not args.no_bf16)
        if args.json:  # after every recipe, so that a long run leaves usable partial results
            write_json_atomic(args.json, rep.to_json())
    rep.meta["seconds"] = round(time.time() - t0, 1)
    print(rep.table())
    fails = rep.failures
    near = [x for x in rep.rows if x.ok and x.margin < 2]
    via_floor = [x for x in rep.rows if x.via == "floor"]
    print(f"\n{len(rep.rows)} checks, {len(fails)} failed ({rep.meta['seconds']} s); "
          f"{len(via_floor)} passed by the float32 floor, {len(near)} with margin < 2")
    for name, m in rep.meta.get("recipes", {}).items():
        print(f"inputs sha256 {name}: {m['inputs_sha256']}")
    for f in fails:
        print(f"FAIL {f.recipe} {f.check} [{f.impl}] max_abs {f.max_abs:.3e} rel {f.rel:.3e} "
              f"tol {f.tol} {f.note}")
    if args.json:
        write_json_atomic(args.json, rep.to_json())
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
