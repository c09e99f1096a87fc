"""Fast CPU tests of airbench_jax (tiny nets, synthetic data unless AIRBENCH_DATA is set)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from airbench_common import get_recipe, lr_schedules, param_groups
from airbench_jax import augment as aug
from airbench_jax.conv import conv_matmul, conv_native
from airbench_jax.convert import from_torch_arrays, to_torch_arrays
from airbench_jax.loop import train_epoch
from airbench_jax.model import make_net, patch_covariance, whitening_kernel
from airbench_jax.muon import muon, newton_schulz
from airbench_jax.optim import build_optimizer, lr_array, sgd_group
from airbench_jax.state import init_train_state, train_step
from jaxrand import normal

KEY = jax.random.PRNGKey(0)
TINY = dict(widths=(8, 16, 16), batch_size=32, epochs=2)


def _imgs(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


# ----------------------------------------------------------------------------- augmentation
def test_flip_is_horizontal():
    x = jnp.arange(2 * 4 * 5 * 3.0).reshape(2, 4, 5, 3)
    np.testing.assert_array_equal(aug.flip_lr(x)[:, :, 0], x[:, :, -1])
    np.testing.assert_array_equal(aug.flip_lr(x)[:, 0, :], x[:, 0, ::-1])


def test_translate_all_offsets_occur():
    r = 2
    x = jnp.broadcast_to(jnp.arange(32.0)[None, :, None, None] * 100 + jnp.arange(32.0)[None, None, :, None],
                         (2000, 32, 32, 1))
    out = aug.random_crop(KEY, aug.pad_reflect(x, r))
    # pixel (16,16) of the crop is original pixel (16+dy, 16+dx)
    v = np.asarray(out[:, 16, 16, 0])
    dy, dx = v // 100 - 16, v % 100 - 16
    assert set(zip(dy.astype(int), dx.astype(int))) == {(a, b) for a in range(-r, r + 1)
                                                        for b in range(-r, r + 1)}


def test_cutout_zeroes_exactly_square():
    x = jnp.ones((64, 32, 32, 3))
    out = aug.cutout(KEY, x, 12)
    zeros = np.asarray((out == 0).all(-1).sum((1, 2)))
    assert (zeros == 144).all()


def test_altflip_flips_every_other_epoch():
    x = normal(KEY, (8, 32, 32, 3))
    e0 = aug.augment_batch(KEY, x, 0, flip=True, altflip=True, cutout_size=0)
    e1 = aug.augment_batch(KEY, x, 1, flip=True, altflip=True, cutout_size=0)
    e2 = aug.augment_batch(KEY, x, 2, flip=True, altflip=True, cutout_size=0)
    np.testing.assert_array_equal(e0, x)
    np.testing.assert_array_equal(e1, aug.flip_lr(x))
    np.testing.assert_array_equal(e2, x)


# ----------------------------------------------------------------------------- whitening / NS
def test_whitening_makes_patch_covariance_identity():
    imgs, _ = _imgs(400)
    x = aug.normalize(imgs)
    w = whitening_kernel(x, 2, eps=1e-8)[..., :12]
    out = conv_native(x, w, "VALID")
    cov = patch_covariance(out, 1)
    np.testing.assert_allclose(cov, np.eye(12), atol=2e-3)


def test_newton_schulz_singular_values():
    g = jax.random.normal(KEY, (32, 96))
    s = np.linalg.svd(np.asarray(newton_schulz(g, steps=5)), compute_uv=False)
    assert s.min() > 0.5 and s.max() < 1.5
    s3 = np.linalg.svd(np.asarray(newton_schulz(g.T, steps=3)), compute_uv=False)
    assert s3.max() < 1.6 and s3.min() > 0.1


# ----------------------------------------------------------------------------- conv impls
@pytest.mark.parametrize("pad,k", [("SAME", 3), ("VALID", 2)])
def test_matmul_conv_matches_native(pad, k):
    kx, kw, kg = jax.random.split(KEY, 3)
    x = normal(kx, (4, 9, 9, 5))
    w = normal(kw, (k, k, 5, 7))
    np.testing.assert_allclose(conv_matmul(x, w, pad), conv_native(x, w, pad), rtol=1e-4, atol=1e-4)
    ct = normal(kg, conv_native(x, w, pad).shape)
    f = lambda impl: jax.grad(lambda a, b: jnp.sum(impl(a, b, pad) * ct), argnums=(0, 1))(x, w)
    for a, b in zip(f(conv_matmul), f(conv_native)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- optimizers
def test_sgd_group_matches_hand_computation():
    lrs = jnp.array([0.1, 0.2, 0.3])
    tx = sgd_group(lrs, weight_decay=0.5, momentum=0.9)
    p = jnp.array([1.0, -2.0])
    st = tx.init(p)
    buf = np.zeros(2)
    pn = np.array([1.0, -2.0])
    for t, g in enumerate([jnp.array([0.3, 0.1]), jnp.array([-0.2, 0.4])]):
        u, st = tx.update(g, st, p)
        p = optax.apply_updates(p, u)
        gp = np.asarray(g) + 0.5 * pn
        buf = 0.9 * buf + gp
        pn = pn - float(lrs[t]) * (gp + 0.9 * buf)
        np.testing.assert_allclose(p, pn, rtol=1e-6)


def test_muon_matches_hand_computation():
    kp, kg1, kg2 = jax.random.split(KEY, 3)
    p = normal(kp, (3, 3, 4, 6))
    tx = muon(jnp.array([0.1, 0.05]), momentum=0.6, ns_steps=3)
    st = tx.init(p)
    pn, buf = np.asarray(p, np.float64), np.zeros(p.shape)
    for t, kg in enumerate([kg1, kg2]):
        g = normal(kg, p.shape)
        u, st = tx.update(g, st, p)
        p = optax.apply_updates(p, u)
        buf = 0.6 * buf + np.asarray(g)
        gn = np.asarray(g) + 0.6 * buf
        m = gn.transpose(3, 2, 0, 1).reshape(6, -1)
        ns = np.asarray(newton_schulz(jnp.asarray(m, jnp.float32), 3))
        ns = ns.reshape(6, 4, 3, 3).transpose(2, 3, 1, 0)
        pn = pn * np.sqrt(6) / np.linalg.norm(pn) - [0.1, 0.05][t] * ns
        np.testing.assert_allclose(p, pn, rtol=1e-4, atol=1e-5)


def test_frozen_whiten_bias_does_not_move():
    r = get_recipe("airbench94", **TINY)
    imgs, labels = _imgs(128)
    st = init_train_state(r, 128, KEY, whiten_images=aug.normalize(imgs))
    n_free = r.whiten_bias_steps(128)
    assert param_groups(r, 128)[0].frozen_after == n_free
    r2 = get_recipe("airbench94", **dict(TINY, whiten_bias_epochs=0.25))
    st = init_train_state(r2, 128, KEY, whiten_images=aug.normalize(imgs))
    x, y = aug.normalize(imgs[:32]), jnp.asarray(labels[:32])
    hist = []
    for _ in range(4):
        st, _ = train_step(st, x, y)
        hist.append(np.asarray(st.params["whiten_bias"]))
    # one step of training (whiten_bias_steps = 1), then frozen despite momentum 0.85
    assert r2.whiten_bias_steps(128) == 1
    assert not np.array_equal(hist[0], 0)
    for h in hist[1:4]:
        np.testing.assert_array_equal(h, hist[0])


def test_frozen_group_lr_is_exactly_zero_and_stops_weight_decay_and_momentum():
    """The freeze (airbench_common.params.group_lr): lr 0 from frozen_after on, so a group with
    weight decay and momentum built up moves by exactly 0 -- the same mechanism as torch's."""
    r = get_recipe("airbench94", batch_size=32, epochs=2, whiten_bias_epochs=0.5)
    sched = lr_schedules(r, 128)
    wb = next(g for g in param_groups(r, 128) if g.name == "whiten_bias")
    lrs = np.asarray(lr_array(wb, sched))
    assert wb.frozen_after == 2
    np.testing.assert_allclose(lrs[:2], (wb.lr * sched["main"][:2]).astype(np.float32))
    assert np.all(lrs[:2] > 0) and np.all(lrs[2:] == 0)
    tx = sgd_group(jnp.asarray(lrs), 0.5, 0.9)
    p = jnp.ones(3)
    st = tx.init(p)
    for t in range(4):
        u, st = tx.update(jnp.ones(3), st, p)
        assert np.all(np.asarray(u) == 0) == (t >= 2), t


