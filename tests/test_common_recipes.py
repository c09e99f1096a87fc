"""The recipe table: upstream's published hyper-parameters, schedules at chosen steps, validation of overrides."""
import math

import numpy as np
import pytest

from airbench_common import RECIPES, RecipeError, get_recipe, lookahead_decays, lr_schedules, param_groups
from airbench_common.recipes import Recipe, parse_overrides

N = 50000


def test_every_design_recipe_is_present():
    assert set(RECIPES) == {"airbench94_muon", "airbench94", "airbench93", "airbench95",
                            "airbench96", "airbench96_faster"}


@pytest.mark.parametrize("name,widths,depth,epochs,batch", [
    ("airbench94_muon", (64, 256, 256), 2, 8, 2000), ("airbench94", (64, 256, 256), 2, 9.9, 1024),
    ("airbench93", (64, 128, 128), 2, 11, 1024), ("airbench95", (128, 384, 384), 2, 15, 1024),
    ("airbench96", (128, 384, 512), 3, 37, 1024), ("airbench96_faster", (128, 384, 512), 3, 45, 1024)])
def test_table_matches_design(name, widths, depth, epochs, batch):
    r = get_recipe(name)
    assert (r.widths, r.depth, r.epochs, r.batch_size) == (widths, depth, epochs, batch)


def test_step_counts():
    assert get_recipe("airbench94_muon").total_steps(N) == 200
    assert get_recipe("airbench94_muon").whiten_bias_steps(N) == 75
    assert get_recipe("airbench94").total_steps(N) == math.ceil(48 * 9.9) == 476
    assert get_recipe("airbench94").whiten_bias_steps(N) == 144


