"""parity.sides: both frameworks implement the whole Side interface, and on a tiny net built from
the same upstream-named arrays they agree (forward logits, one step's loss, the weights after it)."""
import inspect

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from parity import sides  # noqa: E402
from parity.numerics.batches import normalize, synthetic_images  # noqa: E402

INTERFACE = ("arrays", "load_arrays", "forward", "step", "stepper", "logits", "run_recipe",
             "warmup", "from_arrays", "from_init")


@pytest.fixture(scope="module")
def pair():
    sides.setup_precision()
    r = sides.scaled_recipe("airbench94", 1 / 16, batch_size=16)
    imgs, labels = synthetic_images(48, seed=1)
    x = normalize(imgs).astype(np.float32)
    torch_side = sides.TorchSide.from_init(r, 48, x, seed=0, channels_last=False)
    arrays = torch_side.arrays()
    jax_side = sides.JaxSide.from_arrays(r, 48, arrays)
    return torch_side, jax_side, arrays, x[:16], labels[:16]


@pytest.mark.parametrize("cls", [sides.TorchSide, sides.JaxSide])
def test_every_side_implements_the_whole_interface(cls):
    assert cls.name in sides.SIDES and sides.SIDES[cls.name] is cls
    for name in INTERFACE:
        own = getattr(cls, name)
        assert own is not getattr(sides.Side, name, None) or name in ("run_recipe", "warmup"), name
    assert callable(cls.package().run_recipe) and callable(cls.package().warmup)


def test_same_arrays_same_logits_and_loss(pair):
    torch_side, jax_side, arrays, x, y = pair
    for train in (False, True):
        t, j = torch_side.forward(x, y, train), jax_side.forward(x, y, train)
        np.testing.assert_allclose(j["logits"], t["logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(j["loss"], t["loss"], rtol=1e-5)
    np.testing.assert_allclose(jax_side.logits(x, 0), torch_side.logits(x, 0), atol=1e-5)
    for k, v in arrays.items():                     # arrays() round-trips through JAX
        np.testing.assert_array_equal(jax_side.arrays()[k], v, err_msg=k)


@pytest.mark.slow  # two train-step compilations (about a minute on 2 busy cores)
def test_one_step_same_loss_and_weights(pair):
    torch_side, jax_side, arrays, x, y = pair
    t = sides.TorchSide.from_arrays(torch_side.state.recipe, 48, arrays)
    j = sides.JaxSide.from_arrays(torch_side.state.recipe, 48, arrays)
    np.testing.assert_allclose(j.step(x, y), t.step(x, y), rtol=1e-5)
    ta, ja = t.arrays(), j.arrays()
    assert any(not np.array_equal(ta[k], arrays[k]) for k in arrays)   # the step moved weights
    for k in ta:
        np.testing.assert_allclose(ja[k], ta[k], atol=1e-4, rtol=1e-3, err_msg=k)


@pytest.mark.slow
def test_steppers_step_and_load_arrays_restores(pair):
    torch_side, jax_side, arrays, x, y = pair
    j = sides.JaxSide.from_arrays(torch_side.state.recipe, 48, arrays)
    fn, compile_seconds = j.stepper(x, y)
    assert compile_seconds > 0
    fn()
    assert int(j.state.step) == 1
    j.load_arrays(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(j.arrays()[k], v, err_msg=k)
    t = sides.TorchSide.from_arrays(torch_side.state.recipe, 48, arrays)
    fn, compile_seconds = t.stepper(x, y)
    assert compile_seconds is None
    fn()
    assert any(not np.array_equal(t.arrays()[k], arrays[k]) for k in arrays)


def test_run_recipe_passes_only_accepted_keywords():
    def f(recipe, seed, *, overrides=None):
        return overrides
    assert sides.accepted(f, dict(overrides=1, bogus=2)) == dict(overrides=1)
    assert "overrides" in inspect.signature(sides.TorchSide.package().run_recipe).parameters
