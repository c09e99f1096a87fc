"""python -m airbench_torch: run airbench recipes in PyTorch (the reference), print upstream's
table and append each run's record to --out.

The options, validation, run loop and output are airbench_common.cli's, shared with
`python -m airbench_jax`; only the PyTorch-specific options, device list and dtype policy live
here."""
from __future__ import annotations

import argparse
import sys

from airbench_common import cli
from airbench_common.errors import cli_main


def _add_options(group):
    group.add_argument("--compile", action="store_true", help="torch.compile the net")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last memory format for images and convs (default: the "
                            "device policy, see airbench_torch/device.py)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar within epochs (--quiet implies it)")


def devices() -> list[str]:
    from .device import available_devices
    return available_devices()


def _check(args) -> None:
    """The precision policy must be one the PyTorch side can run (weights in the compute dtype):
    a PrecisionError (one line, exit 2) otherwise."""
    from .device import resolve_precision
    _precision_of(args, resolve_precision)


def _precision_of(args, resolve):
    return resolve(args.precision, args.device, dtype=args.dtype, param_dtype=args.param_dtype,
                   bn_dtype=args.bn_dtype, ns_dtype=args.ns_dtype, tf32=args.tf32)


def _run(args, recipe, overrides, seed, i, train, test) -> dict:
    from .device import resolve_precision
    from .train import run_recipe
    return run_recipe(recipe, seed, overrides=overrides, data_dir=args.data_dir,
                      train_data=train, test_data=test, device=args.device,
                      precision=_precision_of(args, resolve_precision),
                      verbose=not args.quiet, compile=args.compile,
                      run_label=i, progress=not (args.quiet or args.no_progress),
                      channels_last=args.channels_last)


FRAMEWORK = cli.Framework(
    name="torch", prog="python -m airbench_torch",
    description="airbench CIFAR-10 speed-run recipes in PyTorch (the reference implementation).",
    add_options=_add_options, devices=devices, check=_check, run=_run)


def build_parser():
    return cli.build_parser(FRAMEWORK)


@cli_main
def main(argv=None) -> int:
    return cli.main(FRAMEWORK, argv)


if __name__ == "__main__":
    sys.exit(main())
