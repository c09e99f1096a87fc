"""The library API checks its arguments as the command line checks the same values: every bad
argument of a public function of airbench_jax and airbench_torch is a UsageError subclass with a
one-line message naming the value, raised before any work (the checks live once, in
airbench_common.validate, airbench_common.library and airbench_common.data.check_arrays)."""
import math

import numpy as np
import pytest

from airbench_common import library as L
from airbench_common import validate as V
from airbench_common.data import DatasetError
from airbench_common.errors import UsageError
from airbench_common.recipes import RecipeError
from test_api_calls import Side as CallsSide

N = 64
WIDTHS = dict(block1=4, block2=8, block3=8)
RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
Y = RNG.integers(0, 10, N)


class Side(CallsSide):
    """test_api_calls' framework side (its package and keyword spellings), with this file's
    loader and net."""

    def loader(self, **kw):
        args = dict(data=(X, Y), batch_size=16, seed=0, **self.kw)
        args.update(kw)
        return self.m.CifarLoader(**args)

    def net(self):
        return self.m.make_net94(widths=WIDTHS, **self.kw)


@pytest.fixture(params=["jax", "torch"])
def side(request):
    return Side(request.param)


def _raises(cls, fragment, fn):
    """fn() raises `cls` (a UsageError) with a one-line message containing `fragment`."""
    with pytest.raises(cls) as info:
        fn()
    msg = str(info.value)
    assert isinstance(info.value, UsageError), type(info.value)
    assert "\n" not in msg and msg.strip() == msg, msg
    assert fragment in msg, msg
    return msg


# ----------------------------------------------------------------------------- CifarLoader
LOADER_CASES = {
    "batch_size 0": (dict(batch_size=0), V.OptionError, "batch_size 0"),
    "batch_size 2.5": (dict(batch_size=2.5), V.OptionError, "batch_size 2.5"),
    "batch_size bool": (dict(batch_size=True), V.OptionError, "batch_size True"),
    "aug key": (dict(aug=dict(blur=1)), V.OptionError, "'blur'"),
    "aug translate": (dict(aug=dict(translate=-1)), V.OptionError, "translate=-1"),
    "aug cutout": (dict(aug=dict(cutout=40)), V.OptionError, "cutout=40"),
    "aug flip": (dict(aug=dict(flip="yes")), V.OptionError, "flip='yes'"),
    "aug not dict": (dict(aug=[1]), V.OptionError, "aug [1]"),
    "seed negative": (dict(seed=-1), V.OptionError, "seed -1"),
    "seed bool": (dict(seed=True), V.OptionError, "seed True"),
    "seed float": (dict(seed=1.5), V.OptionError, "seed 1.5"),
    "seed too large": (dict(seed=2 ** 32), V.OptionError, f"seed {2 ** 32}"),
    "shuffle": (dict(shuffle="no"), V.OptionError, "shuffle 'no'"),
    "drop_last": (dict(drop_last=2), V.OptionError, "drop_last 2"),
    "altflip": (dict(altflip="x"), V.OptionError, "altflip 'x'"),
    "gpu": (dict(gpu=-1), V.OptionError, "gpu -1"),
    "images float": (dict(data=(X.astype(np.float32), Y)), DatasetError, "dtype float32"),
    "images shape": (dict(data=(X[:, :16], Y)), DatasetError, "(64, 16, 32, 3)"),
    "images NCHW": (dict(data=(X.transpose(0, 3, 1, 2), Y)), DatasetError, "(64, 3, 32, 32)"),
    "no images": (dict(data=(X[:0], Y[:0])), DatasetError, "0 images"),
    "labels 10": (dict(data=(X, Y + 10)), DatasetError, "labels range 10..19"),
    "labels negative": (dict(data=(X, Y - 10)), DatasetError, "labels range -10..-1"),
    "labels float": (dict(data=(X, Y.astype(np.float32))), DatasetError, "dtype float32"),
    "labels length": (dict(data=(X, Y[:3])), DatasetError, "3 labels"),
    "data not a pair": (dict(data=X), V.OptionError, "not a pair"),
}


