"""airbench_torch network, whitening, optimizers and the train step (CPU, tiny nets)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from airbench_common import get_recipe, lr_schedules, param_groups, lookahead_decays
from airbench_torch import (Muon, make_net, make_net93, make_net94, make_net95, make_net96,
                            make_train_state, newton_schulz, train_step)
from airbench_torch.net import init_whitening, patch_matrix, whitening_filters

FIXTURE = Path(__file__).parent / "fixtures" / "upstream_state_dicts.json"
TINY = dict(widths=(8, 16, 16), batch_size=32, whiten_images=64)


def tiny_state(name="airbench94", seed=0, n_train=128, **over):
    r = get_recipe(name, **{**TINY, **over})
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n_train, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n_train,), generator=g)
    state = make_train_state(r, n_train, x[:r.whiten_images], seed=seed, device="cpu")
    return state, x, y


def batches(x, y, bs):
    while True:
        for i in range(0, len(x) - bs + 1, bs):
            yield x[i:i + bs], y[i:i + bs]


# ---------------------------------------------------------------- state-dict compatibility
UPSTREAM_DEFAULTS = {"make_net93": {}, "make_net94": {}, "make_net95": {},
                     # upstream's library make_net96 defaults differ from our (paper) recipe
                     "make_net96": dict(widths=dict(block1=128, block2=512, block3=512),
                                        batchnorm_momentum=0.6)}


@pytest.mark.parametrize("name", list(UPSTREAM_DEFAULTS))
def test_state_dict_names_and_shapes_match_upstream(name):
    nets = json.loads(FIXTURE.read_text())["nets"]
    fn = {"make_net93": make_net93, "make_net94": make_net94, "make_net95": make_net95,
          "make_net96": make_net96}[name]
    net = fn(device="cpu", **UPSTREAM_DEFAULTS[name])
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: v[0] for k, v in nets[name].items()}
    assert list(ours) == list(theirs)
    assert ours == theirs
    assert {k: p.requires_grad for k, p in net.named_parameters()} == nets[name + "_requires_grad"]
    assert net[2].norm1.momentum == pytest.approx(nets[name + "_bn_torch_momentum"])
    # round trip: an upstream-shaped state dict (float16 tensors, as upstream saves) loads strictly
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, (shape, dtype) in nets[name].items():
        sd[k] = (torch.randint(0, 5, shape, generator=g) if dtype == "int64"
                 else torch.randn(shape, generator=g).to(getattr(torch, dtype)))
    net.load_state_dict(sd, strict=True)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, sd[k].to(v.dtype))


def test_make_net96_defaults_follow_paper_recipe():
    net = make_net96(device="cpu")
    assert net[3].conv1.weight.shape[0] == 384 and net[4].conv1.weight.shape[0] == 512
    assert net[2].norm1.momentum == pytest.approx(1 - 0.9)
    assert hasattr(net[2], "conv3")


def test_net_structure_details():
    r = get_recipe("airbench94_muon")
    torch.manual_seed(0)
    net = make_net(r, device="cpu")
    assert net[8].scale == pytest.approx(1 / 256)
    assert net[7].weight.std().item() == pytest.approx(1.0, rel=1e-4)  # head unit std
    for grp in (net[2], net[3], net[4]):
        w = grp.conv1.weight
        cin = w.shape[1]
        eye = torch.zeros_like(w[:cin])
        torch.nn.init.dirac_(eye)
        assert torch.equal(w[:cin], eye)      # Dirac on the first Cin filters
        if len(w) > cin:
            assert not torch.equal(w[cin:], torch.zeros_like(w[cin:]))
        assert grp.norm1.eps == r.bn_eps and not grp.norm1.weight.requires_grad
        assert grp.norm1.momentum == pytest.approx(1 - r.bn_momentum)
    assert isinstance(net[1], torch.nn.GELU) and net[1].approximate == "none"
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_depth3_residual_adds_first_activation_before_the_gelu():
    """Paper-script order (legacy/airbench96.py): BN, + first activation, then GELU."""
    net = make_net(get_recipe("airbench96", widths=(8, 16, 16)), device="cpu").eval()
    grp = net[2]
    x = torch.randn(2, 24, 16, 16)
    a = grp.activ(grp.norm1(grp.pool(grp.conv1(x))))
    b = grp.activ(grp.norm2(grp.conv2(a)))
    c = grp.activ(grp.norm3(grp.conv3(b)) + a)
    torch.testing.assert_close(grp(x), c)
    # and not the pip library's order (GELU, then add), which differs measurably
    assert (grp(x) - (grp.activ(grp.norm3(grp.conv3(b))) + a)).abs().max() > 1e-3


# ---------------------------------------------------------------- whitening
def test_whitening_makes_patch_covariance_identity():
    g = torch.Generator().manual_seed(0)
    # correlated channels and smooth images, like natural images
    base = torch.nn.functional.avg_pool2d(torch.randn(200, 3, 36, 36, generator=g), 5, 1)
    x = 10 * (base + 0.3 * base[:, [1, 2, 0]])
    eps = 5e-4
    filters = whitening_filters(x, 2, eps)
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])
    P = patch_matrix(x, 2).double()
    cov = P.T @ P / len(P)
    W = filters[:12].reshape(12, -1).double()
    white = W @ cov @ W.T
    evals = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(white, torch.diag(evals / (evals + eps)), atol=1e-4, rtol=1e-4)
    # identity up to eps: every eigenvalue here is much larger than eps
    assert (evals > 100 * eps).all()
    torch.testing.assert_close(white, torch.eye(12, dtype=white.dtype), atol=1e-2, rtol=0)
    # and the conv applies exactly these filters
    net = make_net(get_recipe("airbench94", widths=(8, 16, 16)), device="cpu")
    init_whitening(net, x, eps)
    out = torch.nn.functional.conv2d(x, net[0].weight)
    assert torch.allclose(out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double(),
                          P @ W.T, atol=1e-4)


# ---------------------------------------------------------------- Newton-Schulz and Muon
@pytest.mark.parametrize("shape", [(64, 216), (128, 1152), (300, 40)])
def test_newton_schulz_singular_values(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    X = newton_schulz(G, 3)
    assert X.shape == G.shape
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.5 and s.max() < 1.5
    # orthogonal-ish: X X^T (short side) close to identity in the 0.5..1.5 sense
    small = X @ X.T if shape[0] <= shape[1] else X.T @ X
    off = small - torch.diag(torch.diag(small))
    assert off.abs().max() < 0.3
    # same left/right singular vectors as G (it only reshapes the spectrum)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    core = U.T @ X @ Vh.T
    assert (core - torch.diag(torch.diag(core))).abs().max() < 1e-3


def test_muon_step_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 2, 3, 3, generator=g)
    grads = [torch.randn(4, 2, 3, 3, generator=g) for _ in range(2)]
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=0.1, momentum=0.6, nesterov=True, ns_steps=3, eps=1e-7)
    a, b, c = 3.4445, -4.7750, 2.0315
    ref, buf = p0.clone().double(), torch.zeros_like(p0).double()
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        buf = 0.6 * buf + grad.double()
        geff = grad.double() + 0.6 * buf
        ref = ref * (2.0 / ref.norm())                    # sqrt(4 out channels) / ||p||
        X = geff.reshape(4, -1)
        X = X / (X.norm() + 1e-7)
        for _ in range(3):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        ref = ref - 0.1 * X.reshape(4, 2, 3, 3)
    torch.testing.assert_close(p.detach().double(), ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- schedules, groups, freezing
@pytest.mark.parametrize("name", ["airbench94", "airbench94_muon", "airbench96"])
def test_lrs_weight_decay_and_groups_follow_recipe_table(name):
    state, x, y = tiny_state(name, epochs=3)  # 12 steps: warm-up, peak and decay all visited
    r = state.recipe
    groups = {g.name: g for g in param_groups(r, 128)}
    sched = lr_schedules(r, 128)
    seen = {}
    for opt in state.optimizers:
        for pg in opt.param_groups:
            spec = pg["spec"]
            seen[spec.name] = pg
            assert spec == groups[spec.name]
            assert pg.get("weight_decay", 0.0) == pytest.approx(spec.weight_decay)
            assert pg["momentum"] == pytest.approx(spec.momentum)
    assert set(seen) == set(groups)
    n_params = sum(len(pg["params"]) for pg in seen.values())
    assert n_params == sum(1 for p in state.net.parameters() if p.requires_grad)
    it = batches(x, y, 32)
    for s in range(state.total_steps):
        train_step(state, *next(it))
        for gname, pg in seen.items():
            want = groups[gname].lr * sched[groups[gname].schedule][s]
            assert pg["lr"] == pytest.approx(want, rel=1e-12, abs=1e-15), (gname, s)


@pytest.mark.parametrize("name", ["airbench94", "airbench94_muon"])
def test_whitening_bias_frozen_after_its_steps(name):
    state, x, y = tiny_state(name, whiten_bias_epochs=1, epochs=3, lookahead=False)
    frozen = state.whiten_bias_frozen_after
    assert frozen == 4
    bias = state.net[0].bias
    it = batches(x, y, 32)
    history = []
    sgd = state.optimizers[0]
    for s in range(state.total_steps):
        train_step(state, *next(it))
        history.append(bias.detach().clone())
        if s + 1 == frozen:
            buf = sgd.state[bias]["momentum_buffer"].clone()
            assert buf.abs().sum() > 0   # momentum is present when freezing starts
        wb_group = next(pg for pg in sgd.param_groups if pg["spec"].name == "whiten_bias")
        assert (wb_group["lr"] == 0) == (s >= frozen)   # the freeze: a zero lr, and only then
    assert not torch.equal(history[0], history[frozen - 1])   # it trained before
    for h in history[frozen:]:
        assert torch.equal(h, history[frozen - 1])            # and not at all afterwards


def test_lookahead_every_five_steps_and_final_copy():
    """Against the same run without lookahead (same init and batches): steps 1-4 identical; on
    step 5 the net becomes ema + (1 - d5) * (net - ema) with ema = init and
    d5 = 0.95**5 * (5/6)**3; step 6 (the last) ends with the EMA (not moved then) copied in."""
    la, x, y = tiny_state("airbench94", epochs=1.5)            # 6 steps
    plain, _, _ = tiny_state("airbench94", epochs=1.5, lookahead=False)
    d5 = lookahead_decays(la.recipe, 128)[5]
    assert d5 == pytest.approx(0.95 ** 5 * (5 / 6) ** 3, rel=1e-12)
    p0 = {k: v.clone() for k, v in plain.net.state_dict().items()}
    it1, it2 = batches(x, y, 32), batches(x, y, 32)
    hist = []
    for s in range(1, 7):
        train_step(la, *next(it1))
        if s <= 5:
            train_step(plain, *next(it2))
        hist.append({k: v.clone() for k, v in la.net.state_dict().items()})
        q = plain.net.state_dict()
        for k in ("7.weight", "2.conv1.weight", "2.norm1.bias", "2.norm1.running_mean"):
            if s < 5:
                assert torch.equal(hist[-1][k], q[k]), (s, k)
            elif s == 5:
                assert not torch.equal(q[k], p0[k])
                torch.testing.assert_close(hist[-1][k], p0[k] + (1 - d5) * (q[k] - p0[k]),
                                           rtol=1e-5, atol=1e-7)
            else:
                assert torch.equal(hist[-1][k], hist[-2][k]), k   # the final copy
    assert la.step == la.total_steps == 6


def test_same_seed_identical_weights_different_seed_differs():
    def run(seed):
        state, x, y = tiny_state("airbench94_muon", seed=seed)
        it = batches(x, y, 32)
        losses = [train_step(state, *next(it)) for _ in range(3)]
        return losses, state.net.state_dict()
    l1, s1 = run(5)
    l2, s2 = run(5)
    l3, s3 = run(6)
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_channels_last_override_trains_the_same_up_to_rounding():
    # the memory format is a layout choice: same init, same steps, float32 rounding apart
    def run(cl):
        r = get_recipe("airbench94_muon", **TINY)
        g = torch.Generator().manual_seed(123)
        x = torch.randn(128, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (128,), generator=g)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        state = make_train_state(r, 128, x[:64], seed=2, device="cpu", channels_last=cl)
        it = batches(x, y, 32)
        losses = [train_step(state, *next(it)) for _ in range(3)]
        return state, losses
    (s0, l0), (s1, l1) = run(False), run(True)
    weights = [p for p in s1.net.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(p.is_contiguous() for p in s0.net.parameters() if p.ndim == 4)
    np.testing.assert_allclose(l1, l0, rtol=1e-4)
    for (k, a), b in zip(s0.net.state_dict().items(), s1.net.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=k)


def test_nonfinite_loss_raises_floating_point_error():
    state, x, y = tiny_state("airbench94")
    x[:32] = float("nan")
    with pytest.raises(FloatingPointError, match="step 0"):
        train_step(state, x[:32], y[:32])


def test_given_net_is_used_as_is():
    r = get_recipe("airbench94", **TINY)
    torch.manual_seed(0)
    net = make_net(r, device="cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = make_train_state(r, 128, None, seed=3, device="cpu", net=net)
    assert state.net is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_proxy_filtering_trains_main_net_on_kept_examples():
    import copy
    import torch.nn.functional as F
    state, x, y = tiny_state("airbench96_faster", filter_keep=16, proxy_widths=(4, 8, 8),
                             widths=(8, 16, 16), epochs=2)
    px = state.proxy
    assert px is not None
    wb = [pg for opt in px.optimizers for pg in opt.param_groups if pg["spec"].name == "whiten_bias"]
    assert wb[0]["spec"].frozen_after == 0     # the proxy's whitening bias never trains
    it = batches(x, y, 32)
    p_before = [p.detach().clone() for p in px.net.parameters()]
    xb, yb = next(it)
    # independently: the proxy's per-example losses (train mode), its 16 highest, and the main
    # net's summed loss on exactly those (what train_step returns, computed before the update)
    ls = state.recipe.label_smoothing
    pl = F.cross_entropy(copy.deepcopy(px.net).train()(xb), yb, label_smoothing=ls,
                         reduction="none").detach()
    keep = pl.argsort()[-16:].sort().values
    drop = pl.argsort()[:16].sort().values
    assert pl[keep].min() > pl[drop].max()
    want = F.cross_entropy(copy.deepcopy(state.net).train()(xb[keep]), yb[keep],
                           label_smoothing=ls, reduction="sum").item()
    other = F.cross_entropy(copy.deepcopy(state.net).train()(xb[drop]), yb[drop],
                            label_smoothing=ls, reduction="sum").item()
    loss = train_step(state, xb, yb)            # step 0: proxy trains (0 % 4 == 0)
    assert loss == pytest.approx(want, rel=1e-5) and abs(want - other) > 1e-3 * want
    assert torch.equal(state.last["labels"], yb[keep])
    changed = [not torch.equal(a, b) for a, b in zip(p_before, px.net.parameters())]
    assert any(changed) and torch.equal(px.net[0].bias, p_before[1])
    p_mid = [p.detach().clone() for p in px.net.parameters()]
    train_step(state, *next(it))              # step 1: proxy only scores
    assert all(torch.equal(a, b) for a, b in zip(p_mid, px.net.parameters()))
