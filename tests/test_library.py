"""airbench_common.library: upstream's train9x / warmup9x built once over a framework's `train`,
upstream's train9x argument names, and CifarLoader's upstream arguments checked and settled.
Framework-neutral (a recording `train` stands in for a framework's), plus one check per
framework that its module-level names are bound to the right functions."""
import inspect

import pytest

from airbench_common import library as L
from airbench_common.errors import UsageError
from airbench_common.recipes import RecipeError

UPSTREAM_TRAIN = ["train_loader", "epochs", "label_smoothing", "learning_rate", "bias_scaler",
                  "momentum", "weight_decay", "whiten_bias_epochs", "tta_level", "make_net", "run",
                  "verbose", "extra"]


def recording_train():
    calls = []

    def train(recipe, loader=None, *, make_net=None, run=0, verbose=True, **overrides):
        calls.append((recipe, loader, dict(make_net=make_net, run=run, verbose=verbose,
                                           **overrides)))
        return "net"
    return train, calls


def test_trainers_call_train_with_the_recipe_and_its_fields():
    train, calls = recording_train()
    api = L.upstream_api(train)
    assert api.train94("loader", epochs=5, learning_rate=0.1, seed=3) == "net"
    assert calls[-1] == ("airbench94", "loader", dict(make_net=None, run=0, verbose=True,
                                                      epochs=5, lr=0.1, seed=3))
    api.train96_faster(None, 2, verbose=False, run=4, whiten_bias_epochs=1)
    assert calls[-1] == ("airbench96_faster", None, dict(make_net=None, run=4, verbose=False,
                                                         epochs=2, whiten_bias_epochs=1))
    # a recipe field given twice (upstream's name and the field's) is refused, not one dropped
    with pytest.raises(TypeError, match="lr"):
        api.train93("loader", learning_rate=0.1, lr=0.2)


def test_warmups_take_one_step_of_their_trainer():
    train, calls = recording_train()
    api = L.upstream_api(train)
    api.warmup95("loader", epochs=1)
    assert calls[-1] == ("airbench95", "loader", dict(make_net=None, run=-1, verbose=True,
                                                      epochs=1))
    with pytest.raises(TypeError, match="run"):
        api.warmup93("loader", run=2)


def test_built_functions_are_named_as_their_module_level_names():
    train, _ = recording_train()
    api = L.upstream_api(train)
    for name, fn in api._asdict().items():
        assert fn.__name__ == fn.__qualname__ == name
        assert fn.__module__ == train.__module__
        if name.startswith("train"):
            params = list(inspect.signature(fn).parameters)
            assert params == UPSTREAM_TRAIN, name
            assert repr("airbench" + name[len("train"):]) in fn.__doc__
        else:
            assert str(inspect.signature(fn)) == "(*args, **kwargs)" and fn.__doc__ is None


@pytest.mark.parametrize("package, module", [("airbench_jax", "airbench_jax.lib"),
                                             ("airbench_torch", "airbench_torch.api")])
def test_each_framework_binds_each_name_to_its_function(package, module):
    m = pytest.importorskip(package)
    for name in L.UpstreamAPI._fields:
        fn = getattr(m, name)
        assert (fn.__name__, fn.__module__) == (name, module)


def test_upstream_train_overrides_name_the_argument_as_upstream_spells_it():
    assert L.upstream_train_overrides("airbench94", epochs=3, learning_rate=None) == {"epochs": 3}
    assert L.upstream_train_overrides("airbench94", learning_rate=2.0) == {"lr": 2.0}
    with pytest.raises(RecipeError, match=r"^learning_rate=-1 \(the recipe's lr\)"):
        L.upstream_train_overrides("airbench94", learning_rate=-1)
    with pytest.raises(RecipeError, match="epochs"):
        L.upstream_train_overrides("airbench94", epochs=-1)


class Loader:
    """A stand-in for a framework's loader: settle only sets attributes."""


def _args(**kw):
    args = dict(path=None, train=True, batch_size=500, aug=None, drop_last=None, shuffle=None,
                altflip=False, seed=None)
    args.update(kw)
    return args


@pytest.mark.parametrize("train", [True, False])
def test_loader_defaults_follow_train(train):
    s = L.check_loader_args(**_args(train=train, aug=dict(flip=True), seed=7))
    assert (s.drop_last, s.shuffle, s.aug, s.seed) == (train, train, {"flip": True}, 7)
    s = L.check_loader_args(**_args(train=train, drop_last=not train, shuffle=not train))
    assert (s.drop_last, s.shuffle) == (not train, not train)


def test_settle_draws_a_seed_only_when_none_was_given():
    draws = []

    def draw():
        draws.append(1)
        return 12345
    given, drawn = Loader(), Loader()
    L.check_loader_args(**_args(seed=3, batch_size=16)).settle(given, draw)
    assert draws == [] and given.seed == 3 and given.batch_size == 16
    L.check_loader_args(**_args(train=False, altflip=True)).settle(drawn, draw)
    assert draws == [1] and drawn.seed == 12345
    assert vars(drawn) == dict(aug={}, batch_size=500, drop_last=False, shuffle=False,
                               altflip=True, seed=12345)


@pytest.mark.parametrize("bad, first", [
    (dict(path=5, train="yes"), "path 5"),
    (dict(train="yes", batch_size=0), "train 'yes'"),
    (dict(batch_size=0, aug=3), "batch_size 0"),
    (dict(aug=3, drop_last=1), "aug 3"),
    (dict(shuffle=1, altflip=1), "shuffle 1"),
    (dict(altflip=1, channels_last=1), "altflip 1"),
    (dict(channels_last=1, seed=-1), "channels_last 1"),
    (dict(seed=-1), "seed -1"),
])
def test_loader_arguments_are_checked_in_order(bad, first):
    flags = (("channels_last", bad.pop("channels_last", None)),)
    with pytest.raises(UsageError) as exc:
        L.check_loader_args(**_args(**bad), flags=flags)
    assert str(exc.value).startswith(first), str(exc.value)


def test_train_args_take_the_loaders_batch_size_unless_overridden():
    loader = Loader()
    loader.batch_size = 64
    check = dict(loader_type=Loader, loader_name="a Loader")
    r, seed = L.check_train_args("airbench94", loader, None, None, 5, {}, **check)
    assert (r.batch_size, seed) == (64, 5)
    r, seed = L.check_train_args("airbench94", loader, None, None, None, {"batch_size": 32},
                                 **check)
    assert (r.batch_size, seed) == (32, None)
    with pytest.raises(UsageError, match=r"^test_loader 3 \(int\) is not a Loader or None"):
        L.check_train_args("airbench94", loader, 3, None, None, {}, **check)
