"""The one command line of both implementations: `python -m airbench_jax` and
`python -m airbench_torch` are this parser and this run loop with the framework's Workload
(airbench_common.workload) plugged in.

Everything is validated before any training (recipe and overrides, counts, seeds, the output file,
the device, the dtypes, the data), so a bad value costs nothing; then each run's record is
appended to --out as soon as the run ends (so Ctrl-C or a later failure keeps finished runs), a
line per run goes to stdout and a diverged run is a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys

from . import interrupts, validate as V
from .errors import cli_main
from .data import content_sha256, dataset_label, load_cifar10, resolve_data_dir
from .precision import BN_DTYPES, POLICIES, TF32_MODES
from .recipes import RECIPES, get_recipe, parse_overrides
from .records import append_record
from .workload import RunOptions, Workload

DEFAULT_OUT = "runs.jsonl"


class Parser(argparse.ArgumentParser):
    """argparse whose errors are a UsageError (one line via cli_main), not usage + exit."""

    def error(self, message):
        raise V.OptionError(f"{message} (see {self.prog} --help)")


def recipe_lines() -> str:
    """One line per recipe for --help: its name and the first clause of its notes."""
    lines = []
    for name, r in RECIPES.items():
        note = r.notes.split(". ")[0]
        note = note if len(note) <= 70 else note[:67] + "..."
        lines.append(f"  {name:<18} {note}")
    return "recipes:\n" + "\n".join(lines)


def build_parser(wl: Workload) -> Parser:
    p = Parser(prog=f"python -m {wl.package}", description=wl.description, epilog=recipe_lines(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="airbench94", metavar="NAME",
                   help="recipe to run (listed below; default airbench94)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first run; run i uses seed+i")
    p.add_argument("--runs", type=int, default=1, help="number of runs (>= 1)")
    p.add_argument("--seeds", default=None, metavar="A:B",
                   help="run seeds A..B-1 (or S1,S2,...) instead of --seed/--runs; the JAX side "
                        "trains them together as one vmapped program, PyTorch one after another")
    p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe hyper-parameter (repeatable), e.g. --set lr=10")
    p.add_argument("--n-train", type=int, default=None, metavar="N",
                   help="train on the first N training images only")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 folder (default: $AIRBENCH_DATA, else ~/.cache/airbench/cifar10)")
    p.add_argument("--device", default=None,
                   help="device to run on, e.g. cpu, cuda, cuda:1 (default: the framework's)")
    prec = p.add_argument_group(
        "precision", "one policy on both sides (airbench_common/precision.py); the options after "
        "--precision override one part each, and the record's `precision` says what ran")
    prec.add_argument("--precision", default=None, choices=tuple(POLICIES), metavar="NAME",
                      help="precision policy: " + ", ".join(POLICIES) + " (default: float32 on "
                           "CPU, upstream on GPU: float16 weights and activations, float32 "
                           "BatchNorm, bfloat16 Newton-Schulz, TF32 for convs only)")
    prec.add_argument("--dtype", default=None, choices=V.DTYPES,
                      help="weights and activations (the policy's params and compute)")
    prec.add_argument("--param-dtype", default=None, choices=V.DTYPES,
                      help="stored weights only (JAX; PyTorch refuses params != compute)")
    prec.add_argument("--bn-dtype", default=None, choices=BN_DTYPES,
                      help="BatchNorm statistics (float32 only)")
    prec.add_argument("--ns-dtype", default=None, choices=V.DTYPES,
                      help="Muon's Newton-Schulz dtype")
    prec.add_argument("--tf32", default=None, choices=TF32_MODES,
                      help="TF32 for float32 convs/matmuls on NVIDIA GPUs: off, conv (convs "
                           "only, PyTorch's default), on")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"JSON-lines file each run's record is appended to (default {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no per-epoch table or progress bar")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    wl.add_cli_options(p.add_argument_group(f"{wl.name}-only options"))
    return p


def _summary(i: int, seed: int, rec: dict) -> str:
    line = (f"run {i} seed {seed}: acc {rec['acc']:.4f} acc_tta {rec['acc_tta']:.4f} "
            f"train {rec['train_seconds']:.2f}s eval {rec['eval_seconds']:.2f}s")
    if rec.get("compile_seconds") is not None:
        line += f" compile {rec['compile_seconds']:.2f}s"
    return line


def entry_point(wl: Workload):
    """The `main(argv=None) -> exit status` of `python -m <wl.package>`: main() with bad input
    as one line on stderr and exit status 2 (errors.cli_main)."""
    return cli_main(lambda argv=None: main(wl, argv))


def main(wl: Workload, argv=None) -> int:
    """Parse, validate everything, run, append records; 0 if every run finished ok, 2 if one
    diverged (its record is kept, with status 'diverged'). Wrap in errors.cli_main."""
    args = build_parser(wl).parse_args(argv)

    # -- validate everything before touching data or devices' memory
    overrides = parse_overrides(args.sets)
    if args.epochs is not None:
        if "epochs" in overrides:
            raise V.OptionError("--epochs and --set epochs=... both given; give one")
        overrides["epochs"] = args.epochs
    recipe = get_recipe(args.recipe, **overrides)
    args.runs = V.check_runs(args.runs)
    args.seed = V.check_seeds(args.seed, args.runs)
    if args.seeds is not None:
        if (args.seed, args.runs) != (0, 1):
            raise V.OptionError("--seeds and --seed/--runs both given; give one")
        seeds = V.parse_seeds(args.seeds)
    else:
        seeds = list(range(args.seed, args.seed + args.runs))
    out = V.check_out_file(args.out)
    device = V.check_device(args.device, wl.devices(), wl.device_aliases)
    parts = dict(dtype=args.dtype, param_dtype=args.param_dtype, bn_dtype=args.bn_dtype,
                 ns_dtype=args.ns_dtype, tf32=args.tf32)
    options = wl.check(RunOptions(
        recipe=recipe.name, overrides=overrides, data_dir=args.data_dir, device=device,
        precision=args.precision, parts={k: v for k, v in parts.items() if v is not None},
        verbose=not args.quiet, extra=wl.cli_extra(args)))
    train = load_cifar10("train", args.data_dir)
    test = load_cifar10("test", args.data_dir)
    n_train = V.check_n_train(args.n_train, len(train[0]))
    train = (train[0][:n_train], train[1][:n_train])
    recipe.total_steps(n_train)  # batch_size vs the number of images
    data = dict(label=dataset_label(args.data_dir) + ("" if args.n_train is None
                                                      else f" (first {n_train} train)"),
                dir=str(resolve_data_dir(args.data_dir)), n_train=n_train, n_test=len(test[0]))
    sha = content_sha256(args.data_dir)   # the folder's pixels, as in records.data_identity
    if sha is not None:
        data["images_sha256"] = sha
    options = options.replace(train_data=train, test_data=test, data=data)

    # -- run; each record is on disk before the next run starts
    accs, status = [], 0
    if args.seeds is not None:
        runs = iter(wl.run_seeds(options, seeds))
    else:
        runs = (wl.run(options.replace(run_label=i), seed) for i, seed in enumerate(seeds))
    for i, seed in enumerate(seeds):
        try:
            rec = next(runs)
            interrupts.checkpoint()   # a Ctrl-C swallowed by library code during the run
        except (KeyboardInterrupt, Exception) as exc:
            # Ctrl-C inside a library's own try block can come out as another exception caused
            # by the KeyboardInterrupt (JAX's pytree metadata comparison re-raises a ValueError)
            if not interrupts.interrupted(exc):
                raise
            raise KeyboardInterrupt(f"interrupted (Ctrl-C) in run {i}; {i} finished run(s) are "
                                    f"in {out}") from None
        if rec["seed"] != seed:
            raise RuntimeError(f"run {i}: record of seed {rec['seed']}, expected seed {seed}")
        append_record(out, rec)
        if rec["status"] != "ok":
            print(f"error: run {i} (seed {seed}) {rec['status']}: {rec.get('error', '')} "
                  f"(record appended to {out})", file=sys.stderr)
            status = 2
            continue
        accs.append(rec["acc_tta"])
        print(_summary(i, seed, rec), flush=True)
    if len(accs) > 1:
        m = sum(accs) / len(accs)
        sd = math.sqrt(sum((x - m) ** 2 for x in accs) / (len(accs) - 1))
        print(f"mean acc_tta {m:.4f} (std {sd:.4f}, n={len(accs)}); records in {out}")
    return status
