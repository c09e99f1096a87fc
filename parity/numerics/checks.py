"""The per-recipe checks of `python -m parity.numerics` (see its module docstring): the weight
conversion, the whitening filters, forward and backward passes in each JAX conv lowering, TTA
logits, and `run_recipe_checks`, which runs them with the optimizer-step checks (steps) and the
learning rates (lr) on one recipe's shared weights and batches."""
from __future__ import annotations

import sys
import time

import numpy as np

from airbench_common import get_recipe
from airbench_common.recipes import Recipe
from airbench_common.workload import get_workload

from . import convert, inputs
from .batches import BatchStream, load_images, normalize
from .inputs import scaled_recipe
from .lr import check_lrs
from .rows import Report
from .steps import check_freeze, check_lookahead, check_renorm, check_steps

IMPLS = ("native", "matmul")
N_TRAIN = 50000   # the run length the trainers' schedules assume (a whole CIFAR-10 epoch set)


def default_impls() -> tuple[str, ...]:
    """The lowerings checked: native and matmul always, and oneDNN where it runs here (JAX on
    the CPU, oneDNN installed)."""
    runs = get_workload("jax").conv_impls()
    return IMPLS + (("onednn",) if runs.get("onednn") == "" else ())


# ---------------------------------------------------------------------- the checks
def check_roundtrip(rep: Report, name: str, arrays, r: Recipe):
    """The weights through the conversion both ways and through the local map: bit-exact."""
    jt = get_workload("jax").from_arrays(r, N_TRAIN, arrays, conv_impl=IMPLS[0])
    j_arrays = jt.arrays()
    bad = convert.bitwise_equal(arrays, j_arrays)
    rep.add_exact(name, "convert torch->jax->arrays bitwise", not bad, ", ".join(bad[:3]))
    tt = get_workload("torch").from_arrays(r, N_TRAIN, {k: np.zeros_like(v)
                                                        for k, v in arrays.items()})
    tt.load_arrays(j_arrays)
    bad = convert.bitwise_equal(arrays, tt.arrays())
    rep.add_exact(name, "convert torch->jax->torch bitwise", not bad, ", ".join(bad[:3]))
    bad = convert.bitwise_equal(arrays, convert.local_to_torch_arrays(jt.net()))
    rep.add_exact(name, "convert local map == airbench_jax map", not bad, ", ".join(bad[:3]))


def check_forward(rep: Report, name, arrays, r, x, y, impls, tag="", allow_floor=True,
                  f64_tol="forward_f64_ties"):
    """Logits, loss, every gradient and BatchNorm running stats after one forward, in train and eval
    mode, for each JAX conv impl; float64 forwards of both sides set each row's noise floor."""
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    tt = torch_wl.from_arrays(r, N_TRAIN, arrays)
    t_train, t_eval = tt.forward(x, y, train=True), tt.forward(x, y, train=False)
    t64 = torch_wl.from_arrays(r, N_TRAIN, arrays, precision="float64")
    r_train, r_eval = t64.forward(x, y, train=True), t64.forward(x, y, train=False)
    stat_keys = [k for k in arrays if k.endswith(("running_mean", "running_var"))]
    for impl in impls:
        jt = jax_wl.from_arrays(r, N_TRAIN, arrays, conv_impl=impl)
        j_train, j_eval = jt.forward(x, y, train=True), jt.forward(x, y, train=False)
        j64 = jax_wl.from_arrays(r, N_TRAIN, arrays, conv_impl=impl, precision="float64")
        q_train, q_eval = j64.forward(x, y, train=True), j64.forward(x, y, train=False)

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


def check_tta(rep: Report, name, arrays, r, x, impls):
    """Evaluation logits with test-time augmentation levels 0 to 2, each framework's own."""
    tt = get_workload("torch").from_arrays(r, N_TRAIN, arrays)
    for level in (0, 1, 2):
        tl = tt.logits(x, level)                    # x: already normalized
        for impl in impls[-1:]:
            jt = get_workload("jax").from_arrays(r, N_TRAIN, arrays, conv_impl=impl)
            rep.add(name, f"TTA logits level {level}", jt.logits(x, level), tl, "tta", impl)


