"""Checkpoints: .npz (PyTorch-named arrays) and msgpack round trips reproduce the net exactly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from airbench_common import get_recipe
from airbench_jax import load_checkpoint, save_checkpoint
from airbench_jax.model import make_net

RECIPE = get_recipe("airbench96", widths=(8, 16, 16))  # depth 3: every layer kind


@pytest.mark.parametrize("suffix", [".npz", ".msgpack"])
def test_checkpoint_round_trip_is_exact(tmp_path, suffix):
    net = make_net(RECIPE, jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 32, 32, 3))
    net.eval()
    before = np.asarray(net(x))
    path = tmp_path / f"net{suffix}"
    save_checkpoint(net, path)
    assert not list(tmp_path.glob("*.tmp"))      # atomic: no temporary left behind
    fresh = make_net(RECIPE, jax.random.PRNGKey(99))   # different weights until loaded
    loaded = load_checkpoint(path, fresh)
    loaded.eval()
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)
