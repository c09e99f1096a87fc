"""Every upstream entry point (train9x, warmup9x, make_net9x, train94_muon, train96_faster) called
on both sides on synthetic data (tiny widths, 2 steps), and upstream's meanings checked: make_net
is the net trained, run is only a label, the loader's seed/shuffle are the run's randomness and
order, and the verbose table's test set comes from the loader's folder."""
import numpy as np
import pytest

N, BS = 64, 32
WIDTHS = dict(block1=4, block2=8, block3=8)


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


class Side:
    """The few framework-specific spellings a test needs."""

    def __init__(self, name):
        self.name = name
        if name == "torch":
            pytest.importorskip("torch")
            import airbench_torch as m
            self.kw = dict(device="cpu")
        else:
            pytest.importorskip("jax")
            import airbench_jax as m
            self.kw = {}
        self.m = m

    def loader(self, data=None, **kw):
        return self.m.CifarLoader(data=data or _data(), batch_size=BS, **self.kw, **kw)

    def make_net(self, n, **kw):
        return getattr(self.m, f"make_net9{n}")(widths=WIDTHS, batchnorm_momentum=0.5, **self.kw,
                                                **kw)

    def arrays(self, net):
        if self.name == "torch":
            return {k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}
        from airbench_jax.convert import to_torch_arrays
        return {k: np.asarray(v, np.float64) for k, v in to_torch_arrays(net).items()}

    def reseed(self):
        """make_net() on the torch side inits from torch's global generator (as upstream)."""
        if self.name == "torch":
            import torch
            torch.manual_seed(0)

    def bn_momentum(self, net):
        if self.name == "torch":
            return 1 - net[2].norm1.momentum      # torch's sense -> upstream's "keep" sense
        return net.group1.norm1.momentum


SIDES = ["jax", "torch"]


@pytest.fixture(params=SIDES)
def side(request):
    return Side(request.param)


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_make_net9x_takes_upstream_arguments(side, n):
    net = side.make_net(n)
    a = side.arrays(net)
    assert a["2.conv1.weight"].shape[0] == 4 and a["4.conv1.weight"].shape[0] == 8
    assert a["7.weight"].shape == (10, 8)
    assert side.bn_momentum(net) == pytest.approx(0.5)
    assert ("2.conv3.weight" in a) == (n == 6)           # airbench96's residual third conv


# 93 and 95 are 94's net with other hyper-parameters: their train9x run in the slow suite
@pytest.mark.parametrize("n", [pytest.param(3, marks=pytest.mark.slow), 4,
                               pytest.param(5, marks=pytest.mark.slow), 6])
def test_train9x_and_warmup9x_train_the_net_make_net_returns(side, n):
    """make_net's net is the one trained (its widths come back); warm-up takes one step."""
    made = []

    def make_net():
        made.append(side.make_net(n))
        return made[-1]

    train = getattr(side.m, f"train9{n}")
    warm = getattr(side.m, f"warmup9{n}")
    net = train(side.loader(seed=0), 1, 0.1, None, None, None, None, None, 0, make_net, 0, False,
                seed=0)
    assert len(made) == 1 and side.arrays(net)["7.weight"].shape == (10, 8)
    w = side.arrays(net)
    net1 = warm(side.loader(seed=0), epochs=1, make_net=make_net, verbose=False, seed=0)
    w1 = side.arrays(net1)
    assert len(made) == 2 and w1["7.weight"].shape == (10, 8)
    assert not _same(w, w1)                               # 1 step != 2 steps
    steps = w["2.norm1.num_batches_tracked"], w1["2.norm1.num_batches_tracked"]
    assert steps == (2, 1)


@pytest.mark.parametrize("name", ["train94_muon", "train96_faster"])
def test_our_other_recipes_train(side, name):
    n = 6 if "96" in name else 4
    extra = dict(filter_keep=16, proxy_widths=(4, 8, 8)) if "faster" in name else {}
    net = getattr(side.m, name)(side.loader(seed=0), epochs=1, verbose=False, seed=0,
                                make_net=lambda: side.make_net(n), **extra)
    assert side.arrays(net)["2.norm1.num_batches_tracked"] == 2


def test_run_is_a_label_and_seeds_are_honoured(side):
    """Same seeds, different run: identical nets (run is not a seed). Another train seed or
    loader seed: a different net. shuffle=False without augmentation: the loader seed changes
    nothing (train follows the loader's order, drawing none of its own). The net comes from the
    recipe (make_net=None), so the train seed is its init. Lookahead off: its final copy of the
    EMA would hand back the init after 2 steps, whatever the data."""
    def fit(run=0, loader_seed=0, seed=0, **loader_kw):
        return side.arrays(side.m.train94(side.loader(seed=loader_seed, **loader_kw), epochs=1,
                                          run=run, verbose=False, seed=seed, lookahead=False,
                                          widths=(4, 8, 8)))
    aug = dict(aug=dict(flip=True, translate=2), altflip=True)
    base = fit(**aug)
    assert base["7.weight"].shape == (10, 8)
    assert _same(base, fit(run=3, **aug))
    assert not _same(base, fit(seed=1, **aug))
    assert not _same(base, fit(loader_seed=1, **aug))
    plain = dict(shuffle=False)
    assert _same(fit(loader_seed=1, **plain), fit(loader_seed=2, **plain))
    assert not _same(fit(loader_seed=1, **plain), fit(loader_seed=1, shuffle=True))


def test_loader_shuffle_and_seed(side):
    import numpy as np
    imgs, labels = _data()
    order = lambda ld: np.concatenate([np.asarray(y) for _, y in ld])
    assert np.array_equal(order(side.loader((imgs, labels), shuffle=False)), labels[:N])
    a = order(side.loader((imgs, labels), shuffle=True, seed=3))
    assert np.array_equal(a, order(side.loader((imgs, labels), shuffle=True, seed=3)))
    assert not np.array_equal(a, labels) and sorted(a) == sorted(labels)


def test_verbose_table_uses_the_loaders_folder(side, tmp_path, monkeypatch, capsys):
    """train94(loader) with verbose evaluates on the test split of the loader's own folder
    (no $AIRBENCH_DATA needed), printing upstream's table."""
    monkeypatch.delenv("AIRBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nocache"))
    tr, te = _data(N, 1), _data(40, 2)
    np.savez(tmp_path / "train.npz", images=tr[0], labels=tr[1])
    np.savez(tmp_path / "test.npz", images=te[0], labels=te[1])
    loader = side.m.CifarLoader(str(tmp_path), train=True, batch_size=BS, **side.kw)
    side.m.train94(loader, epochs=1, make_net=lambda: side.make_net(4), verbose=True, seed=0)
    out = capsys.readouterr().out
    for col in ("run", "epoch", "train_loss", "val_acc", "tta_val_acc", "time_seconds"):
        assert col in out
    assert "eval" in out
    # accuracies on 40 test images are multiples of 1/40
    vals = [float(c) for line in out.splitlines() if line.startswith("|") and "eval" in line
            for c in line.strip("|").split("|")[5:6] if c.strip()]
    assert vals and abs(vals[0] * 40 - round(vals[0] * 40)) < 1e-3
