"""Numerical equivalence of airbench_jax and airbench_torch (parity.numerics) at small widths.

Every recipe's net: conversion, logits (train and eval mode), loss, every gradient, BatchNorm
running stats, and the learning rate each framework applies per group over a whole run. One
recipe each for what is shared between recipes: TTA levels 0-2 and the native conv (airbench94),
full train steps with Muon, freezing of the whitening bias and renorm (airbench94_muon), SGD steps
with lookahead (airbench94), Newton-Schulz and the whitening init. Tolerances: parity.tolerances.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from airbench_common import recipe_names  # noqa: E402
from parity import numerics as nm  # noqa: E402
from parity.batches import BatchStream, normalize, synthetic_images, to_nchw  # noqa: E402

SCALE = 1 / 16      # widths (4,16,16) .. (8,24,32)
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def _precision():
    nm.setup_precision()


@pytest.fixture(scope="module")
def data():
    imgs, labs = synthetic_images(256, seed=0)
    return imgs, labs


def _setup(name, data, **over):
    imgs, labs = data
    r = nm.scaled_recipe(name, SCALE, **over)
    s = BatchStream(imgs, labs, batch_size=BATCH, seed=0, flip=r.flip, altflip=r.altflip,
                    translate=r.translate, cutout=r.cutout, total_steps=2)
    w = normalize(imgs)
    tnet = nm.reference_torch_net(r, to_nchw(w), seed=0)
    return r, tnet, s.batch(0), s.batch(1), w


def _assert_ok(rep):
    bad = [f"{r.check} [{r.impl}]: max_abs {r.max_abs:.2e} rel {r.rel:.2e} tol {r.tol} {r.note}"
           for r in rep.failures]
    assert not bad, "\n".join(bad)
    assert rep.rows


@pytest.mark.parametrize("name", recipe_names())
def test_forward_backward(name, data):
    r, tnet, (x, y), _, _ = _setup(name, data, filter_keep=0)
    rep = nm.Report()
    impls = ("native", "matmul") if name == "airbench94" else ("matmul",)
    nm.check_forward(rep, name, tnet, r, x, y, impls)
    checks = {row.check for row in rep.rows}
    assert {"logits train mode", "logits eval mode", "grad 7.weight", "grad 0.bias"} <= checks
    _assert_ok(rep)


@pytest.mark.parametrize("name", recipe_names())
def test_lr_schedules_whole_run(name, data):
    r, tnet, _, _, _ = _setup(name, data, filter_keep=0)
    rep = nm.Report()
    nm.check_lrs(rep, name, r, tnet, n_train=50000)
    _assert_ok(rep)


def test_tta_levels(data):
    r, tnet, (x, y), _, _ = _setup("airbench94", data)
    rep = nm.Report()
    nm.check_tta(rep, "airbench94", tnet, r, x, ("matmul",))
    assert len(rep.rows) == 3
    _assert_ok(rep)


def test_muon_steps_freeze_renorm(data):
    r, tnet, (x, y), (x2, y2), _ = _setup("airbench94_muon", data)
    rep = nm.Report()
    jt = nm.jax_state(r, 50000, nm.convert.torch_to_arrays(tnet), "matmul", "float32")
    nm.check_steps(rep, r.name, tnet, r, 50000, x, y, x2, y2, jtemplate=jt)
    nm.check_freeze(rep, r.name, tnet, r, 50000, x, y, jt)
    nm.check_renorm(rep, r.name, tnet, r)
    groups = {row.check.split("[")[1].split("]")[0] for row in rep.rows if "delta [" in row.check}
    assert groups == {"whiten_bias", "norm_biases", "head", "filters"}
    # each side's float64 run is float64 throughout (BatchNorm, head, loss, Newton-Schulz): with
    # no cutout ties, the two algorithms agree far below float32 rounding
    f64 = [row for row in rep.rows if "float64 both" in row.check]
    assert len(f64) == 4 and max(row.rel for row in f64) < 1e-5, [(x.check, x.rel) for x in f64]
    _assert_ok(rep)


def test_sgd_steps_and_lookahead(data):
    r, tnet, (x, y), (x2, y2), _ = _setup("airbench94", data)
    rep = nm.Report()
    jt = nm.jax_state(r, 50000, nm.convert.torch_to_arrays(tnet), "matmul", "float32")
    nm.check_steps(rep, r.name, tnet, r, 50000, x, y, x2, y2, jtemplate=jt)
    nm.check_lookahead(rep, r.name, tnet, r, 50000, x, y, jt)
    assert any("lookahead" in row.check for row in rep.rows)
    _assert_ok(rep)


def test_newton_schulz_and_whitening(data):
    rep = nm.Report()
    nm.check_newton_schulz(rep)
    r, _, _, _, w = _setup("airbench94", data)
    nm.whitening_compare(rep, "airbench94", r, w)
    _assert_ok(rep)


def test_a_real_difference_is_caught(data):
    """The checks have teeth: a one-ulp-scale change passes, a 1e-3 change of one weight fails."""
    r, tnet, (x, y), _, _ = _setup("airbench94", data)
    arrays = nm.convert.torch_to_arrays(tnet)
    j = nm.jax_forward(nm.jax_net(r, arrays, "matmul"), r, x, y, train=False)
    arrays["7.weight"] = arrays["7.weight"] * np.float32(1.001)
    j_bad = nm.jax_forward(nm.jax_net(r, arrays, "matmul"), r, x, y, train=False)
    t = nm.torch_forward(tnet, r, to_nchw(x), y, train=False)
    assert nm.compare(j["logits"], t["logits"], "logits_eval")["ok"]
    assert not nm.compare(j_bad["logits"], t["logits"], "logits_eval")["ok"]
