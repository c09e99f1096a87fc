"""examples/airbench94_muon.py trains exactly what the package trains: the same seed gives the
same parameters, bit for bit, as airbench_jax's train state and step after each step, and as
airbench_jax.run_recipe_with_state after a whole (small) run, with the same TTA accuracy. So the
example cannot drift from the package without these tests failing.

Bitwise, not to a tolerance: the example's step is its own jitted function, but it traces the
same operations in the same order as the package's (the same net, loss, optimizer transforms and
augmentation), and XLA compiles them to the same arithmetic, inside a jit or a lax.scan."""
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import airbench_jax
from airbench_common.recipes import get_recipe
from airbench_jax import augment as aug
from airbench_jax import precision as prec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "airbench94_muon.py"
SEED = 3
N_TRAIN, N_TEST = 400, 200
# small and quick: 4 steps an epoch, 2 epochs, the whitening bias frozen after the first; one
# recipe for both tests, so that the second finds the example's step compiled (JAX's cache)
SMALL = dict(widths=(16, 32, 32), batch_size=100, epochs=2, whiten_bias_epochs=1.0)


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("airbench94_muon_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(lossless_subset):
    (train_x, train_y), (test_x, test_y) = lossless_subset
    return (train_x[:N_TRAIN], train_y[:N_TRAIN]), (test_x[:N_TEST], test_y[:N_TEST])


def assert_same_bits(got, want, what: str) -> None:
    """Every leaf of `got` equals `want`'s exactly (same tree, dtypes and bits)."""
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], what
    for (path, g), (_, w) in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and np.array_equal(g, w), \
            f"{what}: {jax.tree_util.keystr(path)} differs (max |diff| {np.abs(g - w).max()})"


def test_each_step_matches_the_packages_train_state_and_step(example, data):
    """From the same key, the example's init and the package's init_train_state give the same
    state, and then each step on the same augmented batch the same parameters, running
    statistics and loss."""
    recipe = get_recipe("airbench94_muon", **SMALL)
    (train_x, train_y), _ = data
    policy = prec.resolve()
    k_init, k_flip, k_epochs = jax.random.split(jax.random.PRNGKey(SEED), 3)
    train_x = jax.numpy.asarray(train_x)
    graphdef, tx, state = example.init(recipe, train_x, N_TRAIN, k_init, policy)
    package = airbench_jax.init_train_state(
        recipe, N_TRAIN, k_init, whiten_images=aug.normalize(train_x[:recipe.whiten_images]))
    assert_same_bits(state.params, package.params, "params after init")
    assert_same_bits(state.rest, package.rest, "rest after init")

    step = example.make_train_step(recipe, graphdef, tx)
    padded = example.prepare_train_images(recipe, train_x, k_flip, np.float32)
    labels = jax.numpy.asarray(train_y, jax.numpy.int32)
    batches = example.epoch_batches(recipe, padded, labels, 0, k_epochs)
    for i, (images, batch_labels) in enumerate(batches):
        if i == 3:
            break
        before = state.params
        state, loss, _ = step(state, images, batch_labels)
        package, package_loss = airbench_jax.train_step(package, images, batch_labels)
        assert not np.array_equal(state.params["head"], before["head"])   # it did train
        assert_same_bits(state.params, package.params, f"params after step {i + 1}")
        assert_same_bits(state.rest, package.rest, f"rest after step {i + 1}")
        assert_same_bits(loss, package_loss, f"loss of step {i + 1}")
    assert i == 3, "the epoch had fewer than 4 batches"


# slow suite: a whole run; the default suite's test_each_step_matches_the_packages_train_state_and_step
# holds the example to the package step for step
@pytest.mark.slow
def test_a_whole_run_matches_run_recipe(example, data):
    """Two epochs (8 steps: the batch order, the augmentation keys, altflip's odd epoch, the
    whitening bias's freezing after step 4, the stop at the last step) give the same final
    parameters as run_recipe_with_state with the same seed, and the same TTA accuracy; the
    table has upstream's head, a row per epoch and the final TTA row."""
    recipe = get_recipe("airbench94_muon", **SMALL)
    train_data, test_data = data
    lines = []
    with prec.matmul_context(prec.resolve()):
        net, tta_acc = example.train(recipe, train_data, test_data, SEED, log=lines.append)
    record, state = airbench_jax.run_recipe_with_state(
        recipe, SEED, train_data=train_data, test_data=test_data, eval_every_epoch=False)
    assert record["steps"] == 8
    _, params, rest = example.nnx.split(net, example.nnx.Param, ...)
    assert_same_bits(example.nnx.to_pure_dict(params), state.params, "params after the run")
    assert_same_bits(example.nnx.to_pure_dict(rest), state.rest, "rest after the run")
    # the same predictions: the same count right (the example's accuracy is a float32 mean)
    assert round(tta_acc * N_TEST) == round(record["acc_tta"] * N_TEST)

    assert "train_loss" in lines[1] and "tta_val_acc" in lines[1]
    rows = [line.split("|")[2].strip() for line in lines if line.startswith("|")][1:]
    assert rows == ["0", "1", "eval"]
    assert f"{tta_acc:0.4f}" in lines[-2]


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed -1 is outside [0, 4294967296); seeds are 32-bit"),
    (["--n-train", "1999"], "--n-train 1999: give at least one batch of training images, 2000"),
    (["--epochs", "0"], "recipe airbench94_muon: epochs=0.0 must be a positive finite number"),
])
def test_the_command_line_says_what_is_wrong_before_reading_data(example, args, message, capsys,
                                                                tmp_path):
    """Exit status 2 and one line on stderr; the (empty) data folder is never read."""
    assert example.main(args + ["--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
