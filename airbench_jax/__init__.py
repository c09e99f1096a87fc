"""airbench in JAX / Flax NNX / optax (never imports torch).

Upstream's library API (the published `airbench` package's names and parameter order):
CifarLoader, make_net93/94/95/96, train93/94/95/96, warmup93/94/95/96, infer, evaluate; plus
train94_muon, train96_faster, train(recipe, loader), make_net(recipe, key), save_checkpoint,
load_checkpoint. Low-level (parity): init_train_state, train_step, train_epoch, net_from_state,
run_recipe, warmup; conversion in airbench_jax.convert.
"""
from .convert import from_torch_arrays, to_torch_arrays  # noqa: F401
from .lib import (CifarLoader, evaluate, infer, load_checkpoint, make_net93, make_net94,  # noqa: F401
                  make_net95, make_net96, save_checkpoint, train, train93, train94, train95,
                  train96, train94_muon, train96_faster, warmup93, warmup94, warmup95, warmup96)
from .model import CifarNet, make_net  # noqa: F401
from .loop import train_epoch  # noqa: F401
from .run import run_recipe, run_recipe_with_state, warmup  # noqa: F401
from .state import TrainState, init_train_state, net_from_state, train_step  # noqa: F401
