"""Numerical equivalence of airbench_jax and airbench_torch on CPU, float32.

With the same weights (initialized in torch, whitened, then perturbed so that BatchNorm biases and
running statistics are not at their trivial init values, converted to Flax by parity.convert) and
the same inputs (one batch of parity.batches' stream), for each recipe's net:

* logits in train mode (batch statistics) and eval mode (running statistics), for each JAX conv
  implementation ('native' lax.conv and the CPU 'matmul' im2col);
* the label-smoothed summed loss; gradients of every trainable parameter (by upstream name);
* BatchNorm running statistics after one train-mode forward;
* TTA logits at levels 0, 1, 2 (each framework's own infer);
* the whitening filters computed from the same images (up to sign per eigenvector) and their
  sign-free Gram matrix W^T W;
* one and two full train steps (each framework's own train_step: forward, backward, optimizer),
  compared as parameter deltas per optimizer group, with Muon's Newton-Schulz in float32, and for
  airbench94_muon also in bfloat16 (own looser bound); the whitening bias's freezing (a step at
  `frozen_after` must leave it bit-identical on both sides); the lookahead EMA (a step that ends on
  a multiple of 5, from a distinct EMA); Newton-Schulz itself on fixed wide and tall matrices;
  Muon's weight renormalization (lr 0);
* the learning rate each framework applies per group per step over a whole 50000-image run
  (torch: the lr its train_step puts in each param group, 0 for the whitening bias once frozen,
  which is how torch applies the freeze: no gradient; JAX: probed from the optax transform with
  its step counters set to t, from the update of a known gradient on fresh momentum).

Tolerances and their reasons: parity.tolerances. Exit status 1 on any failure.

    python -m parity.numerics [--recipe R|all] [--width-scale F] [--batch B] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import types
from dataclasses import asdict, dataclass, field

import numpy as np

from airbench_common import get_recipe, lr_schedules, param_groups, recipe_names
from airbench_common.recipes import Recipe

from . import convert
from .batches import BatchStream, synthetic_images, to_nchw
from .tolerances import TOLERANCES, compare

IMPLS = ("native", "matmul")


# ---------------------------------------------------------------------- precision
def setup_precision(threads: int | None = None) -> None:
    """float32 everywhere: JAX matmul/conv precision 'highest' (no TF32/bf16 passes), torch
    TF32 off and deterministic algorithms."""
    import jax
    import torch
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------- rows
@dataclass
class Row:
    recipe: str
    check: str
    tol_name: str
    max_abs: float
    rel: float
    scale: float
    tol: str
    ok: bool
    impl: str = ""
    note: str = ""
    floor: float = float("nan")   # float32 noise floor: max |float32 - float64| of either side


NOISE_FACTOR = 4.0
"""A check also passes when max|jax - torch| <= NOISE_FACTOR x the float32 noise floor, i.e. the
JAX result is no further from PyTorch's float32 result than rounding alone moves PyTorch's float32
result away from its float64 computation (two independent float32 errors: up to 2x; margin 2x).
This matters where the quantity is ill-conditioned with respect to rounding: with real images,
exact ties in max-pool windows (~0.01-0.05% of windows on JPEG CIFAR-10) are broken differently by
any rounding change, and with them the routing of the gradient, so float32 conv-filter gradients
differ from float64 ones by up to ~1e-2 (normwise) in *both* frameworks.
Where a JAX float64 run is available too (the optimizer-step checks), the floor is the larger of
the two frameworks' own float32 errors, max(|torch32 - torch64|, |jax32 - jax64|): which one
rounding happens to move further is chance, and the float64 results are compared directly."""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add(self, recipe, check, a, b, tol_name, impl="", scale=None, note="", ref64=None,
            jax64=None):
        """Row comparing JAX `a` with torch `b`; ref64/jax64: the same quantity computed in
        float64 by torch/JAX, which sets the float32 noise floor (see NOISE_FACTOR)."""
        res = compare(a, b, tol_name, scale=scale)
        floor, ok = float("nan"), res["ok"]
        if ref64 is not None:
            def err(x, x64):
                return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(x64, np.float64)),
                                    initial=0.0))
            floor = err(b, ref64) if jax64 is None else max(err(b, ref64), err(a, jax64))
            ok = ok or (np.isfinite(res["max_abs"]) and res["max_abs"] <= NOISE_FACTOR * floor)
        row = Row(recipe, check, tol_name, res["max_abs"], res["rel"], res["scale"], res["tol"],
                  bool(ok), impl, note or res.get("note", ""), floor)
        self.rows.append(row)
        return row

    def flush_failures(self, start: int = 0, stream=None) -> int:
        """Print the failed rows from index `start` on (to stderr); returns len(rows)."""
        for r in self.rows[start:]:
            if not r.ok:
                print(f"[numerics] FAIL {r.recipe} {r.check} [{r.impl}] max_abs {r.max_abs:.2e} "
                      f"rel {r.rel:.2e} tol {r.tol} {r.note}", file=stream or sys.stderr,
                      flush=True)
        return len(self.rows)

    def add_exact(self, recipe, check, ok: bool, note=""):
        self.rows.append(Row(recipe, check, "roundtrip", 0.0 if ok else float("inf"),
                             0.0 if ok else float("inf"), 0.0, "exact", bool(ok), "", note))

    def add_worst(self, recipe, check, a: dict, b: dict, names, tol_name, impl="", ref64=None,
                  note="", jax64=None):
        """One row for several tensors: the worst one's numbers; ok iff every tensor passes."""
        rows = []
        for k in names:
            self.add(recipe, check, a[k], b[k], tol_name, impl,
                     ref64=None if ref64 is None else ref64[k],
                     jax64=None if jax64 is None else jax64[k])
            rows.append((k, self.rows.pop()))
        worst_k, worst = max(rows, key=lambda kr: kr[1].rel)
        worst.ok = all(r.ok for _, r in rows)
        worst.note = f"{len(rows)} tensors, worst {worst_k}" + (f"; {note}" if note else "")
        self.rows.append(worst)
        return worst

    def add_many(self, recipe, prefix, a: dict, b: dict, tol_name, impl="", keys=None):
        """One row per key (all keys of b by default)."""
        for k in (keys if keys is not None else sorted(b)):
            if k not in a:
                self.rows.append(Row(recipe, f"{prefix} {k}", tol_name, float("inf"), float("inf"),
                                     0.0, TOLERANCES[tol_name].text(), False, impl,
                                     "missing on the JAX side"))
                continue
            self.add(recipe, f"{prefix} {k}", a[k], b[k], tol_name, impl)

    @property
    def failures(self):
        return [r for r in self.rows if not r.ok]

    def table(self, only_summary=False) -> str:
        lines = [f"{'recipe':<18} {'check':<44} {'impl':<6} {'max_abs':>9} {'rel':>9} "
                 f"{'f32floor':>9} {'tolerance':<19} {'':4}"]
        lines.append("-" * len(lines[0]))
        for r in self.rows:
            fl = "" if not np.isfinite(r.floor) else f"{r.floor:9.2e}"
            lines.append(f"{r.recipe:<18} {r.check[:44]:<44} {r.impl:<6} {r.max_abs:9.2e} "
                         f"{r.rel:9.2e} {fl:>9} {r.tol:<19} {'ok' if r.ok else 'FAIL'}"
                         + (f"  ({r.note})" if r.note else ""))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return dict(meta=self.meta, rows=[asdict(r) for r in self.rows],
                    n_fail=len(self.failures), n_rows=len(self.rows))


