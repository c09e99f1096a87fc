"""python -m airbench_jax: run airbench recipes in JAX and append each run's record to --out.

The options, validation, run loop and output are airbench_common.cli's, shared with
`python -m airbench_torch`; only the JAX-specific options and device list live here."""
from __future__ import annotations

import sys

from airbench_common import cli
from airbench_common.errors import cli_main
from airbench_common.validate import OptionError, check_choice, integer

CONV_IMPLS = ("auto", "onednn", "native", "matmul", "hybrid")  # airbench_jax.conv.IMPLS (not imported: --help stays
                                                     # free of jax); a test keeps the two equal


def _add_options(group):
    group.add_argument("--conv-impl", default="auto", choices=CONV_IMPLS,
                       help="convolution lowering: oneDNN custom calls (CPU, float32), XLA's "
                            "native conv, or im2col matmuls (default: auto: oneDNN on the CPU "
                            "when installed, else im2col; native elsewhere)")
    group.add_argument("--group-size", type=int, default=None, metavar="K",
                       help="with --seeds: train K seeds at a time as one vmapped program "
                            "(default: as many as fit in half the device's memory)")


def devices() -> list[str]:
    from .run import available_devices
    return available_devices()


def _check(args) -> None:
    check_choice("--conv-impl", args.conv_impl, CONV_IMPLS)
    if args.group_size is not None:
        integer("--group-size", args.group_size, low=1)
        if args.seeds is None:
            raise OptionError("--group-size needs --seeds (the seeds trained together)")
    _precision(args)


def _precision(args):
    """The run's precision policy (a PrecisionError, one line, for a bad part)."""
    from .precision import resolve
    from .run import resolve_device
    return resolve(args.precision, device=resolve_device(args.device), dtype=args.dtype,
                   param_dtype=args.param_dtype, bn_dtype=args.bn_dtype,
                   ns_dtype=args.ns_dtype, tf32=args.tf32)


def _run(args, recipe, overrides, seed, i, train, test) -> dict:
    from .run import run_recipe
    return run_recipe(recipe, seed, overrides=overrides, data_dir=args.data_dir,
                      train_data=train, test_data=test, device=args.device,
                      precision=_precision(args), conv_impl=args.conv_impl,
                      verbose=not args.quiet, run_label=i)


def _run_seeds(args, recipe, overrides, seeds, train, test):
    from .seeds import iter_seeds
    return iter_seeds(recipe, seeds, overrides=overrides, data_dir=args.data_dir,
                      train_data=train, test_data=test, device=args.device,
                      precision=_precision(args), conv_impl=args.conv_impl,
                      group_size=args.group_size, verbose=not args.quiet)


FRAMEWORK = cli.Framework(
    name="jax", prog="python -m airbench_jax",
    description="airbench CIFAR-10 speed-run recipes in JAX/Flax/optax.",
    add_options=_add_options, devices=devices, check=_check, run=_run,
    device_aliases={"cuda": "gpu"}, run_seeds=_run_seeds)


@cli_main
def main(argv=None) -> int:
    return cli.main(FRAMEWORK, argv)


if __name__ == "__main__":
    sys.exit(main())
