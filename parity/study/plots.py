"""The report's PNG plots (matplotlib, Agg: no display needed): accuracy ECDFs, time per run,
per-epoch validation accuracy curves."""
from __future__ import annotations

import math

import numpy as np

from airbench_common.records import float_or_nan

from .store import ACCURACY_PLOT, CURVES_PLOT, TIME_PLOT, RunFolder
from .summary import acc_points

COLORS = {"jax": "tab:blue", "torch": "tab:orange"}


def make_plots(records, summary, folder: RunFolder) -> list[str]:
    """Write the PNGs into the folder; returns their file names."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    title = summary["title"]
    fws = summary["frameworks"]
    ok = {fw: sorted([r for r in records if r.get("framework") == fw and r.get("status") == "ok"],
                     key=lambda r: int(r.get("seed", 0))) for fw in fws}
    names = []

    def save(fig, name):
        folder.write_file(name, lambda f: fig.savefig(f, format="png", dpi=110,
                                                      bbox_inches="tight"))
        plt.close(fig)
        names.append(name)

    # accuracy ECDFs
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, name in ((axes[0], "acc_tta", "accuracy with TTA"), (axes[1], "acc", "accuracy")):
        for fw in fws:
            x = np.sort([v for v in acc_points(ok[fw], key) if math.isfinite(v)])
            if len(x):
                ax.step(np.r_[x[0], x], np.r_[0.0, np.arange(1, len(x) + 1) / len(x)],
                        where="post", color=COLORS.get(fw),
                        label=f"{fw} (n={len(x)}, mean {x.mean():.2f})")
                ax.axvline(x.mean(), color=COLORS.get(fw), ls=":", lw=1)
        ax.set_xlabel(f"{name} (%)")
        ax.set_ylabel("fraction of runs <= x")
        ax.set_title(f"ECDF of {name}")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, ACCURACY_PLOT)

    # time per run
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((axes[0], "train_seconds"), (axes[1], "eval_seconds")):
        for fw in fws:
            s = [int(r.get("seed", 0)) for r in ok[fw]]
            t = [float_or_nan(r.get(key)) for r in ok[fw]]
            if s:
                ax.plot(s, t, "o-", color=COLORS.get(fw), label=f"{fw} (median {np.nanmedian(t):.2f} s)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("seed (run order alternates frameworks)")
        ax.set_ylabel("seconds")
        ax.set_title(key.replace("_", " ") + " per run (compile excluded)")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, TIME_PLOT)

    # per-epoch validation accuracy
    fig, ax = plt.subplots(figsize=(7, 4))
    any_curve = False
    for fw in fws:
        curves: dict[int, list[float]] = {}
        for r in ok[fw]:
            for e in r.get("per_epoch") or []:
                v = e.get("val_acc")
                if v is not None and e.get("epoch") is not None and math.isfinite(float_or_nan(v)):
                    curves.setdefault(int(e["epoch"]), []).append(100 * float(v))
        if not curves:
            continue
        any_curve = True
        ep = sorted(curves)
        m = np.array([np.mean(curves[e]) for e in ep])
        sd = np.array([np.std(curves[e], ddof=1) if len(curves[e]) > 1 else 0.0 for e in ep])
        ax.plot(ep, m, "o-", color=COLORS.get(fw), label=f"{fw} mean +/- 1 sd")
        ax.fill_between(ep, m - sd, m + sd, color=COLORS.get(fw), alpha=0.25)
        ax.errorbar(ep, m, yerr=sd, fmt="none", ecolor=COLORS.get(fw), capsize=3, lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%, no TTA)")
    ax.set_title(title + ("" if any_curve else "\n(no per-epoch validation accuracy recorded)"),
                 fontsize=9)
    if any_curve:
        ax.legend(fontsize=8)
    save(fig, CURVES_PLOT)
    return names
