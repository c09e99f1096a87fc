"""A vmapped group in which one seed diverges (airbench_jax.seeds): that seed's record is the
`diverged` record its sequential run writes, and the other seeds' records are as they are without
it. No learning rate can target one seed of a group, so the test poisons one seed's initial
weights with NaN: a test-only wrapper around `seeds.init_group` (what the group trains from)
and, for the sequential run, around `run.build_state` (what a sequential run trains from)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

RECIPE = "airbench94_muon"
OVER = dict(widths=(4, 8, 8), batch_size=16, epochs=2, whiten_images=64)  # 2 x 4 steps
SEEDS = [0, 1, 2]
BAD = 1                       # the poisoned seed's index in the group

pytestmark = pytest.mark.slow  # three tiny runs with their compilations: over 20 s on 2 cores


def _data(n, seed):
    """Learnable synthetic images (a class's own colour plus noise), so that 4 steps leave a net
    whose predictions differ between images (no collapse on the healthy seeds)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    colours = np.random.default_rng(99).integers(0, 256, (10, 3))
    noise = rng.integers(-40, 41, (n, 32, 32, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def _nan_floats(tree, index=None):
    def poison(v):
        if not jnp.issubdtype(v.dtype, jnp.floating):
            return v
        return jnp.full_like(v, jnp.nan) if index is None else v.at[index].set(jnp.nan)
    return jax.tree.map(poison, tree)


@pytest.fixture(scope="module")
def runs():
    from airbench_jax import run_recipe, seeds as S
    from airbench_jax import run as R
    data = dict(train_data=_data(64, 0), test_data=_data(40, 1), device="cpu",
                conv_impl="matmul", precision="float32")
    clean = run_recipe(RECIPE, None, seeds=SEEDS, group_size=3, overrides=OVER, **data)
    mp = pytest.MonkeyPatch()
    real_group, real_state = S.init_group, R.build_state

    def poisoned_group(recipe, n_train, seeds, whiten_src, **kw):
        state, keys, pre = real_group(recipe, n_train, seeds, whiten_src, **kw)
        return state.replace(params=_nan_floats(state.params, BAD)), keys, pre

    def poisoned_state(*args, **kw):
        state = real_state(*args, **kw)
        return state.replace(params=_nan_floats(state.params))
    try:
        mp.setattr(S, "init_group", poisoned_group)
        group = run_recipe(RECIPE, None, seeds=SEEDS, group_size=3, overrides=OVER, **data)
        mp.setattr(S, "init_group", real_group)
        mp.setattr(R, "build_state", poisoned_state)
        sequential = run_recipe(RECIPE, SEEDS[BAD], overrides=OVER, **data)
    finally:
        mp.undo()
    return clean, group, sequential


def test_the_poisoned_seed_is_recorded_diverged_as_its_sequential_run(runs):
    clean, group, seq = runs
    bad = group[BAD]
    assert bad["seed"] == SEEDS[BAD]
    assert bad["status"] == seq["status"] == "diverged"
    assert bad["error"] == seq["error"] == "non-finite training loss in epoch 0"
    assert bad["acc"] is bad["acc_tta"] is bad["eval_seconds"] is None
    assert seq["acc"] is seq["acc_tta"] is None
    # the step count at divergence (epoch 0's end), not the group's last step (8); the
    # same epoch rows: the diverging epoch's, then none
    assert bad["steps"] == seq["steps"] == 4
    assert [(e["epoch"], e["val_acc"]) for e in bad["per_epoch"]] == \
        [(e["epoch"], e["val_acc"]) for e in seq["per_epoch"]] == [(0, None)]
    for rec in (bad, seq):                   # NaN (the record writes it as "nan")
        loss = rec["per_epoch"][0]["train_loss"]
        assert loss is None or not np.isfinite(float(loss))
    assert set(bad) - set(seq) == {"vmapped"} and set(seq) <= set(bad)
    assert "_predictions" not in bad


def test_the_other_seeds_run_as_without_the_poison(runs):
    clean, group, _ = runs
    assert [r["seed"] for r in group] == [r["seed"] for r in clean] == SEEDS
    assert clean[BAD]["status"] == "ok"
    for k in range(len(SEEDS)):
        if k == BAD:
            continue
        got, want = group[k], clean[k]
        assert got["status"] == want["status"] == "ok" and got.get("error") is None
        assert got["steps"] == want["steps"] == 8
        assert len(got["per_epoch"]) == len(want["per_epoch"]) == 2
        assert got["acc"] == pytest.approx(want["acc"], abs=1e-6)
        assert got["acc_tta"] == pytest.approx(want["acc_tta"], abs=1e-6)
        for a, b in zip(got["per_epoch"], want["per_epoch"]):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
