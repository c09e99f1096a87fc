"""Vmapped multi-seed training (airbench_jax.seeds): seed k of a group is seed k's sequential run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from airbench_common.recipes import get_recipe
from airbench_common.workload import Workload

TINY = dict(widths=(8, 16, 16), batch_size=32, epochs=1, whiten_images=64)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, (n,)).astype(np.int32))


def _sequential(r, seed, x, y):
    """What run.run_recipe_with_state does for one seed, for one epoch."""
    from airbench_jax import augment as aug
    from airbench_jax import init_train_state, train_epoch
    from airbench_jax.prepare import prepare_data
    k_init, k_flip, k_epochs = jax.random.split(jax.random.PRNGKey(seed), 3)
    xs = jnp.asarray(x)
    st = init_train_state(r, len(x), k_init, whiten_images=aug.normalize(xs[:r.whiten_images]),
                          conv_impl="matmul")
    padded = prepare_data(r, xs, jnp.float32, k_flip)
    st, (losses, _, _) = train_epoch(st, padded, jnp.asarray(y), 0, k_epochs)
    return st, losses


def _vmapped(r, seeds, x, y):
    from airbench_jax import augment as aug
    from airbench_jax import seeds as S
    xs = jnp.asarray(x)
    st, keys, pre = S.init_group(r, len(x), seeds, aug.normalize(xs[:r.whiten_images]),
                                 conv_impl="matmul", precision="float32")
    padded = aug.pad_reflect(aug.normalize(xs), r.translate)
    st, (losses, _, _) = S.group_epoch(st, padded, jnp.asarray(y), 0, keys, pre)
    return st, losses


@pytest.mark.parametrize("recipe", [
    "airbench94_muon",                                      # Muon, altflip
    pytest.param("airbench94", marks=pytest.mark.slow),     # lookahead
    pytest.param("airbench96_faster", marks=pytest.mark.slow)])  # proxy net (lax.cond per seed)
def test_vmapped_seed_equals_sequential_run_over_first_steps(recipe):
    """Three steps (one epoch of 96 images in batches of 32): every seed of a vmapped group of 3
    has the parameters and losses of its own sequential run to float32 rounding. A group that
    gave every seed the same keys (a broken per-seed split) fails here."""
    over = dict(TINY, **({"filter_keep": 16, "proxy_widths": (8, 8, 8)}
                         if recipe == "airbench96_faster" else {}))
    r = get_recipe(recipe, **over)
    x, y = _data()
    seeds = [3, 0, 11]
    vst, vloss = _vmapped(r, seeds, x, y)
    from airbench_jax.loop import unstack_state
    for k, s in enumerate(seeds):
        st, loss = _sequential(r, s, x, y)
        np.testing.assert_allclose(np.asarray(vloss[k]), np.asarray(loss), rtol=1e-5, atol=1e-4)
        one = unstack_state(vst, k)
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(st.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)
        assert int(one.step) == int(st.step) == 3


def test_preflip_mask_is_random_flip():
    """The shared-copy pre-flip flips exactly the images augment.random_flip flips."""
    from airbench_jax import augment as aug
    from airbench_jax.seeds import preflip_mask
    r = get_recipe("airbench94_muon")
    x = aug.normalize(jnp.asarray(_data(40)[0]))
    key = jax.random.PRNGKey(7)
    mask = preflip_mask(r, key, 40)
    want = aug.pad_reflect(aug.random_flip(key, x), r.translate)
    base = aug.pad_reflect(x, r.translate)
    got = jnp.where(mask[:, None, None, None], aug.flip_lr(base), base)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert 0 < int(mask.sum()) < 40
    assert preflip_mask(get_recipe("airbench94", altflip=False), key, 40) is None


# the tiny CLI run's data and overrides (48 training images, batch 16: 3 steps)
TINY_CLI = dict(widths=(4, 8, 8), batch_size=16, whiten_images=16)


def _tiny_arrays():
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
             rng.integers(0, 10, n).astype(np.uint8)) for n in (48, 32)]


def test_run_seeds_records_one_per_seed_marked_vmapped():
    """Library: one record per seed, in order, marked with the group; groups chunked by
    group_size; the same record fields as a sequential run (plus `vmapped`)."""
    from airbench_jax import run_recipe
    from airbench_jax.seeds import run_seeds
    # the CLI test's data and overrides: its vmapped programs are then the ones compiled here
    # (the session's persistent compilation cache, tests/conftest.py)
    train, test = _tiny_arrays()
    data = dict(train_data=train, test_data=test, device="cpu", verbose=False)
    over = dict(TINY_CLI, epochs=1)
    recs = run_seeds("airbench94", [4, 5, 6], overrides=over, group_size=2, **data)
    assert [r["seed"] for r in recs] == [4, 5, 6]
    assert [r["vmapped"]["group_size"] for r in recs] == [2, 2, 1]
    assert recs[0]["vmapped"]["seeds"] == [4, 5] and recs[2]["vmapped"]["seeds"] == [6]
    assert all(r["steps"] == 3 for r in recs)
    # `data` given: the record's data field as is (the CLI's, compare's label and checksums)
    ident = dict(label="tiny arrays", dir=None, n_train=48, n_test=32, images_sha256="x")
    seq = run_recipe("airbench94", 4, overrides=over, data=ident, **data)
    assert recs[0]["status"] == seq["status"]       # random labels: may collapse, on both alike
    assert set(recs[0]) - set(seq) == {"vmapped"} and set(seq) <= set(recs[0])
    assert recs[0]["data"] == dict(label="user-supplied arrays", dir=None, n_train=48,
                                   n_test=32) and seq["data"] == ident
    # seed 4 alone through run_recipe(seeds=...) is the library's spelling of the same thing
    again = run_recipe("airbench94", None, seeds=[4], overrides=over, data=ident, **data)
    assert len(again) == 1 and again[0]["seed"] == 4 and again[0]["data"] == ident
    # at most one test image apart (a group of 1 and a group of 2 may round differently)
    assert again[0]["acc_tta"] == pytest.approx(recs[0]["acc_tta"], abs=1.01 / len(test[1]))


@pytest.mark.parametrize("seeds, group, msg", [
    ([], None, "no seeds"), ([1, 1], None, "twice"), ([-1], None, "outside"),
    ([0, 1], 0, "at least 1")])
def test_bad_seeds_are_usage_errors(seeds, group, msg):
    from airbench_common.errors import UsageError
    from airbench_jax.seeds import run_seeds
    with pytest.raises(UsageError, match=msg):
        run_seeds("airbench94", seeds, group_size=group, train_data=_data(64),
                  test_data=_data(10))


def test_auto_group_size_by_memory():
    from airbench_jax.seeds import auto_group_size
    assert auto_group_size(8, None, None) == 8
    assert auto_group_size(8, None, None, cap=3) == 3
    assert auto_group_size(8, 100, 1000) == 5          # half of 1000 bytes at 100 per seed
    assert auto_group_size(8, 10_000, 1000) == 1        # never below one seed


# ----------------------------------------------------------------------------- command lines
# (validate.parse_seeds itself: tests/test_common_validate.py)
def _tiny_dir(tmp_path):
    for split, (images, labels) in zip(("train", "test"), _tiny_arrays()):
        np.savez(tmp_path / f"{split}.npz", images=images, labels=labels)
    return ["--data-dir", str(tmp_path), "--recipe", "airbench94", "--set", "widths=4,8,8",
            "--set", "batch_size=16", "--set", "whiten_images=16", "--epochs", "1", "--quiet",
            "--device", "cpu"]


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_cli_seeds_one_record_per_seed(framework, tmp_path, capsys, monkeypatch):
    """`--seeds 2:5` on both CLIs: one record per seed, in order; JAX's marked vmapped with its
    group (--group-size 2: groups of 2 and 1), PyTorch's sequential (no mark)."""
    from airbench_common import outcome
    from airbench_common.records import read_records
    monkeypatch.setattr(outcome, "collapse_reason", lambda predictions: None)
    mod = __import__(f"airbench_{framework}.__main__", fromlist=["main"])
    out = tmp_path / "runs.jsonl"
    extra = ["--group-size", "2"] if framework == "jax" else ["--no-progress"]
    code = mod.main(_tiny_dir(tmp_path) + ["--seeds", "2:5", "--out", str(out)] + extra)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    recs = read_records(out)
    assert [r["seed"] for r in recs] == [2, 3, 4] and all(r["steps"] == 3 for r in recs)
    if framework == "jax":
        assert [r["vmapped"]["seeds"] for r in recs] == [[2, 3], [2, 3], [4]]
    else:
        assert not any("vmapped" in r for r in recs)
    assert captured.out.splitlines()[0].startswith("run 0 seed 2: acc ")


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("args, msg", [
    (["--seeds", "0:2", "--runs", "2"], "--seeds and --seed/--runs"),
    (["--seeds", "3:1"], "names no seed"), (["--group-size", "2"], "needs --seeds")])
