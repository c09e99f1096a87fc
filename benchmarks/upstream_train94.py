"""Upstream airbench 0.1.8's `train94` beside ours (`airbench_torch.train94`), same data, same CPU.

Upstream's package is GPU-only (`.half().cuda()`, CUDA events) and imports torchvision. This
script runs it unchanged on CPU in float32 by patching, inside this process only:
`.half()` -> `.float()`, `.cuda()` -> no-op, `torch.cuda.Event`/`synchronize` -> wall clock,
CifarLoader's `gpu=0` default -> 'cpu', and a small torchvision stub (only
`transforms.Normalize` is used once the data file exists). Upstream reads `cifar10/{train,test}.pt`
relative to the working directory, so we write those from our dataset in a temporary folder.

Each seed: upstream then ours, on the first --n-train training images, for --epochs epochs (the
recipe's schedule compressed into them, as upstream's `epochs` argument does), evaluated on the
first --n-test test images at TTA 0 and the recipe's TTA level 2. Records go to --out (append-only JSONL).

    pip download airbench==0.1.8 --no-deps --no-binary :all: -d /tmp/up && tar xzf /tmp/up/*.tar.gz -C /tmp/up
    python benchmarks/upstream_train94.py --upstream /tmp/up/airbench-0.1.8 --epochs 2 --n-train 10000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from airbench_common import load_cifar10
from airbench_common import validate as V
from airbench_common.cli import Parser
from airbench_common.errors import cli_main
from airbench_common.data import dataset_label
from airbench_common.env import machine_info, package_versions
from airbench_common.records import append_record, make_record


class _WallEvent:
    """torch.cuda.Event stand-in: elapsed_time in milliseconds between two record() calls."""

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.t - self.t)


def _normalize(mean, std):
    m, s = (torch.as_tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (mean, std))
    return lambda x: (x - m.to(x.dtype)) / s.to(x.dtype)


def patch_for_cpu() -> None:
    """Let GPU-only upstream code run on CPU in float32 (see the module docstring)."""
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Normalize = _normalize
    tv.datasets = types.ModuleType("torchvision.datasets")  # never reached: the .pt files exist
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.datasets": tv.datasets})
    torch.Tensor.half = lambda self, *a, **k: self.float()
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.half = lambda self: self.float()
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.Event = _WallEvent
    torch.cuda.synchronize = lambda *a, **k: None


def write_upstream_data(folder: Path, splits: dict) -> None:
    """cifar10/{train,test}.pt in the layout upstream's CifarLoader saves and reads."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    for split, (images, labels) in splits.items():
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(
            labels.astype(np.int64)), "classes": classes}, folder / f"{split}.pt")


@cli_main
def main(argv=None) -> int:
    p = Parser(prog="python benchmarks/upstream_train94.py",
               description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True,
                   help="folder holding upstream's `airbench/` package (the sdist, unpacked)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default $AIRBENCH_DATA)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=10000, help="evaluate on the first N test images")
    p.add_argument("--seeds", default="0", help="comma-separated")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="our side's memory format (default: airbench_torch's policy; upstream is "
                        "always channels_last)")
    p.add_argument("--out", default="results/upstream_train94.jsonl")
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    args = p.parse_args(argv)
    # -- every option and path before upstream is imported or any data loaded
    args.epochs = V.number("--epochs", args.epochs, low=0, low_open=True, high=1000)
    args.n_train = V.integer("--n-train", args.n_train, low=1, high=50000)
    args.n_test = V.integer("--n-test", args.n_test, low=1, high=10000)
    seeds = V.parse_seeds(args.seeds)
    out = V.check_out_file(args.out, "--out").resolve()
    if not (Path(args.upstream) / "airbench" / "utils.py").is_file():
        raise V.PathError(f"--upstream {args.upstream}: {args.upstream}/airbench/utils.py not "
                          "found; unpack upstream's airbench 0.1.8 sdist there (see the module "
                          "docstring)")
    data_dir = args.data_dir or os.environ.get("AIRBENCH_DATA")

    patch_for_cpu()
    sys.path.insert(0, str(Path(args.upstream).resolve()))
    import airbench as up                                      # upstream
    init = up.utils.CifarLoader.__init__                       # its gpu=0 default -> 'cpu'
    init.__defaults__ = init.__defaults__[:-1] + ("cpu",)
    import airbench_torch as ours

    work = Path(tempfile.mkdtemp(prefix="upstream94-"))
    tr, te = load_cifar10("train", data_dir), load_cifar10("test", data_dir)
    write_upstream_data(work / "cifar10", {"train": tr, "test": te})
    os.chdir(work)                                             # upstream hard-codes 'cifar10'
    test_ours = ours.CifarLoader(data=(te[0][:args.n_test], te[1][:args.n_test]), train=False,
                                 batch_size=2000, device="cpu", channels_last=args.channels_last)
    hyp = up.lib_airbench94.hyp
    common = dict(recipe="airbench94", device="cpu", dtype="float32", tta_level=2,
                  versions=dict(package_versions("torch"), airbench_upstream="0.1.8"),
                  machine=machine_info(),
                  data=dict(label=dataset_label(data_dir), n_train=args.n_train, n_test=args.n_test),
                  overrides=dict(epochs=args.epochs))
    threads = torch.get_num_threads()

    for seed in seeds:
        # upstream: its own loader, net, optimizer and loop; seeded through torch's global RNG
        torch.manual_seed(seed)
        loader = up.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                aug=hyp["aug"], altflip=True)
        loader.images, loader.labels = loader.images[:args.n_train], loader.labels[:args.n_train]
        test = up.CifarLoader("cifar10", train=False, batch_size=2000)
        test.images, test.labels = test.images[:args.n_test], test.labels[:args.n_test]
        t0 = time.perf_counter()
        net = up.train94(loader, epochs=args.epochs, verbose=False)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        accs = [up.evaluate(net, test, tta_level=t) for t in (0, 2)]
        rec_up = make_record(framework="upstream-airbench-0.1.8", seed=seed, acc=accs[0],
                             acc_tta=accs[1], train_seconds=t_train,
                             eval_seconds=time.perf_counter() - t0,
                             steps=int(np.ceil(len(loader) * args.epochs)),
                             flags=dict(threads=threads, channels_last=True), **common)
        append_record(out, rec_up)

        # ours: same recipe through the upstream-named API, on the same images
        torch.manual_seed(seed)
        loader = ours.CifarLoader(data=(tr[0][:args.n_train], tr[1][:args.n_train]), train=True,
                                  batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                  altflip=True, device="cpu", seed=seed,
                                  channels_last=args.channels_last)
        t0 = time.perf_counter()
        net = ours.train94(loader, epochs=args.epochs, verbose=False, seed=seed)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        accs = [ours.evaluate(net, test_ours, tta_level=t) for t in (0, 2)]
        rec_ours = make_record(framework="torch", seed=seed, acc=accs[0], acc_tta=accs[1],
                               train_seconds=t_train, eval_seconds=time.perf_counter() - t0,
                               steps=int(np.ceil(len(loader) * args.epochs)),
                               flags=dict(threads=threads, channels_last=loader.channels_last),
                               **common)
        append_record(out, rec_ours)
        for r in (rec_up, rec_ours):
            print(f"seed {seed} {r['framework']:>24}: acc {r['acc']:.4f} tta2 {r['acc_tta']:.4f} "
                  f"train {r['train_seconds']:.1f} s eval {r['eval_seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
