"""`python -m parity`: the parity commands, one line each; `python -m parity compare ...` (or no
command at all) runs `python -m parity.compare`, the front door."""
import sys

from airbench_common.errors import cli_main
from airbench_common.validate import OptionError

COMMANDS = {
    "compare": "many seeds per framework, sequential equivalence test, report (the front door)",
    "numerics": "shared weights and inputs: logits, loss, gradients, optimizer steps, lr schedules",
    "lockstep": "both frameworks on one batch stream from the same weights, per-step divergence",
    "examples": "per-example parity of two sweeps (compare folders), e.g. a variant vs the reference",
    "plan": "the sequential plan's operating characteristics at a given spread (--simulate)",
    "bench": "train-step throughput of both frameworks in one run, and the CPU it ran on",
    "policies": "both frameworks under each precision policy over two steps from shared weights",
    "gpu_check": "validate a GPU machine end to end and write its evidence (--dry-run on CPU)",
}


@cli_main
def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("-h", "--help", "help"):
        print("usage: python -m parity COMMAND [options]   (python -m parity.COMMAND --help)\n")
        for name, what in COMMANDS.items():
            print(f"  {name:<9} {what}")
        return 0
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        raise OptionError(f"{args[0]!r} is not a parity command; give one of "
                          f"{', '.join(COMMANDS)} (python -m parity --help)")
    name = args.pop(0) if args and args[0] in COMMANDS else "compare"
    import importlib
    return importlib.import_module(f"parity.{name}").main(args)


if __name__ == "__main__":
    sys.exit(main())
