"""Lockstep training: the two frameworks from the same initial weights on one batch stream.

Four trajectories run side by side, step by step, on parity.numerics.batches' stream (same order, same
augmentation draws, same float32 values):

* torch A: airbench_torch from the reference initial weights (torch init, whitened);
* jax A:   airbench_jax from the same weights, converted (parity.numerics.convert);
* torch B, jax B: each framework from those weights moved by one ulp (np.nextafter towards +inf
  on every element of every float tensor but the frozen BatchNorm weights).

Per step we record each trajectory's loss and, for the pairs cross = (torch A, jax A),
self_torch = (torch A, torch B), self_jax = (jax A, jax B), the relative L2 distance per layer,
||a - b|| / ||a||, over the trainable parameters, plus the global one (all trainable parameters
concatenated) and the largest per-layer value. Training is chaotic, so every pair diverges; a
correct port diverges from the reference *like* the reference diverges from itself under a
one-ulp change: the same growth rate, reaching a given distance after a similar number of steps.
A cross distance far above both self baselines in the first steps is the signature of a real
difference (a bug), not of float32 noise: it is flagged (EARLY JUMP) when, within the first
`--early` steps, cross > `--jump-factor` x the larger self baseline and above 1e-5.

    python -m parity.lockstep --recipe R --steps K [--n-train N] [--width-scale F] [--out DIR]

writes DIR/lockstep.json and DIR/lockstep.png (log distance vs step for the three pairs, and the
loss curves) and prints a summary table.
"""
from __future__ import annotations

import json
import os
import sys

from airbench_common import validate as V
from airbench_common.errors import cli_main

from .numerics.lockstep import plot, run, summarize, summary_table
from .numerics.setting import setup_precision
from .args import CONV_IMPLS



@cli_main
def main(argv=None) -> int:
    from . import args as A  # noqa: PLC0415
    ap = A.parser("python -m parity.lockstep", __doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="airbench94_muon")
    ap.add_argument("--steps", type=int, default=None, help="steps to run (default: the whole run)")
    ap.add_argument("--n-train", type=int, default=None, help="training images (default all)")
    ap.add_argument("--n-test", type=int, default=2000, help="test images for the final accuracy")
    ap.add_argument("--width-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto")
    ap.add_argument("--ns-dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--conv-impl", choices=CONV_IMPLS, default="auto",
                    help="JAX convolution lowering (default: auto, as training runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override, e.g. --set batch_size=500 (repeatable)")
    ap.add_argument("--early", type=int, default=10, help="steps checked for an early jump")
    ap.add_argument("--jump-factor", type=float, default=100.0)
    ap.add_argument("--no-self", action="store_true", help="skip the two self baselines")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="lockstep-out")
    ap.add_argument("--summarize", action="store_true",
                    help="only re-read OUT/lockstep.json (also a partial one), print the summary "
                         "and redraw the plot")
    args = ap.parse_args(argv)
    # -- every option and path before any work; the --out folder is created by the first save
    args.early = A.count("--early", args.early)
    args.jump_factor = V.number("--jump-factor", args.jump_factor, low=1, low_open=True)
    out = A.out_dir(args.out)
    for name in ("lockstep.json", "lockstep.png"):
        if (out / name).is_dir():
            raise V.PathError(f"--out {out}: {out / name} is a directory; give another --out")
    if args.summarize:
        if not (out / "lockstep.json").is_file():
            raise V.PathError(f"--summarize: {out / 'lockstep.json'} does not exist; give the "
                              "--out folder of an earlier python -m parity.lockstep run")
        try:
            with open(os.path.join(args.out, "lockstep.json")) as fh:
                rec = json.load(fh)
            rec["dist"]  # noqa: B018 - a lockstep record has per-step distances
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise V.PathError(f"--summarize: {out / 'lockstep.json'} is not a lockstep result "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
                              ) from None
        rec.setdefault("early", args.early)
        rec.setdefault("jump_factor", args.jump_factor)
        if "self_torch" in rec["dist"]:
            rec["summary"] = summarize(rec, rec["early"], rec["jump_factor"])
        plot(rec, os.path.join(args.out, "lockstep.png"))
        print(summary_table(rec))
        return 1 if rec.get("summary", {}).get("early_jump") else 0
    args.width_scale = A.width_scale(args.width_scale)
    r = A.check_recipe(args.recipe, args.width_scale, args.set)
    args.steps = A.count("--steps", args.steps)
    args.n_train = A.count("--n-train", args.n_train, high=50000)
    args.n_test = A.count("--n-test", args.n_test, high=10000)
    r.total_steps(args.n_train or 50000)  # batch_size vs the number of images
    args.seed = A.seed(args.seed)
    args.threads = A.threads(args.threads)
    from airbench_common import parse_overrides
    from airbench_common.files import write_json_atomic
    setup_precision(args.threads)

    def save(obj):
        write_json_atomic(os.path.join(args.out, "lockstep.json"), obj, indent=1,
                          default=lambda o: list(o) if isinstance(o, tuple) else str(o))

    rec = run(args.recipe, args.steps, n_train=args.n_train, n_test=args.n_test,
              width_scale=args.width_scale, seed=args.seed, data=args.data,
              ns_dtype=args.ns_dtype, conv_impl=args.conv_impl,
              overrides=parse_overrides(args.set), early=args.early,
              jump_factor=args.jump_factor, self_baselines=not args.no_self,
              log=lambda m: print(m, file=sys.stderr, flush=True), checkpoint=save)
    save(rec)
    plot(rec, os.path.join(args.out, "lockstep.png"))
    print(summary_table(rec))
    print(f"wrote {args.out}/lockstep.json and lockstep.png")
    return 1 if rec.get("summary", {}).get("early_jump") else 0


if __name__ == "__main__":
    sys.exit(main())
