"""airbench_common.params: the one table of which parameter is in which optimizer group, by
upstream state-dict name. (Both implementations grouping through it: tests/test_params_frameworks.py,
kept out of this framework-free file: mutmut forks its workers after running these tests, and a
fork after JAX has started its threads can deadlock.)"""
import json
from pathlib import Path

import numpy as np
import pytest

from airbench_common import get_recipe, lr_schedules, param_groups, recipe_names
from airbench_common.errors import UsageError
from airbench_common.params import group_lr, group_names, group_of

UPSTREAM = json.loads((Path(__file__).parent / "fixtures" / "upstream_state_dicts.json")
                      .read_text())["nets"]


@pytest.mark.parametrize("net", ["make_net93", "make_net94", "make_net95", "make_net96"])
def test_upstream_trainable_parameters_are_exactly_the_grouped_ones(net):
    """Upstream's requires_grad flags (recorded from airbench 0.1.8) say which parameters train:
    exactly those get a group, for both optimizer kinds."""
    trains = UPSTREAM[f"{net}_requires_grad"]
    for opt in ("sgd", "muon"):
        for name, req in trains.items():
            assert (group_of(name, opt) is not None) == req, (net, name, opt)


def test_groups_by_name():
    assert group_of("0.bias", "sgd") == group_of("0.bias", "muon") == "whiten_bias"
    assert group_of("3.norm2.bias", "muon") == "norm_biases"
    assert group_of("4.conv3.weight", "muon") == "filters"
    assert group_of("4.conv3.weight", "sgd") == group_of("7.weight", "sgd") == "other"
    assert group_of("7.weight", "muon") == "head"
    assert group_of("0.weight", "muon") is None and group_of("2.norm1.weight", "sgd") is None
    for bad in ("8.weight", "2.conv1.bias", "head", "2.norm1.running_mean"):
        with pytest.raises(UsageError):
            group_of(bad, "sgd")
    with pytest.raises(UsageError):
        group_of("0.bias", "adam")


@pytest.mark.parametrize("name", recipe_names())
def test_param_groups_names_come_from_the_table(name):
    r = get_recipe(name)
    assert tuple(g.name for g in param_groups(r, 50000)) == group_names(r.optimizer)


def test_group_lr_is_zero_exactly_when_frozen():
    r = get_recipe("airbench94_muon")
    groups = {g.name: g for g in param_groups(r, 50000)}
    sched = lr_schedules(r, 50000)
    wb = groups["whiten_bias"]
    steps = np.arange(r.total_steps(50000))
    lrs = group_lr(wb, sched, steps)
    assert np.all(lrs[:wb.frozen_after] > 0) and np.all(lrs[wb.frozen_after:] == 0)
    assert group_lr(wb, sched, 3) == pytest.approx(wb.lr * sched["whiten_bias"][3])
    head = groups["head"]
    np.testing.assert_allclose(group_lr(head, sched, steps), head.lr * sched["main"][steps])
    proxy = {g.name: g for g in param_groups(r, 50000, proxy=True)}
    assert np.all(group_lr(proxy["whiten_bias"], sched, steps) == 0)
