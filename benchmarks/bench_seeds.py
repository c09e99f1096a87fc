"""Sequential vs vmapped JAX training of N seeds: training images per second per seed, and the
wall time of N seeds' training, compile time apart.

    python benchmarks/bench_seeds.py [--recipe airbench94_muon] [--widths 32,64,64] [--seeds 4]
        [--n-train 2000] [--batch 250] [--reps 2] [--json out.json]

Sequential = one `train.train_epoch` program run seed after seed (what `run_recipe` does);
vmapped = `seeds.group_epoch`, all N seeds in one program (what `run_recipe(seeds=...)` does).
Both are compiled ahead of time (reported apart) and then each timed over one epoch of the
first `--n-train` training images, alternating sequential / vmapped `--reps` times so that a
drift of a shared machine hits both; the load average is printed beside the numbers.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import validate as V
from airbench_common.cli import Parser
from airbench_common.data import load_cifar10
from airbench_common.errors import cli_main
from airbench_common.files import write_json_atomic
from airbench_common.recipes import get_recipe
from airbench_jax import augment as aug
from airbench_jax import seeds as S
from airbench_jax.loop import train_epoch
from airbench_jax.prepare import prepare_data
from airbench_jax.state import init_train_state


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t


def main(argv=None) -> int:
    """The command line: bad input is one line on stderr and exit status 2, before any work."""
    return cli_main(lambda args: 0 if measure(args) is not None else 1)(argv)


def measure(argv=None) -> dict:
    p = Parser(prog="python benchmarks/bench_seeds.py", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="airbench94_muon")
    p.add_argument("--widths", default="32,64,64")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    a = p.parse_args(argv)
    # -- every option and the output path before any compilation
    a.seeds = V.integer("--seeds", a.seeds, low=1, high=256)
    a.n_train = V.integer("--n-train", a.n_train, low=1, high=50000)
    a.reps = V.integer("--reps", a.reps, low=1, high=100)
    a.batch = V.integer("--batch", a.batch, low=1, high=a.n_train)
    r = get_recipe(a.recipe, widths=a.widths, batch_size=a.batch, epochs=1,
                   whiten_images=min(5000, a.n_train))
    widths = r.widths
    r.total_steps(a.n_train)
    if a.json is not None:
        V.check_out_file(a.json, "--json")
    x, y = load_cifar10("train", None)
    xs, ys = jnp.asarray(x[:a.n_train]), jnp.asarray(y[:a.n_train].astype(np.int32))
    whiten = aug.normalize(xs[:r.whiten_images])
    seeds = list(range(a.seeds))
    spe = r.steps_per_epoch(a.n_train)

    # sequential: one program, N runs
    seq_in = []
    for s in seeds:
        k_init, k_flip, k_ep = S.seed_keys(s)
        st = init_train_state(r, a.n_train, k_init, whiten_images=whiten)
        seq_in.append((st, prepare_data(r, xs, jnp.float32, k_flip), k_ep))
    t = time.perf_counter()
    seq_fn = train_epoch.lower(seq_in[0][0], seq_in[0][1], ys, 0, seq_in[0][2]).compile()
    seq_compile = time.perf_counter() - t
    # vmapped: all N in one program, the training set held once
    vst, vkeys, vpre = S.init_group(r, a.n_train, seeds, whiten, conv_impl="auto",
                                    precision="float32")
    padded = aug.pad_reflect(aug.normalize(xs), r.translate)
    t = time.perf_counter()
    vm_fn = S.group_epoch.lower(vst, padded, ys, 0, vkeys, vpre).compile()
    vm_compile = time.perf_counter() - t

    seq_t, vm_t, loads = [], [], []
    for _ in range(a.reps):
        loads.append(os.getloadavg()[0])
        seq_t.append(sum(_timed(lambda i=i: seq_fn(seq_in[i][0], seq_in[i][1], ys, 0,
                                                   seq_in[i][2])) for i in range(len(seeds))))
        vm_t.append(_timed(lambda: vm_fn(vst, padded, ys, 0, vkeys, vpre)))
    loads.append(os.getloadavg()[0])
    imgs = spe * r.batch_size                      # images one seed trains on in the epoch
    n = a.seeds
    seq, vm = min(seq_t), min(vm_t)
    # per seed: a sequential seed trains imgs images in its own share (seq / n) of the time; a
    # vmapped seed trains imgs images in the group's whole time. Aggregate: n * imgs / wall.
    res = dict(recipe=a.recipe, widths=widths, seeds=n, n_train=a.n_train, batch=a.batch,
               steps=spe, device=str(jax.devices()[0]), sequential_seconds=seq_t,
               vmapped_seconds=vm_t, sequential_img_per_s_per_seed=imgs / (seq / n),
               vmapped_img_per_s_per_seed=imgs / vm, sequential_img_per_s=n * imgs / seq,
               vmapped_img_per_s=n * imgs / vm, wall_ratio=seq / vm,
               compile_seconds=dict(sequential=seq_compile, vmapped=vm_compile),
               load_avg_1min=loads)
    print(f"{a.recipe} widths {widths}, {n} seeds, {spe} steps of {a.batch} "
          f"({jax.devices()[0].platform}); load {', '.join(f'{v:.1f}' for v in loads)}")
    for name, wall, comp in (("sequential", seq, seq_compile), ("vmapped", vm, vm_compile)):
        print(f"  {name:<10} {wall:7.2f} s for {n} seeds: {n * imgs / wall:6.0f} img/s in all, "
              f"{res[name + '_img_per_s_per_seed']:6.0f} img/s per seed while it runs; compile "
              f"{comp:.1f} s")
    print(f"  wall time sequential / vmapped: {seq / vm:.2f}x (each rep: seq "
          f"{', '.join(f'{v:.2f}' for v in seq_t)} s; vmapped {', '.join(f'{v:.2f}' for v in vm_t)} s)")
    if a.json:
        write_json_atomic(a.json, res)
    return res


if __name__ == "__main__":
    sys.exit(main())