@pytest.mark.parametrize("case", sorted(LOADER_CASES))
def test_loader_arguments(side, case):
    kw, cls, fragment = LOADER_CASES[case]
    _raises(cls, fragment, lambda: side.loader(**kw))


def test_loader_path(side, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _raises(V.PathError, str(f), lambda: side.m.CifarLoader(str(f), **side.kw))
    _raises(V.PathError, str(f), lambda: side.m.CifarLoader(str(f / "sub"), **side.kw))
    _raises(V.PathError, "path 5", lambda: side.m.CifarLoader(5, **side.kw))
    _raises(V.PathError, "path is empty", lambda: side.m.CifarLoader("", **side.kw))


def test_torch_loader_takes_tensors_through_the_same_checks():
    torch = pytest.importorskip("torch")
    import airbench_torch as m
    ok = m.CifarLoader(data=(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=16,
                       device="cpu", seed=0)
    assert len(ok.images) == N
    for data, fragment in [((torch.from_numpy(X).float(), torch.from_numpy(Y)), "dtype float32"),
                           ((torch.from_numpy(X), torch.from_numpy(Y) + 10), "labels range"),
                           ((torch.from_numpy(X).permute(0, 3, 1, 2), torch.from_numpy(Y)),
                            "(64, 3, 32, 32)")]:
        _raises(DatasetError, fragment,
                lambda: m.CifarLoader(data=data, batch_size=16, device="cpu"))


def test_good_loader_arguments_still_work(side):
    ld = side.loader(aug=dict(flip=True, translate=2, cutout=0), seed=np.int64(3),
                     batch_size=np.int64(16), shuffle=False, drop_last=False,
                     data=(X, Y.astype(np.uint8)))
    assert len(ld) == N // 16 and ld.seed == 3


# ----------------------------------------------------------------------------- nets
@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("widths, fragment", [
    (dict(block1=4, block2=8), "block1, block2, block3"),
    (dict(block1=4, block2=8, block3=0), "'block3': 0"),
    ((4, 8), "(4, 8)"),
    ((4, 8, 8.5), "8.5"),
    ((4, True, 8), "True"),
    ("4,8,8", "'4,8,8'"),
])
def test_make_net9x_widths(side, n, widths, fragment):
    _raises(V.OptionError, fragment,
            lambda: getattr(side.m, f"make_net9{n}")(widths=widths, **side.kw))


@pytest.mark.parametrize("momentum, fragment", [(2.0, "bn_momentum=2.0"),
                                                (math.nan, "bn_momentum=nan"),
                                                ("x", "bn_momentum='x'")])
def test_make_net9x_batchnorm_momentum(side, momentum, fragment):
    _raises(RecipeError, fragment,
            lambda: side.m.make_net94(widths=WIDTHS, batchnorm_momentum=momentum, **side.kw))


def test_make_net_recipe_name(side):
    _raises(RecipeError, "'nope'", lambda: side.m.make_net("nope"))


def test_jax_net_keys_are_seeds():
    import airbench_jax as m
    _raises(V.OptionError, "key -1", lambda: m.make_net94(widths=WIDTHS, key=-1))
    _raises(V.OptionError, "key 'a'", lambda: m.make_net("airbench94", "a"))


# ----------------------------------------------------------------------------- training
TRAIN_CASES = {
    "epochs": (dict(epochs=-1), RecipeError, "epochs=-1"),
    "epochs nan": (dict(epochs=math.nan), RecipeError, "epochs=nan"),
    "learning_rate": (dict(learning_rate=math.inf), RecipeError, "learning_rate=inf"),
    "label_smoothing": (dict(label_smoothing=1.5), RecipeError, "label_smoothing=1.5"),
    "momentum": (dict(momentum=-0.1), RecipeError, "momentum=-0.1"),
    "weight_decay": (dict(weight_decay="a"), RecipeError, "weight_decay='a'"),
    "bias_scaler": (dict(bias_scaler=0), RecipeError, "bias_scaler=0"),
    "whiten_bias_epochs": (dict(whiten_bias_epochs=-1), RecipeError, "whiten_bias_epochs=-1"),
    "tta_level": (dict(tta_level=3), RecipeError, "tta_level=3"),
    "tta_level bool": (dict(tta_level=True), RecipeError, "tta_level=True"),
    "seed": (dict(seed=-1), V.OptionError, "seed -1"),
    "seed bool": (dict(seed=False), V.OptionError, "seed False"),
    "seed float": (dict(seed=0.5), V.OptionError, "seed 0.5"),
    "make_net": (dict(make_net=5), V.OptionError, "make_net 5"),
    "make_net returns": (dict(make_net=lambda: "net"), V.OptionError, "make_net() 'net'"),
    "test_loader": (dict(test_loader="test"), V.OptionError, "test_loader 'test'"),
    "unknown keyword": (dict(bogus=1), RecipeError, "'bogus'"),
    "widths override": (dict(widths=(4, 8)), RecipeError, "widths=(4, 8)"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
@pytest.mark.parametrize("name", ["train93", "train94", "train95", "train96", "train94_muon",
                                  "train96_faster", "warmup94"])
def test_train_arguments(side, name, case):
    kw, cls, fragment = TRAIN_CASES[case]
    if name == "train94_muon" and case == "learning_rate":
        fragment = "learning_rate=inf"      # checked (and refused) before Muon ignores it
    fn = getattr(side.m, name)
    kw = dict(dict(verbose=False, seed=0), **kw)
    if name == "train96_faster":      # its proxy keeps fewer than a batch of 16
        kw.update(filter_keep=8, proxy_widths=(4, 8, 8))
    _raises(cls, fragment, lambda: fn(side.loader(), **kw))


def test_train_loader_type(side):
    _raises(V.OptionError, "train_loader [1, 2]", lambda: side.m.train94([1, 2], verbose=False))
    _raises(V.OptionError, "train_loader 'x'", lambda: side.m.train("airbench94", "x"))


def test_train_recipe(side):
    _raises(RecipeError, "'nope'", lambda: side.m.train("nope", side.loader()))
    _raises(RecipeError, "batch_size 128", lambda: side.m.train94(side.loader(batch_size=128),
                                                                  verbose=False, seed=0))


# ----------------------------------------------------------------------------- evaluation
def test_infer_evaluate_model_and_loader(side):
    net, ld = side.net(), side.loader()
    for fn in (side.m.infer, side.m.evaluate):
        _raises(V.OptionError, "model 'net'", lambda: fn("net", ld))
        _raises(V.OptionError, "loader None", lambda: fn(net, None))
        _raises(V.OptionError, "loader (", lambda: fn(net, (X, Y)))


@pytest.mark.parametrize("level", [3, -1, True, 1.0, "2", None])
def test_torch_infer_evaluate_tta_level(level):
    pytest.importorskip("torch")
    side = Side("torch")
    net, ld = side.net(), side.loader()
    for fn in (side.m.infer, side.m.evaluate):
        _raises(V.OptionError, f"tta_level {level!r}", lambda: fn(net, ld, level))


def test_check_tta_level():
    assert [V.check_tta_level(v) for v in (0, 1, 2, np.int64(2))] == [0, 1, 2, 2]
    for bad in (3, -1, True, False, 1.0, "1", None):
        _raises(V.OptionError, "tta_level", lambda: V.check_tta_level(bad))


# ----------------------------------------------------------------------------- run_recipe
RUN_CASES = {
    "seed": (dict(seed=-1), V.OptionError, "seed -1"),
    "seed bool": (dict(seed=True), V.OptionError, "seed True"),
    "seed str": (dict(seed="0"), V.OptionError, "seed '0'"),
    "train images": (dict(train_data=(X.astype(np.float64), Y)), DatasetError,
                     "train_data: images have dtype float64"),
    "train labels": (dict(train_data=(X, Y + 1)), DatasetError, "train_data: labels range 1..10"),
    "train none": (dict(train_data=(X[:0], Y[:0])), DatasetError, "train_data: 0 images"),
    "test labels": (dict(test_data=(X, Y[:5])), DatasetError, "test_data: 5 labels"),
    "test shape": (dict(test_data=(X[..., :1], Y)), DatasetError, "test_data: images have shape"),
    "test none": (dict(test_data=(X[:0], Y[:0])), DatasetError, "test_data: 0 images"),
    "test not pair": (dict(test_data=X), V.OptionError, "test_data <ndarray"),
    "overrides": (dict(overrides=dict(epochs=0)), RecipeError, "epochs=0"),
    "recipe": (dict(recipe="nope"), RecipeError, "'nope'"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_run_recipe_arguments(side, case):
    kw, cls, fragment = RUN_CASES[case]
    args = dict(recipe="airbench94", seed=0, overrides=dict(widths=(4, 8, 8), batch_size=16,
                                                             epochs=1),
                train_data=(X, Y), test_data=(X[:8], Y[:8]), device="cpu")
    args.update(kw)
    _raises(cls, fragment, lambda: side.m.run_recipe(args.pop("recipe"), args.pop("seed"),
                                                     **args))


def test_run_recipe_data_dir(side, tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    _raises(V.PathError, f"data_dir {f}", lambda: side.m.run_recipe("airbench94", 0,
                                                                    data_dir=str(f)))


@pytest.mark.parametrize("seeds, fragment", [
    ([True, 1], "seed True"), ([1.5], "seed 1.5"), ([0, 0], "seed 0 is given twice"),
    ([], "no seeds"), ([2 ** 32], f"seed {2 ** 32}"), ("0:3", "seeds '0:3'")])
def test_jax_run_recipe_seeds(seeds, fragment):
    import airbench_jax as m
    _raises(V.OptionError, fragment,
            lambda: m.run_recipe("airbench94", None, seeds=seeds, train_data=(X, Y),
                                 test_data=(X, Y)))
    _raises(V.OptionError, "group_size 1.5",
            lambda: m.run_recipe("airbench94", None, seeds=[0], group_size=1.5,
                                 train_data=(X, Y), test_data=(X, Y)))


# ----------------------------------------------------------------------------- checkpoints
def test_jax_checkpoint_arguments(tmp_path):
    import airbench_jax as m
    from airbench_jax.checkpoint import CheckpointError
    net = m.make_net94(widths=WIDTHS)
    _raises(V.OptionError, "net 5", lambda: m.save_checkpoint(5, tmp_path / "a.npz"))
    _raises(V.PathError, f"checkpoint path {tmp_path} is a directory",
            lambda: m.save_checkpoint(net, tmp_path))
    _raises(V.PathError, "path None", lambda: m.save_checkpoint(net, None))
    _raises(V.PathError, "path None", lambda: m.load_checkpoint(None))
    _raises(CheckpointError, "nope.npz", lambda: m.load_checkpoint(tmp_path / "nope.npz", net))
    _raises(V.OptionError, "net 3", lambda: m.load_checkpoint(tmp_path / "nope.npz", 3))
    _raises(RecipeError, "'nope'", lambda: m.load_checkpoint(tmp_path / "nope.npz", "nope"))


# ----------------------------------------------------------------------------- the shared checks
def test_shared_checks_accept_what_they_should():
    assert V.check_seed(np.uint32(7)) == 7 and V.check_seed(2 ** 32 - 1) == 2 ** 32 - 1
    assert V.check_seed_list(range(3)) == [0, 1, 2]
    assert V.check_widths(WIDTHS) == V.check_widths([4, 8, 8]) == (4, 8, 8)
    assert L.check_aug(None) == {} and L.check_aug(dict(flip=np.True_)) == dict(flip=True)
    imgs, labels = V.check_data_pair([X[:2], [3, 4]], "d")
    assert imgs.dtype == np.uint8 and labels.dtype == np.int64 and list(labels) == [3, 4]
    assert V.check_data_dir(None) is None


def test_messages_show_arrays_by_shape_not_contents():
    msg = _raises(V.OptionError, "<ndarray shape (64, 32, 32, 3) dtype uint8>",
                  lambda: V.check_data_pair(X, "data"))
    assert len(msg) < 200
