"""Run-to-run spread of a scaled recipe: what a `parity.compare` preset costs and how much its
accuracy varies, measured before the preset is fixed (the sequential plan's power depends on
the per-run standard deviation; see `python -m parity.plan --simulate`).

    python benchmarks/preset_spread.py --framework torch --seeds 0:6 --n-train 5000 \
        --set widths=32,64,64 --set epochs=3 --set batch_size=250 --out spread.jsonl

Each finished run appends one JSON line (the run record's accuracies and times plus the
configuration and the CPU load), so an interrupted sweep keeps what it measured. The summary
prints the mean, standard deviation and seconds per run of every configuration in the file.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from airbench_common import validate as V
from airbench_common.cli import Parser
from airbench_common.errors import cli_main
from airbench_common.recipes import get_recipe, parse_overrides
from airbench_common.data import load_cifar10
from airbench_common.env import cpu_model


def _seeds(text: str) -> list[int]:
    """first:last+1 or one seed (airbench_common.validate.parse_seeds: checked, capped)."""
    return V.parse_seeds(text)


def summarize(path: Path) -> None:
    groups: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        groups.setdefault(rec["config"], []).append(rec)
    for config, recs in groups.items():
        accs = [100 * r["acc_tta"] for r in recs if r["acc_tta"] is not None]
        secs = [r["train_seconds"] + r["eval_seconds"] for r in recs if r["acc_tta"] is not None]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        print(f"{config}: n={len(accs)} mean {statistics.mean(accs):.2f} sd {sd:.2f} points, "
              f"{statistics.median(secs):.0f} s per run (median)")


@cli_main
def main(argv=None) -> int:
    p = Parser(prog="python benchmarks/preset_spread.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=("torch", "jax"), default="torch")
    p.add_argument("--recipe", default="airbench94_muon")
    p.add_argument("--seeds", default="0:4", help="first:last+1")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--summary", action="store_true", help="only summarize --out")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    args = p.parse_args(argv)
    if args.summary:
        V.check_input_file(args.out, "--out")
        try:
            summarize(args.out)
        except (ValueError, KeyError, TypeError, statistics.StatisticsError) as exc:
            raise V.PathError(f"--summary: {args.out} is not a preset_spread result "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
                              ) from None
        return 0
    # -- every option and the output path before any training
    overrides = parse_overrides(args.set)
    get_recipe(args.recipe, **overrides)
    seeds = _seeds(args.seeds)
    args.n_train = V.integer("--n-train", args.n_train, low=1, high=50000)
    args.n_test = V.integer("--n-test", args.n_test, low=1, high=10000)
    get_recipe(args.recipe, **overrides).total_steps(args.n_train)
    V.check_out_file(args.out, "--out")
    if args.framework == "torch":
        from airbench_torch import run_recipe
    else:
        from airbench_jax import run_recipe
    train = tuple(a[:args.n_train] for a in load_cifar10("train"))
    test = tuple(a[:args.n_test] for a in load_cifar10("test"))
    config = f"{args.framework} n_train={args.n_train} " + " ".join(args.set)
    for seed in seeds:
        rec = run_recipe(args.recipe, seed, overrides=overrides, train_data=train,
                         test_data=test, eval_every_epoch=False)
        row = dict(config=config, seed=seed, acc_tta=rec["acc_tta"], acc=rec["acc"],
                   train_seconds=rec["train_seconds"], eval_seconds=rec["eval_seconds"],
                   status=rec["status"], load=os.getloadavg(), cpu=cpu_model())
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
