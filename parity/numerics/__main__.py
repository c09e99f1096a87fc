"""Numerical equivalence of airbench_jax and airbench_torch on CPU, float32.

With the same weights and inputs on every machine (parity.numerics.inputs: made in numpy float64
and rounded to 20 significant bits, with canonical eigenvector signs, so no kernel's choice of sign
or summation order reaches them; their sha256 is in the JSON per recipe) -- weights loaded into
the torch net and converted to Flax by parity.numerics.convert, one batch of
parity.numerics.batches' stream -- per net:

* logits in train mode (batch statistics) and eval mode (running statistics), for each JAX conv
  implementation ('native' lax.conv, the CPU 'matmul' im2col, and 'onednn' where available; the
  steps below use the lowering training uses here), on the real batch and on a
  "[well-conditioned]" copy (parity.numerics.inputs.well_conditioned: no exact max-pool ties,
  which make some gradients of real images discontinuous in rounding), and both sides' float64
  results compared directly ("float64 both": on the well-conditioned copy, to float64 rounding);
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
reasons: parity.numerics.tolerances; the rows: parity.numerics.rows. Exit status 1 on any failure.

    python -m parity.numerics [--recipe R|all] [--width-scale F] [--batch B] [--json out.json]
"""
from __future__ import annotations

import sys
import time

from airbench_common.errors import cli_main
from airbench_common.validate import OptionError

from .. import args as A
from .checks import IMPLS, run_recipe_checks
from .rows import Report
from .setting import setup_precision
from .steps import check_newton_schulz
from .tolerances import NOISE_FACTOR

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
        from airbench_common.workload import get_workload  # noqa: PLC0415 - imports jax
        why = get_workload("jax").conv_impls()["onednn"]
        if why:
            raise OptionError(f"--impls onednn: oneDNN does not run here ({why}); "
                              f"give {', '.join(IMPLS)}")
    return impls


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
    from airbench_common.env import (code_version, cpu_flags_of_interest, machine_info,
                                     package_versions)
    rep.meta["versions"] = package_versions("jax", "jaxlib", "flax", "optax", "torch")
    rep.meta["code"] = code_version()
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
            rep.write(args.json)
    rep.meta["seconds"] = round(time.time() - t0, 1)
    print(rep.table())
    fails = rep.failures
    near = [x for x in rep.rows if x.ok and x.margin < 2]
    via_floor = [x for x in rep.rows if x.via == "floor"]
    print(f"\n{len(rep.rows)} checks, {len(fails)} failed ({rep.meta['seconds']} s); "
          f"{len(via_floor)} passed by the float32 floor, {len(near)} with margin < 2")
    for name, m in rep.meta.get("recipes", {}).items():
        print(f"inputs sha256 {name}: {m['inputs_sha256']}")
    rep.flush_failures(stream=sys.stdout, prefix="")
    if args.json:
        rep.write(args.json)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
