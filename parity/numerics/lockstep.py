"""Lockstep training (`python -m parity.lockstep`, whose docstring says what it measures): the
four trajectories step by step (`run`), the divergence summary (`summarize`, `summary_table`) and
the plot."""
from __future__ import annotations

import math
import time

import numpy as np

from airbench_common.workload import get_workload

from .batches import BatchStream, load_images, normalize
from .groups import trainable_names
from .inputs import scaled_recipe

THRESHOLDS = (1e-4, 1e-3, 1e-2, 1e-1)
PAIRS = ("cross", "self_torch", "self_jax")


def perturb_ulp(arrays: dict) -> dict:
    """Every float tensor moved one ulp towards +inf (BatchNorm weights stay at exactly 1)."""
    out = {}
    for k, v in arrays.items():
        if v.dtype.kind == "f" and not (".norm" in k and k.endswith(".weight")):
            out[k] = np.nextafter(v, np.asarray(np.inf, v.dtype)).astype(v.dtype)
        else:
            out[k] = v.copy()
    return out


def rel_distances(a: dict, b: dict, names) -> tuple[dict, float, float]:
    """(per-layer ||a-b||/||a||, global over all names, max over layers)."""
    per, num, den = {}, 0.0, 0.0
    for k in names:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        d2, n2 = float(np.sum((x - y) ** 2)), float(np.sum(x ** 2))
        per[k] = math.sqrt(d2) / math.sqrt(n2) if n2 > 0 else (0.0 if d2 == 0 else math.inf)
        num += d2
        den += n2
    glob = math.sqrt(num) / math.sqrt(den) if den > 0 else 0.0
    return per, glob, max(per.values()) if per else 0.0


def first_crossing(series, thr):
    for i, v in enumerate(series):
        if v > thr:
            return i + 1  # steps are 1-based: after step i+1
    return None


def log_slope(series, lo=1e-6, hi=1e-2):
    """Growth per step: slope of log10(distance) vs step over the points in [lo, hi] (least
    squares), as (decades per step, factor per step, n points)."""
    s = np.asarray(series, np.float64)
    steps = np.arange(1, len(s) + 1)
    m = (s >= lo) & (s <= hi) & np.isfinite(s)
    if m.sum() < 3:
        return None, None, int(m.sum())
    k = np.polyfit(steps[m], np.log10(s[m]), 1)[0]
    return float(k), float(10 ** k), int(m.sum())


def summarize(rec: dict, early: int, jump_factor: float) -> dict:
    out = {}
    for pair in PAIRS:
        g = rec["dist"][pair]["global"]
        slope, factor, npts = log_slope(g)
        out[pair] = dict({f"steps_to_{t:g}": first_crossing(g, t) for t in THRESHOLDS},
                         decades_per_step=slope, growth_per_step=factor, slope_points=npts,
                         final=g[-1] if g else None, at_step1=g[0] if g else None)
    cross = np.asarray(rec["dist"]["cross"]["global"])
    base = np.maximum(np.asarray(rec["dist"]["self_torch"]["global"]),
                      np.asarray(rec["dist"]["self_jax"]["global"]))
    flags = []
    for i in range(min(early, len(cross))):
        if cross[i] > 1e-5 and cross[i] > jump_factor * base[i]:
            flags.append(dict(step=i + 1, cross=float(cross[i]), self_max=float(base[i]),
                              ratio=float(cross[i] / max(base[i], 1e-300))))
    out["early_jump"] = flags
    out["ratio_cross_over_self"] = [float(c / b) if b > 0 else None
                                    for c, b in zip(cross[:early], base[:early])]
    return out


