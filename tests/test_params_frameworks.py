"""Both implementations group their parameters through airbench_common.params' one table."""
import pytest

from airbench_common import get_recipe, param_groups


@pytest.mark.parametrize("name", ["airbench94", "airbench94_muon", "airbench96"])
def test_both_implementations_group_the_same_parameters(name):
    """JAX's optax labels and torch's optimizer groups hold the same upstream names."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from flax import nnx
    import jax
    from airbench_jax import make_net as jax_make_net
    from airbench_jax.convert import upstream_name
    from airbench_jax.optim import labels_for
    from airbench_torch.net import net_for_recipe
    from airbench_torch.optim import group_params
    r = get_recipe(name, widths=(4, 8, 8))
    _, params, _ = nnx.split(jax_make_net(r, 0), nnx.Param, ...)
    labels = labels_for(nnx.to_pure_dict(params), r)
    jax_groups = {}
    for path, label in jax.tree_util.tree_leaves_with_path(labels):
        jax_groups.setdefault(label, set()).add(upstream_name(path))
    tnet = net_for_recipe(r)
    names = {id(p): k for k, p in tnet.named_parameters()}
    torch_groups = {g.name: {names[id(p)] for p in group_params(tnet, g.name)}
                    for g in param_groups(r, 50000)}
    assert jax_groups == torch_groups
    assert set().union(*torch_groups.values()) == {k for k, p in tnet.named_parameters()
                                                  if p.requires_grad}
