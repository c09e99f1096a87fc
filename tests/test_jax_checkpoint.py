"""Checkpoints: a trained net's round trip is exact in both formats (BatchNorm statistics
included), a PyTorch state dict saved as .npz gives the same logits in JAX, and every bad file is
a one-line CheckpointError that leaves the caller's net untouched."""
import zipfile

import jax
import numpy as np
import pytest

from airbench_common import get_recipe
from airbench_common.errors import UsageError
from airbench_jax import load_checkpoint, save_checkpoint
from airbench_jax.checkpoint import CheckpointError
from airbench_jax.convert import to_torch_arrays
from airbench_jax.model import make_net
from jaxrand import normal

# depth 3: every layer kind; a few real SGD steps so that BatchNorm statistics move
RECIPE = get_recipe("airbench96", widths=(8, 16, 16), batch_size=32, epochs=1, whiten_images=64,
                    cutout=0, lookahead=False)  # lookahead would copy back the EMA of 3 steps


@pytest.fixture(scope="module")
def trained():
    """Three SGD steps (train_step on batches of 32; no evaluation to compile): BatchNorm
    statistics and weights move away from their init."""
    import jax.numpy as jnp
    from airbench_jax import augment as aug
    from airbench_jax.state import init_train_state, net_from_state, train_step
    rng = np.random.default_rng(0)
    x = aug.normalize(jnp.asarray(rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)))
    y = jnp.asarray(rng.integers(0, 10, 96).astype(np.int32))
    state = init_train_state(RECIPE, 96, jax.random.PRNGKey(0), whiten_images=x[:64])
    for i in range(3):
        state, loss = train_step(state, x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)])
        assert np.isfinite(float(loss))
    assert int(state.step) == 3
    return net_from_state(state)


def _arrays(net):
    return to_torch_arrays(net)


def _logits(net, x):
    net.eval()
    return np.asarray(net(x))


X = normal(jax.random.PRNGKey(2), (4, 32, 32, 3))


@pytest.mark.parametrize("suffix", [".npz", ".msgpack"])
def test_trained_round_trip_is_exact(tmp_path, trained, suffix):
    before = _arrays(trained)
    # the test has teeth: training moved the BatchNorm statistics away from their init
    assert not np.allclose(before["2.norm1.running_mean"], 0)
    assert not np.allclose(before["2.norm1.running_var"], 1)
    assert int(before["2.norm1.num_batches_tracked"]) == 3
    path = tmp_path / f"net{suffix}"
    save_checkpoint(trained, path)
    assert not list(tmp_path.glob("*.tmp")) and (path.stat().st_mode & 0o777) == 0o644
    fresh = make_net(RECIPE, jax.random.PRNGKey(99))     # different weights until loaded
    loaded = load_checkpoint(path, fresh)
    assert loaded is fresh                                # in place, both formats
    after = _arrays(loaded)
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    np.testing.assert_array_equal(_logits(loaded, X), _logits(trained, X))


def test_torch_state_dict_loads_with_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    from airbench_torch.net import net_for_recipe
    torch.manual_seed(0)
    t = net_for_recipe(RECIPE).float()
    with torch.no_grad():  # non-trivial BatchNorm statistics and biases
        for k, v in t.state_dict().items():
            if k.endswith(("running_mean", "norm1.bias", "norm2.bias", "0.bias")):
                v.copy_(torch.randn(v.shape) * 0.3)
            elif k.endswith("running_var"):
                v.copy_(torch.rand(v.shape) + 0.5)
    t.eval()
    path = tmp_path / "torch_state.npz"
    np.savez(path, **{k: v.numpy() for k, v in t.state_dict().items()})
    j = load_checkpoint(path, make_net(RECIPE, jax.random.PRNGKey(5)))
    x = np.asarray(X)
    with torch.no_grad():
        want = t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(_logits(j, X), want, rtol=1e-4, atol=1e-4)


def _bad_files(tmp_path, trained):
    """name -> (path, message fragment)."""
    good_npz, good_mp = tmp_path / "good.npz", tmp_path / "good.msgpack"
    save_checkpoint(trained, good_npz)
    save_checkpoint(trained, good_mp)
    arrays = _arrays(trained)
    cases = {}

    def put(name, data, fragment, suffix=".npz"):
        p = tmp_path / f"{name}{suffix}"
        p.write_bytes(data)
        cases[name] = (p, fragment)

    put("empty", b"", "empty")
    put("truncated_npz", good_npz.read_bytes()[:300], "truncated or corrupt")
    put("truncated_msgpack", good_mp.read_bytes()[:300], "truncated", ".msgpack")
    put("text_file", b"hello, not a checkpoint\n", "neither an .npz nor a msgpack", ".msgpack")
    put("msgpack_named_npz", good_mp.read_bytes(), "", ".npz")  # loads: format read from bytes
    p = tmp_path / "missing_key.npz"
    np.savez(p, **{k: v for k, v in arrays.items() if k != "3.norm2.running_var"})
    cases["missing_key"] = (p, "lacks 1")
    p = tmp_path / "extra_key.npz"
    np.savez(p, **arrays, **{"9.weight": np.zeros(3)})
    cases["extra_key"] = (p, "has 1")
    wide = make_net(get_recipe(RECIPE, widths=(8, 16, 32)), jax.random.PRNGKey(0))
    p = tmp_path / "other_width.npz"
    save_checkpoint(wide, p)
    cases["other_width_npz"] = (p, "another width")
    p = tmp_path / "other_width.msgpack"
    save_checkpoint(wide, p)
    cases["other_width_msgpack"] = (p, "another width")
    p = tmp_path / "object_array.npz"
    np.savez(p, **{**arrays, "7.weight": np.array([{"evil": 1}], dtype=object)})
    cases["pickled_object"] = (p, "corrupt")
    p = tmp_path / "norm_scale.npz"
    np.savez(p, **{**arrays, "4.norm3.weight": arrays["4.norm3.weight"] * 2})
    cases["norm_scale_not_one"] = (p, "all ones")
    p = tmp_path / "dataset.npz"
    np.savez(p, images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2))
    cases["a_dataset_npz"] = (p, "lacks")
    p = tmp_path / "zip.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "a zip, not an npz")
    cases["plain_zip"] = (p, "")
    cases["directory"] = (tmp_path, "directory")
    cases["missing_file"] = (tmp_path / "nope.npz", "cannot read")
    return cases


def test_bad_checkpoints_are_one_line_errors_and_leave_the_net_alone(tmp_path, trained):
    cases = _bad_files(tmp_path, trained)
    for name, (path, fragment) in cases.items():
        target = make_net(RECIPE, jax.random.PRNGKey(7))
        before = _arrays(target)
        if name == "msgpack_named_npz":
            load_checkpoint(path, target)  # the format is read from the bytes, not the name
            np.testing.assert_array_equal(_arrays(target)["7.weight"], _arrays(trained)["7.weight"])
            continue
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, target)
        msg = str(info.value)
        assert isinstance(info.value, UsageError) and "\n" not in msg, (name, msg)
        assert fragment in msg, (name, msg)
        after = _arrays(target)  # all or nothing: the caller's net is as it was
        for k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=f"{name}: {k}")
