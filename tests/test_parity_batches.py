"""The shared batch stream: determinism and augmentation semantics (numpy only)."""
import numpy as np
import pytest

from airbench_common import get_recipe
from parity.numerics.batches import (BatchStream, mirror, normalize, synthetic_images, to_nchw,
                                     to_nhwc)


def _stream(**kw):
    imgs, labs = synthetic_images(64, seed=1)
    args = dict(batch_size=16, seed=3, translate=2, cutout=0, total_steps=12)
    args.update(kw)
    return BatchStream(imgs, labs, **args)


def test_deterministic_and_order_independent():
    s1, s2 = _stream(cutout=8), _stream(cutout=8)
    b_late = s2.batch(9)                      # built first, before any other batch
    for step in range(12):
        x1, y1 = s1.batch(step)
        assert x1.dtype == np.float32 and x1.shape == (16, 32, 32, 3) and y1.dtype == np.int64
        x2, y2 = s2.batch(step)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(b_late[0], s1.batch(9)[0])
    x3, _ = _stream(seed=4).batch(0)
    assert not np.array_equal(x3, s1.batch(0)[0])


def test_epoch_is_a_permutation_and_labels_follow_images():
    s = _stream(translate=0, flip=False)
    seen = np.concatenate([s.indices(i)[1] for i in range(s.steps_per_epoch)])
    assert sorted(seen) == list(range(64))
    x, y = s.batch(2)
    _, idx = s.indices(2)
    np.testing.assert_array_equal(y, s.labels[idx])
    np.testing.assert_array_equal(x, normalize(s.images[idx]))  # no augmentation at all
    # drop-last and the step count across epochs
    s = BatchStream(*synthetic_images(70), batch_size=16, total_steps=9, translate=0)
    assert s.steps_per_epoch == 4 and len(s) == 9 and s.epochs == 3
    assert s.indices(8)[0] == 2
    with pytest.raises(IndexError):
        s.batch(9)


def test_alternating_flip_is_on_the_width_axis():
    s = _stream(translate=0, altflip=True, total_steps=8)
    d0, d1 = s.draws(0), s.draws(1)
    np.testing.assert_array_equal(d0.flip, d1.flip)           # one base mask for all epochs
    assert 0.2 < d0.flip.mean() < 0.8
    assert not d0.parity_flip and d1.parity_flip
    for step in (0, 4):                                        # epoch 0 and epoch 1
        epoch, idx = s.indices(step)
        x, _ = s.batch(step)
        plain = normalize(s.images[idx])
        for k, i in enumerate(idx):
            want_flip = bool(d0.flip[i]) ^ (epoch % 2 == 1)
            want = plain[k, :, ::-1, :] if want_flip else plain[k]
            np.testing.assert_array_equal(x[k], want)
    # the W axis: NHWC axis 2 is NCHW axis 3
    x, _ = s.batch(0)
    np.testing.assert_array_equal(to_nchw(mirror(x)), to_nchw(x)[..., ::-1])
    np.testing.assert_array_equal(to_nhwc(to_nchw(x)), x)


def test_random_flip_without_altflip_redraws_each_epoch():
    s = _stream(translate=0, altflip=False, total_steps=8)
    assert not np.array_equal(s.draws(0).flip, s.draws(1).flip)
    assert not s.draws(1).parity_flip


def test_translate_is_a_reflect_padded_crop():
    s = _stream(translate=2, flip=False)
    d = s.draws(0)
    assert d.shifts.min() == -2 and d.shifts.max() == 2
    _, idx = s.indices(0)
    x, _ = s.batch(0)
    plain = normalize(s.images[idx])
    pad = np.pad(plain, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for k, i in enumerate(idx):
        sy, sx = d.shifts[i]
        np.testing.assert_array_equal(x[k], pad[k, 2 + sy:34 + sy, 2 + sx:34 + sx])
        # positive sy samples lower rows (H axis), positive sx columns to the right (W axis)
        np.testing.assert_array_equal(x[k, 5:25, 5:25], plain[k, 5 + sy:25 + sy, 5 + sx:25 + sx])


def test_cutout_zeroes_one_square_per_image():
    s = _stream(translate=0, flip=False, cutout=12)
    d = s.draws(0)
    _, idx = s.indices(1)
    x, _ = s.batch(1)
    plain = normalize(s.images[idx])
    for k, i in enumerate(idx):
        cy, cx = d.corners[i]
        assert 0 <= cy <= 20 and 0 <= cx <= 20
        mask = np.zeros((32, 32), bool)
        mask[cy:cy + 12, cx:cx + 12] = True
        assert np.all(x[k][mask] == 0)
        np.testing.assert_array_equal(x[k][~mask], plain[k][~mask])


def test_for_recipe_uses_the_recipe_augmentation():
    imgs, labs = synthetic_images(300)
    r = get_recipe("airbench96", batch_size=100)
    s = BatchStream.for_recipe(r, imgs, labs, seed=0)
    assert (s.translate, s.cutout, s.altflip, s.batch_size) == (4, 12, True, 100)
    assert len(s) == r.total_steps(300)
