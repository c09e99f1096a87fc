"""airbench_torch.CifarLoader and its augmentations (CPU)."""
import numpy as np
import pytest
import torch

from airbench_torch import CifarLoader
from airbench_torch.loader import random_cutout, random_flip, random_translate


def fake_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def test_images_stored_nchw_float_on_device():
    imgs, labels = fake_data(8)
    ld = CifarLoader(data=(imgs, labels), device="cpu", seed=0)
    assert ld.images.shape == (8, 3, 32, 32) and ld.images.dtype == torch.float32
    assert ld.labels.dtype == torch.int64
    torch.testing.assert_close(ld.images[3, :, 5, 7], torch.tensor(imgs[3, 5, 7] / 255).float())


@pytest.mark.parametrize("cl", [False, True])
def test_channels_last_override_changes_layout_not_values(cl):
    imgs, labels = fake_data(8)
    ld = CifarLoader(data=(imgs, labels), device="cpu", seed=0, channels_last=cl)
    ref = CifarLoader(data=(imgs, labels), device="cpu", seed=0)
    assert ld.channels_last is cl and ref.channels_last is True    # CPU policy: channels_last
    assert ld.images.is_contiguous(memory_format=torch.channels_last) is cl
    assert torch.equal(ld.images, ref.images)


def test_flip_is_horizontal_w_axis():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = random_flip(x, g)
        for i in range(2):
            assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1))
            if not torch.equal(y[i], x[i]):
                # columns reversed, rows untouched
                assert torch.equal(y[i, :, :, 0], x[i, :, :, 31])
                assert torch.equal(y[i, :, 0, :], x[i, :, 0, :].flip(-1))


@pytest.mark.parametrize("r", [2, 4])
def test_translate_every_offset_occurs_and_is_a_crop(r):
    n = 2000  # 81 offsets for r=4: each missing with prob (80/81)^2000 ~ 1e-11
    x = torch.randn(n, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (r,) * 4, mode="reflect")
    out, shifts = random_translate(padded, r, torch.Generator().manual_seed(1), return_shifts=True)
    assert out.shape == x.shape
    assert shifts.min() >= -r and shifts.max() <= r
    seen = {(int(a), int(b)) for a, b in shifts}
    assert seen == {(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)}
    for i in range(0, n, 37):
        dy, dx = shifts[i].tolist()
        assert torch.equal(out[i], padded[i, :, r + dy:r + dy + 32, r + dx:r + dx + 32])


@pytest.mark.parametrize("s", [1, 12, 16])
def test_cutout_zeroes_exactly_a_square(s):
    x = torch.ones(50, 3, 32, 32)
    out, corners = random_cutout(x, s, torch.Generator().manual_seed(2), return_corners=True)
    zeros = (out == 0).sum(dim=(2, 3))
    assert (zeros == s * s).all()
    assert corners.min() >= 0 and corners.max() <= 32 - s
    for i in range(0, 50, 7):
        y, xx = corners[i].tolist()
        assert (out[i, :, y:y + s, xx:xx + s] == 0).all()


def test_alternating_flip_flips_on_every_other_epoch():
    imgs, labels = fake_data(64)
    ld = CifarLoader(data=(imgs, labels), batch_size=64, aug=dict(flip=True), altflip=True,
                     shuffle=False, device="cpu", seed=3)
    epochs = [next(iter(ld))[0].clone() for _ in range(4)]
    norm = ld.normalize(ld.images)
    flipped0 = torch.tensor([not torch.equal(epochs[0][i], norm[i]) for i in range(64)])
    assert 10 < flipped0.sum() < 54   # a random half flipped once at epoch 0
    for i in range(64):
        assert torch.equal(epochs[0][i], norm[i]) or torch.equal(epochs[0][i], norm[i].flip(-1))
    assert torch.equal(epochs[1], epochs[0].flip(-1))
    assert torch.equal(epochs[2], epochs[0])
    assert torch.equal(epochs[3], epochs[0].flip(-1))
    # so every image is seen both ways over any two consecutive epochs
    for i in range(64):
        assert not torch.equal(epochs[0][i], epochs[1][i]) or torch.equal(norm[i], norm[i].flip(-1))


def test_unknown_aug_key_lists_valid_keys():
    with pytest.raises(ValueError, match="flip, translate, cutout"):
        CifarLoader(data=fake_data(4), aug=dict(rotate=3), device="cpu")


def test_images_mutable_before_iteration_only_and_drop_last():
    imgs, labels = fake_data(100)
    ld = CifarLoader(data=(imgs, labels), batch_size=16, device="cpu", seed=0)
    assert len(ld) == 6          # drop_last for train
    mask = ld.labels < 5
    ld.images = ld.images[mask]
    ld.labels = ld.labels[mask]
    batches = list(ld)
    assert len(batches) == int(mask.sum()) // 16
    assert all(len(b[0]) == 16 for b in batches)
    with pytest.raises(AssertionError):
        ld.images = ld.images[:3]
    test = CifarLoader(data=(imgs, labels), train=False, batch_size=16, device="cpu")
    assert len(test) == 7 and sum(len(b[1]) for b in test) == 100


def test_same_seed_same_stream_and_shuffle_is_permutation():
    data = fake_data(96)
    aug = dict(flip=True, translate=2, cutout=4)
    a = CifarLoader(data=data, batch_size=32, aug=aug, altflip=True, device="cpu", seed=7)
    b = CifarLoader(data=data, batch_size=32, aug=aug, altflip=True, device="cpu", seed=7)
    c = CifarLoader(data=data, batch_size=32, aug=aug, altflip=True, device="cpu", seed=8)
    for _ in range(2):
        ba, bb, bc = list(a), list(b), list(c)
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(ba, bb))
        assert not all(torch.equal(x[0], y[0]) for x, y in zip(ba, bc))
    labels = torch.cat([l for _, l in ba]).sort().values
    assert torch.equal(labels, a.labels.sort().values)