def whitening_compare(rep: Report, name, r, w_nhwc):
    k = r.whiten_kernel
    tw = get_workload("torch").whitening_filters(w_nhwc, k, r.whiten_eps)
    jw = get_workload("jax").whitening_filters(w_nhwc, k, r.whiten_eps)     # both OIHW
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


# ---------------------------------------------------------------------- driver
class _Timer:
    """Logs, to stderr, the seconds since the last call with what they were spent on."""

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
    """Every check of one recipe into `rep`, on its shared weights (parity.numerics.inputs) and
    the first two batches of the stream (parity.numerics.batches), its inputs' sha256 in
    rep.meta['recipes']; `steps`/`lrs`/`bf16`: the optimizer-step, lr-schedule and bfloat16
    Newton-Schulz checks; `log`: timings and failures on stderr as they come."""
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
    imgs, labs, _, _, src = load_images(max(whiten_n, 4 * batch), data, seed)
    stream = BatchStream(imgs, labs, batch_size=batch, seed=seed, flip=r.flip, altflip=r.altflip,
                         translate=r.translate, cutout=r.cutout, total_steps=2)
    (x, y), (x2, y2) = stream.batch(0), stream.batch(1)
    w_imgs = normalize(imgs[:whiten_n])
    arrays = inputs.reference_weights(r, w_imgs, seed)
    xd = inputs.well_conditioned(x, seed)
    rep.meta.setdefault("recipes", {})[name] = dict(
        widths=r.widths, depth=r.depth, batch=batch, data=src, whiten_images=len(w_imgs),
        note=note, inputs_sha256=inputs.inputs_sha256(arrays, x, y, x2, y2, xd))
    timer = _Timer(name, log)
    first_row = len(rep.rows)
    check_roundtrip(rep, name, arrays, r)
    whitening_compare(rep, name, r, w_imgs)
    timer("roundtrip+whitening")
    n0 = len(rep.rows)
    check_forward(rep, name, arrays, r, x, y, impls)
    for row in rep.rows[n0:]:
        if row.via == "floor":
            row.note = ("ill-conditioned input: real images tie max-pool windows exactly, and "
                        "rounding breaks ties differently; see the [well-conditioned] rows" +
                        (f"; {row.note}" if row.note else ""))
    # the same checks on a well-conditioned input (no exact ties): there both sides' float64
    # results must agree to float64 rounding ("float64 both", tight); a float32 row may still need
    # the floor, where float32 itself loses digits (conv weights behind BatchNorm)
    n1 = len(rep.rows)
    check_forward(rep, name, arrays, r, xd, y, impls, tag=" [well-conditioned]",
                  f64_tol="forward_f64")
    for row in rep.rows[n1:]:
        if row.via == "floor":
            row.note = ("float32 conditioning, no ties: one framework's float32 result is this far "
                        "from float64 by rounding alone; the float64 results agree (float64 both)")
    timer("forward/grad")
    check_tta(rep, name, arrays, r, x, impls)
    timer("tta")
    if steps:
        jax_wl = get_workload("jax")
        impl = jax_wl.conv_impl("auto")  # the steps run with the lowering training uses here
        jt = jax_wl.from_arrays(r, n_train, arrays, conv_impl=impl)
        check_steps(rep, name, arrays, r, n_train, x, y, x2, y2, impl=impl, jtemplate=jt)
        check_freeze(rep, name, arrays, r, n_train, x, y, jt)
        if r.lookahead:
            check_lookahead(rep, name, arrays, r, n_train, x, y, jt)
        if r.optimizer == "muon":
            check_renorm(rep, name, arrays, r)
            if bf16:
                jb = jax_wl.from_arrays(r, n_train, arrays, conv_impl=impl, ns_dtype="bfloat16")
                check_steps(rep, name, arrays, r, n_train, x, y, x2, y2, ns_dtype="bfloat16",
                            impl=impl, jtemplate=jb, groups_only=("filters",), tag=" bf16 NS",
                            n_steps=1)
        timer("steps")
    if lrs:
        check_lrs(rep, name, r)
        timer("lrs")
    if log:
        rep.flush_failures(first_row)
        mine = [x for x in rep.rows if x.recipe == name]
        print(f"[numerics] {name}: {len(mine)} checks, {sum(not x.ok for x in mine)} failed, "
              f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return rep
