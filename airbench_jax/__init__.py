"""airbench in JAX / Flax NNX / optax (never imports torch).

Low-level (parity): make_net, init_train_state, train_step, train_epoch, net_from_state,
run_recipe, warmup; conversion in airbench_jax.convert. Upstream's library API: CifarLoader,
make_net93/94/95/96, train, train93/94/95/96, train94_muon, train96_faster, infer, evaluate,
save_checkpoint, load_checkpoint.
"""
from .convert import from_torch_arrays, to_torch_arrays  # noqa: F401
from .lib import (CifarLoader, evaluate, infer, load_checkpoint, make_net93, make_net94,  # noqa: F401
                  make_net95, make_net96, save_checkpoint, train, train93, train94, train95,
                  train96, train94_muon, train96_faster)
from .model import CifarNet  # noqa: F401
from .model import make_net as _make_net_recipe
from .train import (TrainState, init_train_state, net_from_state, run_recipe,  # noqa: F401
                    run_recipe_with_state, train_epoch, train_step, warmup)


def make_net(recipe="airbench94", key=None, **kw):
    """make_net(recipe, key) -> CifarNet (recipe: a Recipe or a recipe name)."""
    from airbench_common.recipes import Recipe, get_recipe
    r = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    return _make_net_recipe(r, key, **kw)
