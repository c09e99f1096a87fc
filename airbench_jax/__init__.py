"""airbench in JAX / Flax NNX / optax."""
from .model import CifarNet, make_net  # noqa: F401
from .train import (TrainState, init_train_state, net_from_state, run_recipe, train_epoch,  # noqa: F401
                    train_step, warmup)