def test_schedules_per_group_at_chosen_steps():
    r = get_recipe("airbench94_muon", batch_size=32, epochs=4)
    n = 128
    net = make_net(r, KEY)
    from flax import nnx
    _, params, _ = nnx.split(net, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    tx = build_optimizer(r, n, params)
    st = tx.init(params)
    sched = lr_schedules(r, n)
    groups = {g.name: g for g in param_groups(r, n)}
    # head: plain SGD; with zero params and wd, a unit grad gives -lr_t*(1+m) on step 0
    zero = jax.tree.map(jnp.zeros_like, params)
    ones = jax.tree.map(jnp.ones_like, params)
    u, st = tx.update(ones, st, zero)
    g = groups["head"]
    np.testing.assert_allclose(u["head"], -g.lr * sched["main"][0] * (1 + g.momentum), rtol=1e-6)
    g = groups["whiten_bias"]
    np.testing.assert_allclose(u["whiten_bias"], -g.lr * sched["whiten_bias"][0] * (1 + g.momentum),
                               rtol=1e-6)
    assert sched["main"][5] < sched["main"][0]


# ----------------------------------------------------------------------------- determinism / convert
def test_same_key_bitwise_identical():
    r = get_recipe("airbench94", **TINY)
    imgs, labels = _imgs(128)
    outs = []
    for _ in range(2):
        st = init_train_state(r, 128, KEY, whiten_images=aug.normalize(imgs))
        padded = aug.pad_reflect(aug.normalize(imgs), 2)
        st, (losses, _, _) = train_epoch(st, padded, jnp.asarray(labels, jnp.int32), 0, KEY)
        outs.append((np.asarray(losses), jax.tree.map(np.asarray, st.params)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    jax.tree.map(np.testing.assert_array_equal, outs[0][1], outs[1][1])


@pytest.mark.parametrize("name", ["airbench94", "airbench96"])
def test_convert_round_trip_exact(name):
    r = get_recipe(name, widths=(8, 16, 16))
    a = to_torch_arrays(make_net(r, KEY))
    if name == "airbench96":
        assert "2.conv3.weight" in a and "4.norm3.running_var" in a
    assert a["0.weight"].shape == (24, 3, 2, 2) and a["7.weight"].shape == (10, 16)
    a = {k: v + (np.float32(0.5) if v.dtype == np.float32 and "norm" not in k else 0)
         for k, v in a.items()}
    b = to_torch_arrays(from_torch_arrays(make_net(r, jax.random.PRNGKey(3)), a))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_init_is_pytorch_like():
    r = get_recipe("airbench94_muon", widths=(8, 32, 32))
    net = make_net(r, KEY)
    k = np.asarray(net.group1.conv1.kernel[...])
    assert k[1, 1, 3, 3] == 1 and k[0, 0, 3, 3] == 0 and k[1, 1, 2, 3] == 0
    # group2.conv1: 8 -> 32 channels; filters 8.. keep PyTorch's U(-1/sqrt(fan_in), +) init
    k2 = np.asarray(net.group2.conv1.kernel[...])
    rand = k2[..., 8:]
    bound = 1 / np.sqrt(8 * 9)
    assert rand.size == 3 * 3 * 8 * 24
    assert np.abs(rand).max() <= bound and np.abs(rand).max() > 0.95 * bound
    np.testing.assert_allclose(rand.std(), bound / np.sqrt(3), rtol=0.05)  # uniform's std
    np.testing.assert_array_equal(k2[1, 1, :, :8], np.eye(8))              # Dirac part
    np.testing.assert_allclose(np.std(np.asarray(net.head[...]), ddof=1), 1.0, rtol=1e-5)


def test_proxy_filtering_keeps_the_highest_loss_examples():
    from flax import nnx
    from airbench_jax.state import per_example_loss
    r = get_recipe("airbench96_faster", widths=(8, 16, 16), proxy_widths=(8, 8, 8),
                   batch_size=32, filter_keep=16, epochs=1)
    imgs, labels = _imgs(64)
    st = init_train_state(r, 64, KEY, whiten_images=aug.normalize(imgs))
    p0 = jax.tree.map(np.asarray, st.proxy_params)
    x, y = aug.normalize(imgs[:32]), jnp.asarray(labels[:32])
    # independently: the proxy's per-example losses (train mode, as the step scores them), its
    # 16 highest, and the main net's summed loss on exactly those (train_step's returned loss)
    proxy = nnx.merge(st.proxy_graphdef, st.proxy_params, st.proxy_rest)
    pl = np.asarray(per_example_loss(proxy(x, train=True), y, r.label_smoothing))
    keep = np.sort(np.argsort(pl)[-16:])
    drop = np.setdiff1d(np.arange(32), keep)
    assert pl[keep].min() > pl[drop].max()          # a clean split, so the check is decisive
    main = nnx.merge(st.graphdef, st.params, st.rest)
    want = float(per_example_loss(main(x[keep], train=True), y[keep], r.label_smoothing).sum())
    main = nnx.merge(st.graphdef, st.params, st.rest)
    other = float(per_example_loss(main(x[drop], train=True), y[drop], r.label_smoothing).sum())
    st, loss = train_step(st, x, y)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert abs(want - other) > 1e-3 * abs(want)     # keeping the others would be seen
    # proxy trained on step 0 (every 4th), but its whitening bias is frozen from the start
    np.testing.assert_array_equal(st.proxy_params["whiten_bias"], p0["whiten_bias"])
    assert not np.array_equal(st.proxy_params["head"], p0["head"])
    assert int(st.rest["group1"]["norm1"]["num_batches_tracked"]) == 1


def test_lookahead_ema_formula_and_final_copy():
    """6 steps (batch 32 of 128 images, 1.5 epochs). Steps 1-4 are plain steps; step 5 moves the
    EMA (which is still the init, p0) towards the net by 1 - d5 with d5 = 0.95**5 * (5/6)**3 and
    copies it into the net; step 6 is the last: its update is discarded by the final copy of the
    EMA (not moved on step 6). The plain trajectory comes from the same run without lookahead."""
    from airbench_common.schedules import lookahead_decays
    imgs, labels = _imgs(128)
    x = [aug.normalize(imgs[i * 32:(i + 1) * 32]) for i in range(4)] * 2
    y = [jnp.asarray(labels[i * 32:(i + 1) * 32]) for i in range(4)] * 2

    def run(lookahead, steps):
        r = get_recipe("airbench94", widths=(8, 16, 16), batch_size=32, epochs=1.5,
                       lookahead=lookahead)
        st = init_train_state(r, 128, KEY, whiten_images=aug.normalize(imgs))
        out = [jax.tree.map(np.asarray, st.params)]
        for i in range(steps):
            st, _ = train_step(st, x[i], y[i])
            out.append(jax.tree.map(np.asarray, st.params))
        return r, out

    r, la = run(True, 6)
    _, plain = run(False, 5)
    p0, q5 = plain[0], plain[5]
    d5 = lookahead_decays(r, 128)[5]
    np.testing.assert_allclose(d5, 0.95 ** 5 * (5 / 6) ** 3)
    for k in ("head", "whiten_bias"):
        assert np.abs(q5[k] - p0[k]).max() > 1e-5             # training moved the weights
        for s in range(1, 5):                                  # no lookahead before step 5
            np.testing.assert_array_equal(la[s][k], plain[s][k])
        want = p0[k] + (1 - d5) * (q5[k] - p0[k])
        np.testing.assert_allclose(la[5][k], want, rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(la[6][k], la[5][k])     # final copy of the EMA


def test_gelu_is_pytorchs_exact_gelu_with_its_derivative():
    """x/2 (1 + erf(x/sqrt 2)) and cdf + x pdf, against float64 scipy and against PyTorch's
    gelu (the same formula, so the same ~5e-7 cancellation error near x = -5); 16-bit inputs are
    computed in float32 (PyTorch's opmath) and rounded once."""
    torch = pytest.importorskip("torch")
    from scipy.special import erf
    from airbench_jax.model import gelu
    x = np.concatenate([np.linspace(-9, 9, 2001), [-40.0, 0.0, 40.0]]).astype(np.float32)
    x64 = x.astype(np.float64)
    want = x64 / 2 * (1 + erf(x64 / np.sqrt(2)))
    slope = 0.5 * (1 + erf(x64 / np.sqrt(2))) + x64 * np.exp(-x64 ** 2 / 2) / np.sqrt(2 * np.pi)
    ours = np.asarray(gelu(jnp.asarray(x)))
    np.testing.assert_allclose(ours, want, rtol=2e-6, atol=1e-6)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.gelu(xt)
    np.testing.assert_allclose(ours, yt.detach().numpy(), rtol=2e-6, atol=1e-6)
    g = jax.grad(lambda v: jnp.sum(gelu(v)))(jnp.asarray(x))
    np.testing.assert_allclose(g, slope, rtol=2e-6, atol=2e-7)
    yt.sum().backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=2e-6, atol=2e-7)
    # forward-mode too (custom_jvp), and a half input rounds the float32 result once
    _, t = jax.jvp(gelu, (jnp.asarray(x),), (jnp.ones_like(x),))
    np.testing.assert_allclose(t, slope, rtol=2e-6, atol=2e-7)
    h = gelu(jnp.asarray(x, jnp.float16))
    assert h.dtype == jnp.float16
    np.testing.assert_array_equal(h, gelu(jnp.asarray(x, jnp.float16).astype(jnp.float32))
                                  .astype(jnp.float16))


def test_maxpool_gradient_goes_to_first_tied_maximum_like_pytorch():
    from airbench_jax.model import maxpool
    x = jnp.array([[1.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 2, 1)
    g = jax.grad(lambda z: maxpool(z, 2).sum())(x)
    np.testing.assert_array_equal(np.asarray(g).ravel(), [1, 0, 0, 0])
    # floor mode with k=3 on 7x7 (the last row/column is dropped and gets no gradient),
    # and equal to lax.reduce_window's gradient (also first-max) on untied random data
    z = normal(jax.random.PRNGKey(0), (2, 7, 7, 3))
    ours = jax.grad(lambda v: (maxpool(v, 3) ** 2).sum())(z)
    ref = jax.grad(lambda v: (jax.lax.reduce_window(v[:, :6, :6], -jnp.inf, jax.lax.max,
                                                     (1, 3, 3, 1), (1, 3, 3, 1), "VALID") ** 2).sum())(z)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    np.testing.assert_array_equal(maxpool(z, 3), jax.lax.reduce_window(
        z[:, :6, :6], -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 3, 3, 1), "VALID"))
    assert float(jnp.abs(ours[:, 6]).max()) == 0 and float(jnp.abs(ours[:, :, 6]).max()) == 0


def test_cifar_loader_reads_the_given_path_and_arrays(tmp_path):
    """`path` is used as given (as upstream and the torch loader do), never silently replaced."""
    from airbench_jax import CifarLoader
    from airbench_common.data import DatasetError
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 40).astype(np.uint8)
    np.savez(tmp_path / "test.npz", images=imgs, labels=labels)
    ld = CifarLoader(str(tmp_path), train=False, batch_size=16, device="cpu")
    assert np.array_equal(np.asarray(ld.images), imgs) and len(ld) == 3
    ld = CifarLoader(data=(imgs, labels), train=False, batch_size=16)
    assert np.array_equal(np.asarray(ld.labels), labels)
    with pytest.raises(ValueError, match="images have dtype float32, expected uint8"):
        CifarLoader(data=(imgs.astype(np.float32), labels))
    with pytest.raises(ValueError, match="not available"):
        CifarLoader(data=(imgs, labels), device="tpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError):
        CifarLoader(str(bad), train=True)


def test_library_train_raises_on_the_end_of_run_verdict():
    """train9x raises where a run records `diverged`, with the same reason (finish.conclude):
    a non-finite loss stops training at that epoch. The verdict without test images also
    refuses non-finite weights (here NaN BatchNorm statistics, which no training loss reads)."""
    from airbench_jax import CifarLoader, make_net94, train94
    from airbench_jax.finish import conclude
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32))

    def poisoned():
        net = make_net94(widths=(4, 8, 8), conv_impl="matmul")
        net.head[...] = jnp.full_like(net.head[...], jnp.nan)
        return net
    loader = CifarLoader(train=True, batch_size=16, data=data, seed=0)
    with pytest.raises(FloatingPointError,
                       match=r"^airbench94: non-finite training loss in epoch 0; try a lower"):
        train94(loader, epochs=1, make_net=poisoned, verbose=False, seed=0)
    r = get_recipe("airbench94", widths=(4, 8, 8), batch_size=16)
    st = init_train_state(r, 32, 0, conv_impl="matmul")
    assert conclude(st).error is None and conclude(st, error="x").error == "x"
    bad = st.replace(rest=jax.tree.map(lambda v: jnp.full_like(v, jnp.nan)
                                       if jnp.issubdtype(v.dtype, jnp.floating) else v, st.rest))
    assert conclude(bad).error == "non-finite weights after training"
    assert conclude(bad).status == "diverged" and not conclude(bad).evaluated