def run(recipe: str, steps: int | None = None, *, n_train: int | None = None, n_test: int = 2000,
        width_scale: float = 1.0, seed: int = 0, data: str = "auto", ns_dtype: str = "float32",
        conv_impl: str = "auto", overrides: dict | None = None, early: int = 10,
        jump_factor: float = 100.0, self_baselines: bool = True, log=print,
        checkpoint=None, tta_levels=None) -> dict:
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    conv_impl = jax_wl.conv_impl(conv_impl)  # recorded as what ran, not as 'auto'
    r = scaled_recipe(recipe, width_scale, **(overrides or {}))
    xtr, ytr, xte, yte, src = load_images(n_train or 50000, data, seed, n_test=n_test,
                                          tag="lockstep")
    n = len(xtr)
    total = r.total_steps(n)
    steps = total if steps is None else min(int(steps), total)
    stream = BatchStream.for_recipe(r, xtr, ytr, seed=seed, steps=steps)
    # the reference initial weights: torch's own init from `seed`, whitened on the first images
    arrays0 = torch_wl.from_init(r, n, normalize(xtr[:r.whiten_images]), seed,
                                 whiten_all=True, channels_last=False).arrays()
    arrays1 = perturb_ulp(arrays0)
    names = trainable_names(arrays0, r)
    t0 = time.time()
    sides = {"torch_A": torch_wl.from_arrays(r, n, arrays0, ns_dtype=ns_dtype)}
    proxy0 = sides["torch_A"].proxy_arrays()   # the proxy net too starts from torch's weights
    sides["jax_A"] = jax_wl.from_arrays(r, n, arrays0, ns_dtype=ns_dtype, conv_impl=conv_impl,
                                        proxy_arrays=proxy0)
    if self_baselines:
        sides["torch_B"] = torch_wl.from_arrays(r, n, arrays1, ns_dtype=ns_dtype,
                                                proxy_arrays=proxy0)
        sides["jax_B"] = jax_wl.from_arrays(r, n, arrays1, ns_dtype=ns_dtype,
                                            conv_impl=conv_impl, proxy_arrays=proxy0,
                                            template=sides["jax_A"])
    pairs = {"cross": ("torch_A", "jax_A"), "self_torch": ("torch_A", "torch_B"),
             "self_jax": ("jax_A", "jax_B")}
    if not self_baselines:
        pairs = {"cross": pairs["cross"]}
    rec = dict(recipe=r.name, base_recipe=recipe, widths=r.widths, batch_size=r.batch_size,
               n_train=n, n_test=len(xte), steps=steps, total_steps_schedule=total, seed=seed,
               data=src, ns_dtype=ns_dtype, conv_impl=conv_impl, width_scale=width_scale,
               overrides=overrides or {}, layers=names,
               loss={k: [] for k in sides},
               dist={p: {"global": [], "max_layer": [], "per_layer": {k: [] for k in names}}
                     for p in pairs})
    step_times = {k: 0.0 for k in sides}
    for s in range(steps):
        x, y = stream.batch(s)
        for k, side in sides.items():
            ts = time.time()
            rec["loss"][k].append(side.step(x, y))
            step_times[k] += time.time() - ts
        arrs = {k: side.arrays() for k, side in sides.items()}
        for p, (a, b) in pairs.items():
            per, glob, mx = rel_distances(arrs[a], arrs[b], names)
            d = rec["dist"][p]
            d["global"].append(glob)
            d["max_layer"].append(mx)
            for k in names:
                d["per_layer"][k].append(per[k])
        if log:
            msg = " ".join(f"{p} {rec['dist'][p]['global'][-1]:.2e}" for p in pairs)
            losses = " ".join(f"{k} {rec['loss'][k][-1]:.2f}" for k in sides)
            log(f"[lockstep] step {s + 1}/{steps}: {msg} | loss {losses} | {time.time() - t0:.0f} s")
        if checkpoint is not None:
            checkpoint(dict(rec, partial=True, steps_done=s + 1))
    xte_n = normalize(xte)
    rec["accuracy"] = {}
    for k, side in sides.items():
        acc = {}
        for lvl in (sorted({0, r.tta_level}) if tta_levels is None else tta_levels):
            logits = side.logits(xte_n, lvl)
            acc[f"tta{lvl}"] = float((logits.argmax(1) == yte).mean())
        rec["accuracy"][k] = acc
    rec["seconds"] = round(time.time() - t0, 1)
    rec["step_seconds"] = {k: round(v, 2) for k, v in step_times.items()}
    if self_baselines:
        rec["summary"] = summarize(rec, early, jump_factor)
    rec["early"] = early
    rec["jump_factor"] = jump_factor
    return rec