# ---------------------------------------------------------------------- inputs and weights
def scaled_recipe(name: str, width_scale: float = 1.0, **overrides) -> Recipe:
    r = get_recipe(name, **overrides)
    if width_scale != 1.0:
        w = tuple(max(1, int(round(x * width_scale))) for x in r.widths)
        pw = tuple(max(1, int(round(x * width_scale))) for x in r.proxy_widths)
        r = get_recipe(r, widths=w, proxy_widths=pw)
    return r


def load_images(n: int, data: str = "auto", seed: int = 0):
    """(uint8 NHWC images, labels, source label): the first n CIFAR-10 training images if a dataset
    is configured (data='auto'/'real'), else synthetic ones."""
    if data in ("auto", "real"):
        try:
            from airbench_common.data import dataset_label, load_cifar10
            imgs, labs = load_cifar10("train", download=False)
            return imgs[:n], labs[:n].astype(np.int64), dataset_label()
        except Exception as exc:  # noqa: BLE001 - any missing/corrupt dataset -> synthetic
            if data == "real":
                raise
            print(f"[numerics] no dataset ({type(exc).__name__}); using synthetic images",
                  file=sys.stderr)
    imgs, labs = synthetic_images(n, seed=seed)
    return imgs, labs, "synthetic"


def reference_torch_net(r: Recipe, whiten_nchw, seed: int = 0):
    """The torch reference net: default init (seeded), whitened from `whiten_nchw`, then BatchNorm
    biases/running stats, the whitening bias and the batch counters set to non-trivial values so
    that the conversion and eval mode are exercised."""
    import torch
    from airbench_torch.net import init_whitening, net_for_recipe
    torch.manual_seed(seed)
    net = net_for_recipe(r)
    init_whitening(net, torch.from_numpy(whiten_nchw), r.whiten_eps)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if "norm" in name and name.endswith(".bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_var"):
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name == "0.bias":
                t.copy_(0.05 * torch.randn(t.shape, generator=g))
    return net


