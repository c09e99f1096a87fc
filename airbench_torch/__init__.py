"""airbench_torch: the PyTorch reference implementation of every airbench recipe.

Upstream-compatible API (airbench 0.1.8): CifarLoader, make_net93..96, train93..96, warmup93..96,
infer, evaluate; plus train94_muon, train96_faster, make_net(recipe), train(recipe, loader), and
the low-level make_train_state / train_step / run_recipe / warmup used by the parity suite.
"""
from .api import (train, train93, train94, train94_muon, train95, train96, train96_faster,
                  warmup93, warmup94, warmup95, warmup96)
from .loader import CifarLoader
from .net import CifarNet, make_net, make_net93, make_net94, make_net95, make_net96
from .optim import Lookahead, Muon, newton_schulz
from .evaluation import evaluate, infer
from .train import TrainState, make_train_state, run_recipe, train_step, warmup

__all__ = [
    "CifarLoader", "CifarNet", "make_net", "make_net93", "make_net94", "make_net95", "make_net96",
    "train", "train93", "train94", "train95", "train96", "train94_muon", "train96_faster",
    "warmup", "warmup93", "warmup94", "warmup95", "warmup96", "infer", "evaluate", "run_recipe",
    "make_train_state", "train_step", "TrainState", "Muon", "Lookahead", "newton_schulz",
]