def summary_table(rec: dict) -> str:
    lines = [f"lockstep {rec['base_recipe']} widths {tuple(rec['widths'])} batch "
             f"{rec['batch_size']} n_train {rec['n_train']} steps {rec['steps']}/"
             f"{rec['total_steps_schedule']} data {rec['data']} ns {rec['ns_dtype']} "
             f"conv {rec['conv_impl']} ({rec.get('seconds', '?')} s)"]
    if "summary" in rec:
        sm = rec["summary"]
        hdr = f"{'pair':<11} {'@step1':>9} " + " ".join(f"{'>' + format(t, 'g'):>7}" for t in THRESHOLDS) \
            + f" {'x/step':>7} {'final':>9}"
        lines += [hdr, "-" * len(hdr)]
        for p in PAIRS:
            d = sm[p]
            cells = " ".join(f"{str(d[f'steps_to_{t:g}'] or '-'):>7}" for t in THRESHOLDS)
            g = f"{d['growth_per_step']:.3f}" if d["growth_per_step"] else "-"
            lines.append(f"{p:<11} {d['at_step1']:9.2e} {cells} {g:>7} {d['final']:9.2e}")
        lines.append("(steps until the global relative L2 distance exceeds each threshold; "
                     "x/step = growth factor per step fitted over distances in [1e-6, 1e-2])")
        r10 = [f"{v:.2g}" if v is not None else "-" for v in sm["ratio_cross_over_self"]]
        lines.append(f"cross / max(self) over the first {rec['early']} steps: {' '.join(r10)}")
        lines.append("EARLY JUMP (likely bug): " + "; ".join(
            f"step {f['step']}: cross {f['cross']:.2e} vs self {f['self_max']:.2e}"
            for f in sm["early_jump"]) if sm["early_jump"] else
            f"no early jump (cross <= {rec['jump_factor']:g} x self, or < 1e-5, in the first "
            f"{rec['early']} steps)")
    lines.append("final loss: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rec["loss"].items()))
    if "accuracy" not in rec:
        lines.append(f"(partial record: {rec.get('steps_done')} steps done, no accuracy)")
        return "\n".join(lines)
    lines.append("accuracy on the test subset: " + ", ".join(
        f"{k} " + "/".join(f"{lvl} {a:.4f}" for lvl, a in acc.items())
        for k, acc in rec["accuracy"].items()))
    return "\n".join(lines)


def plot(rec: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    steps = np.arange(1, len(next(iter(rec["loss"].values()))) + 1)
    colors = {"cross": "C3", "self_torch": "C0", "self_jax": "C2"}
    labels = {"cross": "torch vs jax (same init)", "self_torch": "torch vs torch (1 ulp)",
              "self_jax": "jax vs jax (1 ulp)"}
    for p, d in rec["dist"].items():
        g = np.maximum(np.asarray(d["global"]), 1e-12)
        ax1.semilogy(steps, g, color=colors[p], label=labels[p] + " global")
        ax1.semilogy(steps, np.maximum(np.asarray(d["max_layer"]), 1e-12), color=colors[p],
                     ls="--", lw=0.8, label=labels[p] + " max layer")
    for t in (1e-3, 1e-2):
        ax1.axhline(t, color="grey", lw=0.5, ls=":")
    ax1.set_xlabel("step")
    ax1.set_ylabel("relative L2 distance of the parameters")
    ax1.set_title(f"{rec['base_recipe']}: divergence")
    ax1.legend(fontsize=7)
    for k, v in rec["loss"].items():
        ax2.plot(steps, v, label=k, lw=1.2 if k.endswith("A") else 0.8,
                 ls="-" if k.endswith("A") else "--")
    ax2.set_xlabel("step")
    ax2.set_ylabel("summed loss")
    ax2.set_title("loss")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
