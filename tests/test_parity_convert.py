"""The weight conversion the workloads' trainers use (airbench_torch.convert, airbench_jax.convert
behind airbench_jax.workload's strict loader): torch state dict <-> Flax NNX net, exact both ways,
for every recipe's net and for upstream airbench's own state-dict layout; and parity.numerics.convert's
independent map agreeing with it."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("flax")

from airbench_common import get_recipe, recipe_names  # noqa: E402
from airbench_jax.workload import load_net_arrays, net_arrays  # noqa: E402
from airbench_torch.convert import load_arrays, to_arrays  # noqa: E402
from parity.numerics import convert  # noqa: E402
from parity.numerics.inputs import scaled_recipe  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "upstream_state_dicts.json"


def _nets(name, scale=1 / 16, impl="matmul"):
    from airbench_jax import make_net
    from airbench_torch.net import net_for_recipe
    r = scaled_recipe(name, scale)
    torch.manual_seed(0)
    t = net_for_recipe(r)
    with torch.no_grad():  # non-trivial BatchNorm state, so that every tensor is exercised
        for k, v in t.state_dict().items():
            if k.endswith(("running_mean", "running_var")) or (".norm" in k and k.endswith(".bias")):
                v.copy_(torch.rand(v.shape) + 0.5)
            elif k.endswith("num_batches_tracked"):
                v.fill_(11)
    return r, t, make_net(r, 1, conv_impl=impl)


@pytest.mark.parametrize("name", recipe_names())
def test_roundtrip_is_bitwise(name):
    r, t, j = _nets(name)
    before = to_arrays(t)
    load_net_arrays(j, to_arrays(t))
    # the JAX net now holds exactly the torch values
    assert convert.bitwise_equal(before, net_arrays(j)) == []
    # and back into a zeroed torch net
    with torch.no_grad():
        for v in t.state_dict().values():
            v.zero_()
    load_arrays(net_arrays(j), t)
    assert convert.bitwise_equal(before, to_arrays(t)) == []
    # layouts: OIHW <-> HWIO, (out, in) <-> (in, out)
    np.testing.assert_array_equal(np.asarray(j.group1.conv1.kernel[...]),
                                  before["2.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(j.head[...]), before["7.weight"].T)
    assert int(j.group2.norm1.num_batches_tracked[...]) == 11


def test_local_map_agrees_with_airbench_jax_convert():
    from airbench_jax import convert as jconv
    for name in ("airbench94_muon", "airbench96"):
        _, t, j = _nets(name)
        convert.local_from_torch_arrays(j, to_arrays(t))
        a = convert.local_to_torch_arrays(j)
        b = {k: np.asarray(v) for k, v in jconv.to_torch_arrays(j).items()}
        assert convert.bitwise_equal(a, b) == []


def test_strict_keys_and_frozen_norm_weight():
    _, t, j = _nets("airbench94")
    arrays = to_arrays(t)
    bad = dict(arrays)
    bad["2.norm1.weight"] = bad["2.norm1.weight"] * 2
    with pytest.raises(ValueError, match="norm1.weight"):
        load_net_arrays(j, bad)
    _, t3, _ = _nets("airbench96")
    with pytest.raises(KeyError):  # a depth-3 state dict does not fit a depth-2 net
        load_net_arrays(j, to_arrays(t3))
    with pytest.raises(ValueError, match="shape"):
        load_net_arrays(_nets("airbench94", 1 / 8)[2], arrays)


@pytest.mark.parametrize("net", ["make_net94", "make_net96"])
def test_upstream_state_dict_converts(net):
    """A state dict with upstream airbench 0.1.8's keys, shapes and dtypes (float16 weights) loads
    into the Flax net exactly and comes back bit-identical in upstream's dtypes."""
    spec = json.loads(FIXTURE.read_text())["nets"][net]
    rng = np.random.default_rng(0)
    sd = {}
    for k, (shape, dtype) in spec.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(3, dtype=torch.int64)
        elif ".norm" in k and k.endswith(".weight"):
            sd[k] = torch.ones(shape, dtype=getattr(torch, dtype))
        else:
            sd[k] = torch.from_numpy(rng.standard_normal(shape).astype(dtype))
    recipe = "airbench96" if net == "make_net96" else "airbench94"
    from airbench_jax import make_net
    arrays = to_arrays(sd)
    widths = tuple(int(arrays[f"{i}.conv1.weight"].shape[0]) for i in (2, 3, 4))
    depth = 3 if "2.conv3.weight" in arrays else 2
    assert depth == (3 if net == "make_net96" else 2)
    j = make_net(get_recipe(recipe, widths=widths, depth=depth), 0, conv_impl="matmul")
    load_net_arrays(j, arrays)
    back = net_arrays(j)
    for k, v in sd.items():
        got = back[k].astype(str(v.dtype).replace("torch.", ""))
        assert got.tobytes() == v.numpy().tobytes(), k
