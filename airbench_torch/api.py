"""Upstream airbench's library API (train93/94/95/96, warmup93..96, make_net9x, infer, evaluate,
CifarLoader) plus train94_muon / train96_faster, all driven by the shared recipe table."""
from __future__ import annotations

import torch

from torch import nn

from airbench_common import outcome
from airbench_common import validate as V
from airbench_common.library import check_train_args, upstream_api

from .device import resolve_device
from .loader import CifarLoader
from .evaluation import evaluate
from .train import Table, fit, make_train_state


def train(recipe, loader=None, *, make_net=None, run=0, verbose=True, seed=None, device=None,
          ns_dtype=None, test_loader=None, **overrides):
    """Train `recipe` (name or Recipe; overrides are recipe fields) on `loader` (default: the
    recipe's augmented training loader on $AIRBENCH_DATA) and return the trained net.
    As upstream, the loader's batch size is the one used (it sets the recipe's batch_size), and
    its order and randomness (shuffle, seed) are the run's. make_net: a no-argument callable
    returning the net (upstream's); None builds the recipe's. run: the run number printed in the
    table (upstream's meaning); -1 or 'warmup': a single step only. seed: torch's global seed for
    the init (None: drawn from torch's global generator, as upstream's unseeded runs)."""
    r, seed = check_train_args(recipe, loader, test_loader, make_net, seed, overrides,
                               loader_type=CifarLoader, loader_name="an airbench_torch.CifarLoader")
    dev = resolve_device(device if loader is None else loader.device)
    if loader is None:
        loader = CifarLoader(None, train=True, batch_size=r.batch_size, aug=r.loader_aug(),
                             altflip=r.altflip, device=dev, seed=seed)
    loader.epoch = 0
    warm = run in (-1, "warmup")
    n_train = len(loader.images)
    whiten_inputs = loader.normalize(loader.images[:r.whiten_images])
    net = (V.check_instance("make_net()", make_net(), nn.Module, "a torch nn.Module (a CifarNet)")
           if make_net is not None else None)
    cl = getattr(loader, "channels_last", None)     # the net follows the loader's layout
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    state = make_train_state(r, n_train, whiten_inputs, seed=seed,
                             device=dev, net=net, ns_dtype=ns_dtype, whiten_given_net=True,
                             channels_last=cl)
    if warm:
        from .train import train_step
        for inputs, labels in loader:
            train_step(state, inputs, labels)
            break
        return state.net
    if verbose and test_loader is None:
        test_loader = CifarLoader(loader.path, train=False,
                                  batch_size=outcome.EVAL_BATCH_ACCELERATOR, device=dev,
                                  channels_last=cl)
    table = Table() if verbose else None
    if table is not None and run == 0:
        table.head()
    out = fit(state, loader, test_loader, eval_every_epoch=verbose, table=table, run_label=run)
    if out["diverged"]:   # the library returns a trained net or raises, as upstream's
        raise FloatingPointError(f"{out['diverged']} of {r.name}; try a lower learning rate or "
                                 "check the inputs are normalized")
    if verbose:
        acc = evaluate(state.net, test_loader, r.tta_level)
        table.row(final=True, epoch="eval", tta_val_acc=acc, time_seconds=out["train_seconds"])
    return state.net


(train93, train94, train95, train96, train94_muon, train96_faster,
 warmup93, warmup94, warmup95, warmup96) = upstream_api(train)