def test_triangle_schedule_at_chosen_steps():
    s = lr_schedules(get_recipe("airbench94"), N)["main"]
    T = 476
    peak = int(0.23 * T)
    assert s[0] == pytest.approx(0.2) and s[peak] == pytest.approx(1.0) and s[T] == pytest.approx(0.07)
    assert s[peak // 2] == pytest.approx(0.2 + 0.8 * (peak // 2) / peak)
    assert s[peak + 100] == pytest.approx(1 - 0.93 * 100 / (T - peak))


def test_warmup_linear_schedule_of_airbench96():
    r = get_recipe("airbench96")
    T = r.total_steps(N)
    s = lr_schedules(r, N)["main"]
    w = int(0.1 * T)
    assert s[0] == pytest.approx(0.2) and s[w] == pytest.approx(1.0) and s[T] == 0.0
    assert s[w // 2] == pytest.approx(0.2 + 0.8 * (w // 2) / w)
    assert s[w + 10] == pytest.approx((T - w - 10) / (T - w))


def test_muon_schedules_and_groups():
    r = get_recipe("airbench94_muon")
    s = lr_schedules(r, N)
    assert s["main"][0] == 1 and s["main"][100] == pytest.approx(0.5) and s["main"][200] == 0
    assert s["whiten_bias"][0] == 1 and s["whiten_bias"][75] == 0
    groups = {g.name: g for g in param_groups(r, N)}
    assert groups["filters"].kind == "muon" and groups["filters"].lr == 0.24
    assert groups["filters"].momentum == 0.6 and groups["filters"].weight_decay == 0
    assert groups["head"].lr == 0.67 and groups["head"].weight_decay == pytest.approx(2e-6 * 2000 / 0.67)
    assert groups["whiten_bias"].frozen_after == 75 and groups["whiten_bias"].schedule == "whiten_bias"


def test_decoupled_sgd_groups():
    r = get_recipe("airbench94")
    ks = 1024 * (1 + 1 / (1 - 0.85))
    groups = {g.name: g for g in param_groups(r, N)}
    assert groups["other"].lr == pytest.approx(11.5 / ks)
    assert groups["norm_biases"].lr == pytest.approx(64 * 11.5 / ks)
    # the product lr * weight_decay (the per-step decay) is the same for both groups
    for g in groups.values():
        assert g.lr * g.weight_decay == pytest.approx(0.0153 * 1024 / ks)
    assert groups["whiten_bias"].frozen_after == 144 and groups["other"].frozen_after is None


def test_lookahead_decays():
    d = lookahead_decays(get_recipe("airbench94"), N)
    assert d[0] == 0 and d[-1] == pytest.approx(0.95 ** 5)
    assert d[238] == pytest.approx(0.95 ** 5 * (238 / 476) ** 3)


def test_unknown_recipe_lists_choices():
    with pytest.raises(RecipeError, match="airbench94_muon, airbench94"):
        get_recipe("airbench97")


@pytest.mark.parametrize("overrides,match", [
    ({"lr": -1}, "lr=-1.0 must be a positive"), ({"epochs": 0}, "epochs"),
    ({"momentum": 1.0}, r"momentum=1.0 must be in \[0, 1\)"), ({"optimizer": "adam"}, "not one of"),
    ({"nope": 3}, "unknown hyper-parameter 'nope'"), ({"epochs": "abc"}, "wrong type"),
    ({"widths": (1, 2)}, "three positive"), ({"lr": float("nan")}, "finite"),
    ({"filter_keep": 4096}, "smaller than batch_size")])
def test_invalid_overrides_are_rejected(overrides, match):
    with pytest.raises(RecipeError, match=match):
        get_recipe("airbench94", **overrides)


def test_cli_style_overrides_are_coerced():
    r = get_recipe("airbench94", **parse_overrides(["epochs=2", "widths=16,32,32", "lookahead=false"]))
    assert r.epochs == 2.0 and r.widths == (16, 32, 32) and r.lookahead is False
    assert get_recipe("airbench94_muon").head_scale == 1 / 256
    with pytest.raises(RecipeError, match="key=value"):
        parse_overrides(["epochs"])


def test_batch_larger_than_data_is_an_error():
    with pytest.raises(RecipeError, match="larger than"):
        get_recipe("airbench94").steps_per_epoch(500)


def test_schedule_lengths_and_warmup_linear_with_an_end_value():
    for name in ("airbench94", "airbench94_muon", "airbench96"):
        r = get_recipe(name)
        T = r.total_steps(N)
        for s in lr_schedules(r, N).values():
            assert len(s) == T + 1 and s.dtype == np.float64
        assert len(lookahead_decays(r, N)) == T + 1
    r = get_recipe("airbench96", lr_end=0.1)
    T = r.total_steps(N)
    w = int(0.1 * T)
    s = lr_schedules(r, N)["main"]
    assert s[T] == pytest.approx(0.1) and s[w] == pytest.approx(1.0)
    assert s[0] == pytest.approx(0.2 * 0.9 + 0.1)
    assert s[w + 10] == pytest.approx((T - w - 10) / (T - w) * 0.9 + 0.1)


def test_override_spellings_and_edges():
    for text in ("none", "None", "1/width", "1/WIDTH"):
        assert get_recipe("airbench94", scaling_factor=text).scaling_factor is None
    assert get_recipe("airbench94", scaling_factor=None).head_scale == 1 / 256
    assert get_recipe("airbench94", scaling_factor="0.5").scaling_factor == 0.5
    assert get_recipe("airbench94", batch_size="32.0").batch_size == 32
    assert get_recipe("airbench94", widths="[8, 16, 16]").widths == (8, 16, 16)
    assert get_recipe("airbench94", flip=0).flip is False and get_recipe("airbench94", flip=1).flip
    assert get_recipe("airbench94", flip="TRUE").flip is True
    with pytest.raises(RecipeError, match="filter_keep=16 must be smaller than batch_size=16"):
        get_recipe("airbench94", batch_size=16, filter_keep=16)
    assert get_recipe("airbench94", batch_size=16, filter_keep=15).filter_keep == 15
    with pytest.raises(RecipeError, match=r"recipe airbench94: widths=\(4, 8, 8\.5\) must be"):
        get_recipe(dataclasses_replace(get_recipe("airbench94"), widths=(4, 8, 8.5)))
    with pytest.raises(RecipeError) as e:
        parse_overrides(["lr=1", "lr= 2"])
    assert str(e.value) == "override 'lr' is given twice (lr=1, lr=2); give each key once"


def dataclasses_replace(r, **kw):
    import dataclasses
    return dataclasses.replace(r, **kw)


def test_field_types_follow_their_annotations():
    """The override type of a field is its default's type: a float field with an int default
    (whiten_bias_epochs = 3 once) would refuse fractional values such as 0.5 epochs."""
    import dataclasses
    from airbench_common.recipes import Recipe
    bad = [f.name for f in dataclasses.fields(Recipe)
           if "float" in str(f.type) and type(f.default) is int]
    assert bad == []
    assert get_recipe("airbench94", whiten_bias_epochs="0.5").whiten_bias_epochs == 0.5


def test_string_fields_read_the_same_from_python_and_the_command_line():
    """Found by hypothesis: notes=' ' was kept as ' ' from Python but read back as '' from the
    CLI spelling (parse_overrides strips); both now strip."""
    assert get_recipe("airbench93", notes=" ").notes == ""
    assert get_recipe("airbench93", **parse_overrides(["notes= "])).notes == ""


def test_recipe_names_lists_the_table():
    from airbench_common.recipes import recipe_names
    assert recipe_names() == list(RECIPES) and len(recipe_names()) >= 3


def test_warmup_linear_schedule_with_lr_end_one_is_flat():
    # lr_end = 1: the schedule rescaled into [lr_end, 1] is constant 1 (mutmut: `lr_end == 0` ->
    # `== 1` kept the unscaled decay to 0)
    name = next(n for n, r in RECIPES.items() if r.schedule == "warmup_linear")
    r = get_recipe(name, lr_end=1.0)
    main = lr_schedules(r, 2000)["main"]
    np.testing.assert_allclose(main, 1.0)
    half = lr_schedules(get_recipe(name, lr_end=0.5), 2000)["main"]
    assert half[-1] == pytest.approx(0.5) and half.max() == pytest.approx(1.0)


def test_loader_aug_is_upstreams_aug_dict():
    """What each recipe's CifarLoader augments with (upstream's hyp['aug']); absent keys are off."""
    assert RECIPES["airbench94"].loader_aug() == {"flip": True, "translate": 2}
    assert RECIPES["airbench96"].loader_aug() == {"flip": True, "translate": 4, "cutout": 12}
    assert get_recipe("airbench94", flip=False, translate=0).loader_aug() == {}
    assert get_recipe("airbench94", flip=False, translate=0, cutout=8).loader_aug() == {"cutout": 8}


def test_to_dict_holds_every_field():
    r = RECIPES["airbench96"]
    d = r.to_dict()
    assert d["name"] == "airbench96" and d["cutout"] == 12 and d["widths"] == r.widths
    assert Recipe(**d) == r


def test_warmup_linear_without_a_warmup_step_starts_at_full_rate():
    """Upstream's legacy get_lr(): warm-up over int(0.1*T) steps; when that is 0 (a run of fewer
    than 10 steps) step 0 is already on the linear decay, at 1.0, not at lr_start."""
    r = get_recipe("airbench96", epochs=1)
    total = r.total_steps(5 * r.batch_size)
    assert total == 5 and int(total * r.warmup_frac) == 0
    np.testing.assert_allclose(lr_schedules(r, 5 * r.batch_size)["main"],
                               [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def test_param_groups_are_upstreams_optimizer_settings():
    """Every group's optimizer, lr, weight decay, momentum and schedule, as upstream's scripts set
    them (airbench94.py: SGD(nesterov, momentum 0.85), lr 11.5 and weight decay 0.0153 per 1024
    examples scaled by kilostep_scale = 1024 * (1 + 1 / (1 - 0.85)), biases at 64x the lr;
    airbench94_muon.py: SGD for the biases (0.053) and head (0.67) with wd = 2e-6 * batch,
    Muon(lr 0.24, momentum 0.6) for the filters); the whitening bias trains 3 epochs."""
    import dataclasses
    from airbench_common.schedules import ParamGroup as G

    def fields(groups):      # numbers to 1e-12 relative: the same formula, rounded differently
        return [tuple(pytest.approx(v, rel=1e-12) if isinstance(v, float) else v
                      for v in dataclasses.astuple(g)) for g in groups]

    lr = 1.5 / 1024                         # 11.5 / (1024 * 23 / 3)
    wd = 0.0153 * 3 / 23                    # 0.0153 * 1024 / (1024 * 23 / 3)
    assert fields(param_groups(get_recipe("airbench94"), 50000)) == fields([
        G("whiten_bias", "sgd", lr, wd / lr, 0.85, "main", frozen_after=3 * 48),
        G("norm_biases", "sgd", 64 * lr, wd / (64 * lr), 0.85, "main"),
        G("other", "sgd", lr, wd / lr, 0.85, "main")])
    wd = 2e-6 * 2000
    assert fields(param_groups(get_recipe("airbench94_muon"), 50000)) == fields([
        G("whiten_bias", "sgd", 0.053, wd / 0.053, 0.85, "whiten_bias", frozen_after=75),
        G("norm_biases", "sgd", 0.053, wd / 0.053, 0.85, "main"),
        G("head", "sgd", 0.67, wd / 0.67, 0.85, "main"),
        G("filters", "muon", 0.24, 0.0, 0.6, "main")])
    # the proxy net's whitening bias never trains
    assert [g.frozen_after for g in param_groups(get_recipe("airbench94"), 50000, proxy=True)] \
        == [0, None, None]


def test_an_override_the_optimizer_never_reads_is_refused_in_full():
    """Both directions, message as users read it; setting such a key to the recipe's own value
    changes nothing and is allowed."""
    with pytest.raises(RecipeError) as e:
        get_recipe("airbench94", muon_lr=0.5)
    assert str(e.value) == ("muon_lr=0.5 would be ignored: airbench94 uses the sgd optimizer, which "
                            "does not read muon_lr; its learning-rate settings are lr, bias_scaler, "
                            "lr_start, lr_end, warmup_frac, schedule")
    with pytest.raises(RecipeError) as e:
        get_recipe("airbench94_muon", lr=1e6)
    assert str(e.value) == ("lr=1000000.0 would be ignored: airbench94_muon uses the muon optimizer, "
                            "which does not read lr; its learning-rate settings are bias_lr, "
                            "head_lr, muon_lr, muon_momentum, muon_ns_steps, muon_eps")
    assert get_recipe("airbench94_muon", lr=11.5) == get_recipe("airbench94_muon")


def test_a_recipe_object_is_validated_field_by_field():
    """get_recipe(Recipe) checks types (a bool is not a number) and ranges, past a None
    scaling_factor (which means 1/widths[2])."""
    import dataclasses
    base = get_recipe("airbench94")
    for change, msg in [
            (dict(depth=True), "depth=True has the wrong type (expected int)"),
            (dict(lr=True), "lr=True has the wrong type (expected float)"),
            (dict(lr="1"), "lr='1' has the wrong type (expected float)"),
            (dict(scaling_factor=None, tta_level=1.5), "tta_level=1.5 has the wrong type "
                                                        "(expected int)"),
            (dict(scaling_factor=None, batch_size=0), "batch_size=0 must be a finite number "
                                                       ">= 1")]:
        with pytest.raises(RecipeError) as e:
            get_recipe(dataclasses.replace(base, **change))
        assert str(e.value) == "recipe airbench94: " + msg


def test_override_and_name_messages_in_full():
    """What users read for a bool given as a number, stray characters around widths, a
    hyper-parameter that does not exist (every valid name listed), a None field in a Recipe
    object, an unknown parameter name and an unknown optimizer kind."""
    import dataclasses
    from airbench_common.errors import UsageError
    from airbench_common.params import group_of, role
    from airbench_common.recipes import _TYPES
    cases = [
        (lambda: get_recipe("airbench94", lr=True),
         "override lr=True has the wrong type: expected a number"),
        (lambda: get_recipe("airbench94", widths="X64,64,64X"),
         "override widths='X64,64,64X' has the wrong type: expected three integers like "
         "64,256,256"),
        (lambda: get_recipe("airbench94", nope=1),
         "unknown hyper-parameter 'nope' for airbench94; valid: " + ", ".join(_TYPES)),
        (lambda: get_recipe(dataclasses.replace(get_recipe("airbench94"), lr=None)),
         "recipe airbench94: lr=None has the wrong type (expected float)"),
        (lambda: role("nonsense"),
         "parameter 'nonsense' is not an airbench CifarNet parameter; expected a name like "
         "'0.bias', '2.conv1.weight', '3.norm2.bias' or '7.weight'"),
        (lambda: group_of("0.bias", "adam"), "optimizer 'adam' is not one of ['muon', 'sgd']")]
    for call, msg in cases:
        with pytest.raises(UsageError) as e:
            call()
        assert str(e.value) == msg
    assert ", ".join(_TYPES).startswith("widths, depth, scaling_factor, ")
