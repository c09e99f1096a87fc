"""Both frameworks under each precision policy, over the first training steps from shared weights.

parity.numerics.policies runs and bounds the comparison; this command prints each policy's rows
(parity.numerics.rows) and writes them as JSON, one report per policy. Exit status 1 on any
failure.

    python -m parity.policies [--policy NAME|all] [--width-scale F] [--batch B] [--steps 2]
"""
from __future__ import annotations

import sys

from airbench_common import precision as P
from airbench_common.errors import cli_main
from airbench_common.files import write_json_atomic
from airbench_common.validate import OptionError

from .numerics.policies import run_policy, table


@cli_main
def main(argv=None) -> int:
    from . import args as A  # noqa: PLC0415
    ap = A.parser("python -m parity.policies", __doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="all",
                    help="a policy name (" + ", ".join(P.POLICIES) + ") or 'all' (default)")
    ap.add_argument("--recipe", default="airbench94_muon")
    ap.add_argument("--width-scale", type=float, default=0.125)
    ap.add_argument("--batch", type=int, default=32, help="images per step (2 to 1024)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps (1 to 100)")
    ap.add_argument("--conv-impl", default="native", choices=("native", "matmul"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    # -- every option and the output path before any step
    if a.policy == "all":
        names = list(P.POLICIES)
    elif a.policy in P.POLICIES:
        names = [a.policy]
    else:
        raise OptionError(f"--policy {a.policy!r} is not a precision policy; give one of "
                          f"{', '.join(P.POLICIES)} or all")
    a.width_scale = A.width_scale(a.width_scale)
    A.check_recipe(a.recipe, a.width_scale)
    a.batch = A.count("--batch", a.batch, low=2, high=1024)
    a.steps = A.count("--steps", a.steps, high=100)
    A.out_file(a.json)
    out = []
    for name in names:
        rep = run_policy(name, recipe=a.recipe, width_scale=a.width_scale, batch=a.batch,
                         steps=a.steps, impl=a.conv_impl)
        print(table(rep), flush=True)
        out.append(rep)
    if a.json:
        write_json_atomic(a.json, [rep.to_json() for rep in out])
    return 1 if any(rep.failures for rep in out) else 0


if __name__ == "__main__":
    sys.exit(main())
