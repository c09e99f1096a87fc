"""python -m airbench_torch --recipe R --seed S [...]: train, print upstream's table, append the
run record to --out."""
from __future__ import annotations

import argparse
import sys

from airbench_common import DatasetError, RecipeError, parse_overrides, recipe_names


def build_parser():
    p = argparse.ArgumentParser(prog="python -m airbench_torch",
                                description="airbench recipes in PyTorch (reference)")
    p.add_argument("--recipe", default="airbench94", help=f"one of {', '.join(recipe_names())}")
    p.add_argument("--seed", type=int, default=0, help="seed of the first run (run i uses seed+i)")
    p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default $AIRBENCH_DATA)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--ns-dtype", choices=["float32", "bfloat16"], default=None,
                   help="Newton-Schulz dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe hyper-parameter (repeatable)")
    p.add_argument("--out", default="runs.jsonl", help="JSON-lines file the records go to")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N train images")
    p.add_argument("--compile", action="store_true", help="torch.compile the net")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format for images and convs (default: the device "
                        "policy, see airbench_torch/device.py)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar within epochs")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def fail(msg):
        print(f"airbench_torch: error: {msg}", file=sys.stderr)
        return 2

    try:
        from airbench_common import append_record, get_recipe, load_cifar10
        from .train import run_recipe
        overrides = parse_overrides(args.overrides)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        get_recipe(args.recipe, **overrides)  # validate before loading anything
        if args.runs < 1:
            raise RecipeError(f"--runs must be >= 1, got {args.runs}")
        train_data = test_data = None
        if args.n_train is not None:
            if args.n_train < 1:
                raise RecipeError(f"--n-train must be >= 1, got {args.n_train}")
            images, labels = load_cifar10("train", args.data_dir)
            train_data = (images[:args.n_train], labels[:args.n_train])
            test_data = load_cifar10("test", args.data_dir)
        status = 0
        for i in range(args.runs):
            rec = run_recipe(args.recipe, args.seed + i, overrides=overrides,
                             data_dir=args.data_dir, train_data=train_data, test_data=test_data,
                             device=args.device, ns_dtype=args.ns_dtype, verbose=True,
                             compile=args.compile, run_label=i, progress=not args.no_progress,
                             channels_last=args.channels_last)
            if train_data is not None:
                from airbench_common import dataset_label
                rec["data"]["label"] = dataset_label(args.data_dir) + f" (first {args.n_train} train)"
            append_record(args.out, rec)
            if rec["status"] != "ok":
                status = fail(rec.get("error", "run diverged") + f" (record appended to {args.out})")
        return status
    except (RecipeError, DatasetError, FloatingPointError, ValueError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        return fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
