"""The Workload interface (airbench_common.workload) on both frameworks: an option a workload
does not take is a one-line error, never dropped; trainers built from the same upstream-named
arrays hold them bitwise, and agree on a forward pass and an optimizer step."""
import numpy as np
import pytest

from airbench_common import get_recipe
from airbench_common.validate import OptionError
from airbench_common.workload import RunOptions, get_workload

RECIPE = get_recipe("airbench94_muon", widths=(8, 16, 16), batch_size=16)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
    return x, rng.integers(0, 10, 16).astype(np.int64)


def test_unknown_framework_is_one_line():
    with pytest.raises(OptionError, match="unknown framework 'mxnet'; choose from jax, torch"):
        get_workload("mxnet")


@pytest.mark.parametrize("fw,other", [("jax", "compile"), ("torch", "conv_impl")])
def test_an_option_of_the_other_framework_is_refused_not_dropped(fw, other):
    wl = get_workload(fw)
    with pytest.raises(OptionError, match=f"the {fw} workload does not take {other}"):
        wl.check(RunOptions(extra={other: True}))
    with pytest.raises(OptionError, match=other):
        wl.from_init(RECIPE, 64, np.zeros((64, 32, 32, 3), np.float32), **{other: True})


def test_trainers_hold_the_same_arrays_and_agree(batch):
    x, y = batch
    torch_wl, jax_wl = get_workload("torch"), get_workload("jax")
    t = torch_wl.from_init(RECIPE, 64, x, seed=1)
    arrays = t.arrays()
    j = jax_wl.from_arrays(RECIPE, 64, arrays)
    back = j.arrays()
    assert set(back) == set(arrays)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
    tf, jf = t.forward(x, y, train=True), j.forward(x, y, train=True)
    assert set(tf["grads"]) <= set(jf["grads"])        # JAX also reports the buffers' (zero)
    assert not any(np.any(jf["grads"][k]) for k in set(jf["grads"]) - set(tf["grads"]))
    for k in tf["grads"]:
        np.testing.assert_allclose(jf["grads"][k], tf["grads"][k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(jf["logits"], tf["logits"], rtol=1e-4, atol=1e-4)
    t2 = torch_wl.from_arrays(RECIPE, 64, arrays)
    np.testing.assert_allclose(j.step(x, y), t2.step(x, y), rtol=1e-4)
    assert not np.array_equal(j.arrays()["7.weight"], arrays["7.weight"])   # it moved
    np.testing.assert_allclose(j.arrays()["7.weight"], t2.arrays()["7.weight"], atol=1e-4)