def jax_net(r: Recipe, arrays, impl: str):
    from airbench_jax import make_net
    net = make_net(r, 0, conv_impl=impl)
    convert.jax_from_arrays(net, arrays)
    return net


def trainable_names(tnet) -> list[str]:
    return [k for k, p in tnet.named_parameters() if p.requires_grad]


def group_names(tnet, r: Recipe, n_train: int) -> dict[str, list[str]]:
    """Torch state-dict names of each param_groups() group."""
    from airbench_torch.optim import group_params
    ids = {id(p): k for k, p in tnet.named_parameters()}
    return {g.name: [ids[id(p)] for p in group_params(tnet, g.name)]
            for g in param_groups(r, n_train)}


# ---------------------------------------------------------------------- forward/backward
def torch_forward(tnet, r, x_nchw, y, train: bool):
    import torch
    import torch.nn.functional as F
    net = copy.deepcopy(tnet)
    net.train(train)
    x = torch.from_numpy(x_nchw)
    if next(net.parameters()).dtype == torch.float64:
        x = x.double()
    out = net(x)
    loss = F.cross_entropy(out if out.dtype == torch.float64 else out.float(),
                           torch.from_numpy(y), label_smoothing=r.label_smoothing,
                           reduction="sum")
    grads = {}
    if train:
        loss.backward()
        grads = {k: p.grad.detach().numpy().copy() for k, p in net.named_parameters()
                 if p.requires_grad}
    return dict(logits=out.detach().numpy(), loss=float(loss.detach()), grads=grads,
                after=convert.torch_to_arrays(net))


def jax_forward(jnet, r, x_nhwc, y, train: bool):
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax.train import per_example_loss
    graphdef, params, rest = nnx.split(jnet, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def f(p, rst):
        net = nnx.merge(graphdef, p, rst)
        logits = net(jnp.asarray(x_nhwc), train=train)
        loss = per_example_loss(logits, jnp.asarray(y), r.label_smoothing).sum()
        _, _, new_rest = nnx.split(net, nnx.Param, ...)
        return loss, (logits, nnx.to_pure_dict(new_rest))

    if train:
        (loss, (logits, new_rest)), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params, rest)
        zero_rest = jax.tree.map(jnp.zeros_like, rest)
        grads = convert.jax_to_arrays(nnx.merge(graphdef, g, zero_rest))
        grads = {k: v for k, v in grads.items() if not k.endswith((".weight",)) or "norm" not in k}
    else:
        loss, (logits, new_rest) = jax.jit(f)(params, rest)
        grads = {}
    after = convert.jax_to_arrays(nnx.merge(graphdef, params, new_rest))
    return dict(logits=np.asarray(logits), loss=float(loss), grads=grads, after=after)


