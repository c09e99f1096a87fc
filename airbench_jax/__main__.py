"""python -m airbench_jax --recipe R --seed S [...]: run recipes, append run records."""
from __future__ import annotations

import argparse
import math
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m airbench_jax", description=__doc__)
    p.add_argument("--recipe", default="airbench94")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None, help="jax platform (cpu, gpu); default: jax's")
    p.add_argument("--ns-dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--conv-impl", default="auto", choices=["auto", "native", "matmul"])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training images")
    p.add_argument("--out", default=None, help="append run records (JSON lines) here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    from airbench_common.data import DatasetError, load_cifar10
    from airbench_common.recipes import RecipeError, get_recipe, parse_overrides
    from airbench_common.records import append_record
    try:
        overrides = parse_overrides(a.sets)
        if a.epochs is not None:
            overrides["epochs"] = a.epochs
        r = get_recipe(a.recipe, **overrides)
        train = load_cifar10("train", a.data_dir)
        test = load_cifar10("test", a.data_dir)
        if a.n_train:
            train = (train[0][:a.n_train], train[1][:a.n_train])
        r.total_steps(len(train[0]))  # validates batch_size vs data
    except (RecipeError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from .train import run_recipe
    accs = []
    status = 0
    for i in range(a.runs):
        seed = a.seed + i
        try:
            rec = run_recipe(r.name, seed, overrides=overrides, data_dir=a.data_dir,
                             train_data=train, test_data=test, device=a.device,
                             ns_dtype=a.ns_dtype, conv_impl=a.conv_impl, dtype=a.dtype,
                             verbose=not a.quiet)
        except (RecipeError, DatasetError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if a.n_train:
            rec["data"]["n_train"] = len(train[0])
        if a.out:
            append_record(a.out, rec)
        if rec["status"] != "ok":
            print(f"error: run {i} (seed {seed}) diverged: {rec.get('error')}", file=sys.stderr)
            status = 2
            continue
        accs.append(rec["acc_tta"])
        print(f"run {i} seed {seed}: acc {rec['acc']:.4f} acc_tta {rec['acc_tta']:.4f} "
              f"train {rec['train_seconds']:.2f}s compile {rec['compile_seconds']:.2f}s "
              f"eval {rec['eval_seconds']:.2f}s", flush=True)
    if len(accs) > 1:
        m = sum(accs) / len(accs)
        sd = math.sqrt(sum((x - m) ** 2 for x in accs) / (len(accs) - 1))
        print(f"mean acc_tta {m:.4f} (std {sd:.4f}, n={len(accs)})")
    return status


if __name__ == "__main__":
    sys.exit(main())