def test_cli_seeds_bad_input_one_line_exit_2(framework, args, msg, tmp_path):
    import subprocess
    import sys
    if framework == "torch" and "--group-size" in args:
        msg = "unrecognized arguments"
    p = subprocess.run([sys.executable, "-m", f"airbench_{framework}", "--data-dir",
                        str(tmp_path), "--out", str(tmp_path / "r.jsonl")] + args,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.jsonl").exists()


# ----------------------------------------------------------------------------- parity.compare
def _fake_record(options, seed, framework, **extra):
    from airbench_common.records import make_record
    # torch exactly one margin (smoke: 0.5 points) above jax: neither verdict before the cap
    acc = 0.9 + 0.002 * np.sin(1.7 * seed) + (0.005 if framework == "torch" else 0.0)
    rec = make_record(recipe=options.recipe, overrides={}, seed=seed, framework=framework,
                      versions={}, device="cpu", dtype="float32", flags={}, acc=acc,
                      acc_tta=acc, tta_level=2, train_seconds=1.0, eval_seconds=0.1, steps=4,
                      data=dict(options.data), **extra)
    rec["_predictions"] = np.asarray(options.test_data[1]).astype(np.uint8)
    return rec


class _Runner(Workload):
    """A fake workload that trains seeds together as JAX's does; logs its calls."""

    def __init__(self, framework, calls):
        self.framework, self.calls = framework, calls

    def warmup(self, options):
        pass

    def run(self, options, seed):
        self.calls.append((self.framework, seed))
        return _fake_record(options, seed, self.framework)

    def run_seeds(self, options, seeds):
        self.calls.append((self.framework, tuple(seeds)))
        assert self.framework == "jax" and options.extra["group_size"] == len(seeds)
        return [_fake_record(options, s, "jax", vmapped=dict(group_size=len(seeds)))
                for s in seeds]


@pytest.fixture()
def fake_data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 2000), ("test", 1000)):
        np.savez(d / f"{split}.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, n).astype(np.uint8))
    return d


def test_compare_jax_vmap_groups_jax_seeds_and_keeps_one_record_each(tmp_path, fake_data_dir):
    """--jax-vmap 3 with 5 runs per side: JAX trains seeds 0-2 then 3-4 as groups (never beyond
    the plan's N), PyTorch one seed at a time; one record and one predictions file per
    (framework, seed); each grouped record's wall_seconds is its share of the group's."""
    from airbench_common.records import read_records
    from parity.study import compare
    calls = []
    runners = {fw: _Runner(fw, calls) for fw in ("jax", "torch")}
    out = tmp_path / "out"
    rc = compare.main(["--preset", "smoke", "--runs", "5", "--out", str(out), "--data-dir",
                       str(fake_data_dir), "--no-progress", "--no-plots", "--jax-vmap", "3"],
                      workloads=runners)
    assert rc == 0
    assert calls[:2] == [("jax", (0, 1, 2)), ("torch", 0)]
    assert [c for c in calls if c[0] == "jax"] == [("jax", (0, 1, 2)), ("jax", (3, 4))]
    assert [c[1] for c in calls if c[0] == "torch"] == [0, 1, 2, 3, 4]
    recs = read_records(out / "runs.jsonl")
    keys = sorted((r["framework"], r["seed"]) for r in recs)
    assert keys == sorted({(fw, s) for fw in ("jax", "torch") for s in range(5)})
    assert all((out / "predictions" / f"{fw}-seed{s}.npy").exists() for fw, s in keys)
    assert [r["vmapped"]["group_size"] for r in recs if r["framework"] == "jax"] == [3, 3, 3, 2, 2]


def test_compare_jax_vmap_bad_value_is_one_line_error(tmp_path, fake_data_dir, capsys):
    from parity.study import compare
    rc = compare.main(["--preset", "smoke", "--out", str(tmp_path / "o"), "--data-dir",
                       str(fake_data_dir), "--jax-vmap", "0"], workloads={})
    assert rc == 2 and "--jax-vmap 0 must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_jax_vmap_with_the_real_runner(tmp_path, fake_data_dir):
    """python -m parity.compare --jax-vmap 3 with airbench_jax's runner (smoke preset): one group
    of 3 seeds, one record and predictions file per seed, each marked vmapped."""
    from airbench_common.records import read_records
    from parity.study import compare
    out = tmp_path / "out"
    rc = compare.main(["--preset", "smoke", "--runs", "3", "--frameworks", "jax", "--out",
                       str(out), "--data-dir", str(fake_data_dir), "--no-progress", "--no-plots",
                       "--jax-vmap", "3"])
    assert rc == 0
    recs = read_records(out / "runs.jsonl")
    assert sorted(r["seed"] for r in recs) == [0, 1, 2]
    assert all(r["vmapped"]["seeds"] == [0, 1, 2] for r in recs)
    assert all((out / r["predictions"]).exists() for r in recs)