# ---------------------------------------------------------------------- optimizer helpers
def set_counts(tree, t: int):
    """Every `count` field of an optax state tree set to t (momentum buffers untouched)."""
    import jax.numpy as jnp
    if hasattr(tree, "_fields"):
        vals = {f: set_counts(getattr(tree, f), t) for f in tree._fields}
        if "count" in tree._fields:
            vals["count"] = jnp.full_like(tree.count, t)
        return type(tree)(**vals)
    if isinstance(tree, dict):
        return type(tree)({k: set_counts(v, t) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return type(tree)(set_counts(v, t) for v in tree)
    return tree


def torch_state(r, n_train, tnet, ns_dtype="float32", step=0, double=False):
    """airbench_torch's TrainState on a copy of tnet (double=True: the float64 reference, with
    Newton-Schulz in float64 too)."""
    import torch
    from airbench_torch.train import make_train_state
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[ns_dtype]
    net = copy.deepcopy(tnet)
    if double:
        net = net.double()
        dt = torch.float64
    st = make_train_state(r, n_train, None, net=net, ns_dtype=dt, device="cpu")
    st.step = step
    return st


def jax_state(r, n_train, arrays, impl="matmul", ns_dtype="float32"):
    import jax.numpy as jnp
    from airbench_jax import init_train_state
    net = jax_net(r, arrays, impl)
    return init_train_state(r, n_train, 0, net=net, ns_dtype=getattr(jnp, ns_dtype),
                            conv_impl=impl)


def jax_state64(r, n_train, arrays, impl="matmul"):
    """airbench_jax's TrainState in float64 (params, activations, optimizer and Newton-Schulz):
    the JAX side's own float64 reference. Build and step it inside `jax.enable_x64(True)`."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax import init_train_state, make_net
    net = make_net(r, 0, conv_impl=impl, dtype=jnp.float64)
    nnx.update(net, jax.tree.map(lambda v: v.astype(jnp.float64)
                                 if jnp.issubdtype(v.dtype, jnp.floating) else v, nnx.state(net)))
    convert.jax_from_arrays(net, arrays)  # cast to the (now float64) variables' dtype
    return init_train_state(r, n_train, 0, net=net, ns_dtype=jnp.float64, conv_impl=impl)


def jax_state_from(template, arrays, step=0, ema_arrays=None):
    """A copy of a JAX TrainState with weights from `arrays`, fresh optimizer state, counters at
    `step` (keeps the template's static parts, so the jitted train_step is reused)."""
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax.train import net_from_state
    net = net_from_state(template)
    convert.jax_from_arrays(net, arrays)
    _, params, rest = nnx.split(net, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    opt = set_counts(template.tx.init(params), step)
    kw = dict(step=jnp.asarray(step, template.step.dtype), params=params, rest=rest, opt_state=opt)
    if template.ema is not None:
        src = arrays if ema_arrays is None else ema_arrays
        net2 = net_from_state(template)
        convert.jax_from_arrays(net2, src)
        _, p2, r2 = nnx.split(net2, nnx.Param, ...)
        p2, r2 = nnx.to_pure_dict(p2), nnx.to_pure_dict(r2)
        ema_rest = jax_float_only(r2)
        kw["ema"] = (p2, ema_rest)
    return template.replace(**kw)


def jax_float_only(tree):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda v: v if jnp.issubdtype(v.dtype, jnp.floating) else None, tree)


def jax_state_arrays(st) -> dict:
    from airbench_jax.train import net_from_state
    return convert.jax_to_arrays(net_from_state(st))


def jax_ema_arrays(st) -> dict:
    import jax
    from flax import nnx
    p, r = st.ema
    r = jax.tree.map(lambda new, old: old if new is None else new, r, st.rest,
                     is_leaf=lambda v: v is None)
    return convert.jax_to_arrays(nnx.merge(st.graphdef, p, r))


def deltas(after: dict, before: dict, names) -> dict:
    return {k: np.asarray(after[k], np.float64) - np.asarray(before[k], np.float64) for k in names}


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


def check_forward(rep: Report, name, tnet, r, x, y, impls):
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
        rep.add(name, "logits train mode", j_train["logits"], t_train["logits"], "logits_train", impl,
                ref64=r_train["logits"])
        rep.add(name, "logits eval mode", j_eval["logits"], t_eval["logits"], "logits_eval", impl,
                ref64=r_eval["logits"])
        rep.add(name, "loss (train mode, summed, ls 0.2)", j_train["loss"], t_train["loss"], "loss",
                impl, ref64=r_train["loss"])
        rep.add(name, "loss (eval mode)", j_eval["loss"], t_eval["loss"], "loss", impl,
                ref64=r_eval["loss"])
        for k in sorted(t_train["grads"]):
            rep.add(name, f"grad {k}", j_train["grads"].get(k, np.full(1, np.inf)),
                    t_train["grads"][k], "grad", impl, ref64=r_train["grads"][k])
        extra = sorted(set(k for k, v in j_train["grads"].items() if np.any(v != 0))
                       - set(t_train["grads"]))
        if extra:  # a JAX parameter with gradient that torch does not train
            rep.add_exact(name, "no grads beyond torch's trainables", False, ", ".join(extra[:4]))
        rep.add_worst(name, "BN running stats after 1 train fwd", j_train["after"],
                      t_train["after"], stat_keys, "running_stats", impl, ref64=r_train["after"])
        nbt = [k for k in arrays if k.endswith("num_batches_tracked")]
        same = all(int(j_train["after"][k]) == int(t_train["after"][k]) for k in nbt)
        rep.add_exact(name, "BN num_batches_tracked after 1 fwd", same)
    return t_train


def check_tta(rep: Report, name, tnet, r, x, impls):
    import torch
    from flax import nnx
    from airbench_torch.train import infer as t_infer
    from airbench_jax.train import infer_arrays
    xc = torch.from_numpy(to_nchw(x))
    loader = types.SimpleNamespace(images=xc, normalize=lambda t: t)  # already normalized
    arrays = convert.torch_to_arrays(tnet)
    for level in (0, 1, 2):
        tl = t_infer(copy.deepcopy(tnet), loader, level).numpy()
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
    c = w_nhwc.shape[-1]
    xx = np.asarray(w_nhwc, np.float64)
    ho = xx.shape[1] - k + 1
    feats = np.stack([xx[:, i:i + ho, j:j + ho, ch] for ch in range(c) for i in range(k)
                      for j in range(k)], -1).reshape(-1, c * k * k)
    cov = feats.T @ feats / len(feats)
    ev, vec = np.linalg.eigh(cov)
    ev, vec = ev[::-1], vec[:, ::-1]
    f64 = vec.T / np.sqrt(ev + r.whiten_eps)[:, None]
    ref = np.concatenate([f64, -f64])
    sg = np.sign(np.sum(ref[:half] * b[:half], axis=1))
    sg[sg == 0] = 1
    ref_al = np.concatenate([ref[:half] * sg[:, None], ref[half:] * sg[:, None]])
    rep.add(name, "whitening filters (sign-aligned)", a_al, b, "whiten_filters",
            note=f"{nflip}/{half} eigenvector signs differ; eig ratio {ev[0] / ev[-1]:.1e}",
            ref64=ref_al)
    rep.add(name, "whitening W^T W (sign-free)", a.T @ a, b.T @ b, "whiten_gram",
            ref64=ref.T @ ref)
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


def torch_lrs(r: Recipe, n_train: int, tnet) -> dict[str, np.ndarray]:
    """lr per group per step as torch's train_step sets it (set_learning_rates), with the
    whitening bias at 0 from its frozen_after on (torch's train_step then gives it no grad)."""
    from airbench_torch.optim import set_learning_rates
    st = torch_state(r, n_train, tnet)
    total = r.total_steps(n_train)
    out = {}
    for t in range(total):
        set_learning_rates(st.optimizers, st.schedules, t)
        for opt in st.optimizers:
            for pg in opt.param_groups:
                spec = pg["spec"]
                lr = pg["lr"]
                if spec.frozen_after is not None and t >= spec.frozen_after:
                    lr = 0.0
                out.setdefault(spec.name, np.zeros(total))[t] = lr
    return out


def jax_lrs(r: Recipe, n_train: int) -> dict[str, np.ndarray]:
    """lr per group per step probed from airbench_jax's optax transform: counters set to t, zero
    momentum, gradient of ones, SGD params at 0 (update = -lr*(1+m)); Muon params of Frobenius
    norm sqrt(out) (renorm ~ identity) and update = -lr*NS((1+m)*g)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from airbench_jax import make_net
    from airbench_jax.muon import flatten_filter, newton_schulz, unflatten_filter
    from airbench_jax.optim import build_optimizer, labels_for
    small = get_recipe(r, widths=(2, 2, 2), proxy_widths=(2, 2, 2))
    _, params, _ = nnx.split(make_net(small, 0), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    tx = build_optimizer(r, n_train, params, ns_dtype=jnp.float32)
    labels = labels_for(params, r)
    groups = {g.name: g for g in param_groups(r, n_train)}

    def probe_params(p, lab):
        if groups[lab].kind == "muon":
            out = p.shape[-1]
            return jnp.full(p.shape, math.sqrt(out) / math.sqrt(p.size), p.dtype)
        return jnp.zeros_like(p)

    pp = jax.tree.map(probe_params, params, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    state0 = tx.init(pp)

    @jax.jit
    def upd(t):
        # minus the same update with a zero gradient (NS(0) = 0): leaves -lr*NS((1+m)g) alone,
        # without the renormalization's rounding residue
        return jax.tree.map(lambda a, b: a - b, tx.update(grads, set_counts(state0, t), pp)[0],
                            tx.update(zeros, set_counts(state0, t), pp)[0])

    leaves_l = jax.tree.leaves(labels)
    total = r.total_steps(n_train)
    out = {name: np.zeros(total) for name in groups}
    ns_dir = {}
    for t in range(total):
        u = upd(jnp.asarray(t, jnp.int32))
        per = {}
        for lab, leaf, p in zip(leaves_l, jax.tree.leaves(u), jax.tree.leaves(pp)):
            g = groups[lab]
            if g.kind == "sgd":
                val = -float(np.asarray(leaf).ravel()[0]) / (1 + g.momentum)
            else:
                key = p.shape
                if key not in ns_dir:
                    gm = (1 + g.momentum) * jnp.ones(p.shape, jnp.float32)
                    o = unflatten_filter(newton_schulz(flatten_filter(gm), r.muon_ns_steps,
                                                       r.muon_eps, jnp.float32), p.shape)
                    ns_dir[key] = np.asarray(o, np.float64)
                o = ns_dir[key]
                val = -float(np.sum(np.asarray(leaf, np.float64) * o) / np.sum(o * o))
            per.setdefault(lab, []).append(val)
        for lab, vals in per.items():
            out[lab][t] = float(np.mean(vals))
    return out


def check_lrs(rep: Report, name, r: Recipe, tnet, n_train: int = 50000):
    tl = torch_lrs(r, n_train, tnet)
    jl = jax_lrs(r, n_train)
    sched = lr_schedules(r, n_train)
    total = r.total_steps(n_train)
    for g in param_groups(r, n_train):
        ref = g.lr * sched[g.schedule][:total]
        if g.frozen_after is not None:
            ref = np.where(np.arange(total) >= g.frozen_after, 0.0, ref)
        scale = float(np.abs(ref).max())
        rep.add(name, f"lr schedule [{g.name}] jax vs torch ({total} steps)", jl[g.name],
                tl[g.name], "lr", scale=scale)
        rep.add(name, f"lr schedule [{g.name}] torch vs recipe", tl[g.name], ref, "lr",
                scale=scale)


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
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from airbench_jax.muon import muon
    from airbench_torch.optim import Muon
    rng = np.random.default_rng(3)
    arrays = convert.torch_to_arrays(tnet)
    worst, worst_res, ok_all = None, None, True
    for k, v in arrays.items():
        if v.ndim != 4 or k == "0.weight":
            continue
        g = rng.standard_normal(v.shape).astype(np.float32)
        p = torch.nn.Parameter(torch.from_numpy(v.copy()))
        p.grad = torch.from_numpy(g)
        Muon([p], lr=0.0, momentum=r.muon_momentum).step()
        tp = p.detach().numpy()
        jp, jg = jnp.asarray(v.transpose(2, 3, 1, 0)), jnp.asarray(g.transpose(2, 3, 1, 0))
        tx = muon(0.0, r.muon_momentum)
        u, _ = tx.update(jg, tx.init(jp), jp)
        jout = np.asarray(optax.apply_updates(jp, u)).transpose(3, 2, 0, 1)
        res = compare(jout, tp, "renorm")
        ok_all &= res["ok"]
        if worst_res is None or res["rel"] > worst_res["rel"]:
            worst, worst_res = k, res
    if worst_res is not None:
        rep.rows.append(Row(name, "muon renorm (lr 0) on every filter", "renorm",
                            worst_res["max_abs"], worst_res["rel"], worst_res["scale"],
                            worst_res["tol"], ok_all, "", f"worst {worst}"))


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
                      impls=IMPLS, whiten_n=5000, n_train=50000, steps=True, lrs=True,
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
    imgs, labs, src = load_images(max(whiten_n, 4 * batch), data, seed)
    stream = BatchStream(imgs, labs, batch_size=batch, seed=seed, flip=r.flip, altflip=r.altflip,
                         translate=r.translate, cutout=r.cutout, total_steps=2)
    (x, y), (x2, y2) = stream.batch(0), stream.batch(1)
    from .batches import normalize
    w_imgs = normalize(imgs[:whiten_n])
    tnet = reference_torch_net(r, to_nchw(w_imgs), seed)
    rep.meta.setdefault("recipes", {})[name] = dict(widths=r.widths, depth=r.depth, batch=batch,
                                                    data=src, whiten_images=len(w_imgs),
                                                    note=note)
    timer = _Timer(name, log)
    first_row = len(rep.rows)
    check_roundtrip(rep, name, tnet, r)
    whitening_compare(rep, name, r, w_imgs)
    timer("roundtrip+whitening")
    check_forward(rep, name, tnet, r, x, y, impls)
    timer("forward/grad")
    check_tta(rep, name, tnet, r, x, impls)
    timer("tta")
    if steps:
        arrays0 = convert.torch_to_arrays(tnet)
        jt = jax_state(r, n_train, arrays0, "matmul", "float32")
        check_steps(rep, name, tnet, r, n_train, x, y, x2, y2, jtemplate=jt)
        check_freeze(rep, name, tnet, r, n_train, x, y, jt)
        if r.lookahead:
            check_lookahead(rep, name, tnet, r, n_train, x, y, jt)
        if r.optimizer == "muon":
            check_renorm(rep, name, tnet, r)
            if bf16:
                jb = jax_state(r, n_train, arrays0, "matmul", "bfloat16")
                check_steps(rep, name, tnet, r, n_train, x, y, x2, y2, ns_dtype="bfloat16",
                            jtemplate=jb, groups_only=("filters",), tag=" bf16 NS", n_steps=1)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parity.numerics", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="all",
                    help="a recipe name, comma-separated names, or 'all' (default)")
    ap.add_argument("--width-scale", type=float, default=1.0, help="multiply the widths (default 1)")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the checks (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto",
                    help="images: CIFAR-10 if configured (auto), or synthetic")
    ap.add_argument("--whiten-images", type=int, default=5000)
    ap.add_argument("--impls", default="native,matmul", help="JAX conv impls for forward checks")
    ap.add_argument("--no-steps", action="store_true", help="skip the optimizer-step checks")
    ap.add_argument("--no-lrs", action="store_true", help="skip the lr-schedule checks")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 Muon step")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    setup_precision(args.threads)
    names = recipe_names() if args.recipe == "all" else args.recipe.split(",")
    rep = Report(meta=dict(argv=sys.argv[1:] if argv is None else list(argv),
                           width_scale=args.width_scale, batch=args.batch, seed=args.seed))
    try:
        from airbench_common.env import package_versions
        rep.meta["versions"] = package_versions("jax", "jaxlib", "flax", "optax", "torch", "numpy")
    except Exception:  # noqa: BLE001
        pass
    t0 = time.time()
    check_newton_schulz(rep, args.seed)
    for name in names:
        run_recipe_checks(rep, name, width_scale=args.width_scale, batch=args.batch,
                          seed=args.seed, data=args.data, whiten_n=args.whiten_images,
                          impls=tuple(i for i in args.impls.split(",") if i),
                          steps=not args.no_steps, lrs=not args.no_lrs, bf16=not args.no_bf16)
        if args.json:  # after every recipe, so that a long run leaves usable partial results
            _write_json(args.json, rep)
    rep.meta["seconds"] = round(time.time() - t0, 1)
    print(rep.table())
    fails = rep.failures
    print(f"\n{len(rep.rows)} checks, {len(fails)} failed ({rep.meta['seconds']} s)")
    for f in fails:
        print(f"FAIL {f.recipe} {f.check} [{f.impl}] max_abs {f.max_abs:.3e} rel {f.rel:.3e} "
              f"tol {f.tol} {f.note}")
    if args.json:
        _write_json(args.json, rep)
    return 1 if fails else 0


def _write_json(path, rep: Report) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(rep.to_json(), fh, indent=1, default=float)
    os.replace(path + ".tmp", path)


def table_from_json(path) -> str:
    """The table of a (possibly partial) --json file."""
    with open(path) as fh:
        d = json.load(fh)
    rep = Report(rows=[Row(**r) for r in d["rows"]], meta=d.get("meta", {}))
    return rep.table()


if __name__ == "__main__":
    sys.exit(main())
