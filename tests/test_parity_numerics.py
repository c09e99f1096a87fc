"""Numerical equivalence of airbench_jax and airbench_torch (parity.numerics) at small widths.

Every recipe's net: conversion, logits (train and eval mode), loss, every gradient, BatchNorm
running stats, and the learning rate each framework applies per group over a whole run. One
recipe each for what is shared between recipes: TTA levels 0-2 (airbench94),
full train steps with Muon, freezing of the whitening bias and renorm (airbench94_muon), SGD steps
with lookahead (airbench94), Newton-Schulz and the whitening init. Tolerances:
parity.numerics.tolerances.
"""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from airbench_common import recipe_names  # noqa: E402
from airbench_common.workload import get_workload  # noqa: E402
from parity.numerics import checks, lr, steps  # noqa: E402
from parity.numerics.batches import BatchStream, normalize, synthetic_images  # noqa: E402
from parity.numerics.inputs import reference_weights, scaled_recipe  # noqa: E402
from parity.numerics.rows import Report  # noqa: E402
from parity.numerics.setting import setup_precision  # noqa: E402
from parity.numerics.tolerances import compare  # noqa: E402

SCALE = 1 / 16      # widths (4,16,16) .. (8,24,32)
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def _precision():
    setup_precision()


@pytest.fixture(scope="module")
def data():
    imgs, labs = synthetic_images(256, seed=0)
    return imgs, labs


def _setup(name, data, **over):
    imgs, labs = data
    r = scaled_recipe(name, SCALE, **over)
    s = BatchStream(imgs, labs, batch_size=BATCH, seed=0, flip=r.flip, altflip=r.altflip,
                    translate=r.translate, cutout=r.cutout, total_steps=2)
    w = normalize(imgs)
    return r, reference_weights(r, w, seed=0), s.batch(0), s.batch(1), w


def _assert_ok(rep):
    bad = [f"{r.check} [{r.impl}]: max_abs {r.max_abs:.2e} rel {r.rel:.2e} tol {r.tol} {r.note}"
           for r in rep.failures]
    assert not bad, "\n".join(bad)
    assert rep.rows


# The default suite keeps one net per forward code path: airbench94 (depth 2, both JAX convs),
# airbench94_muon (logits scaled by 1/widths[2], unit-std head) and airbench96 (depth 3, residual,
# BatchNorm momentum 0.9). airbench93/95 are airbench94's net at other widths and
# airbench96_faster is airbench96's net (its proxy is off here): run in the slow suite.
SAME_NET_AS = {"airbench93": "airbench94", "airbench95": "airbench94",
               "airbench96_faster": "airbench96"}


# airbench94_muon's net runs in the slow suite too: in the default suite test_muon_steps_freeze_renorm
# compares its loss and every group's update over two full steps from the same weights.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in SAME_NET_AS or n == "airbench94_muon"
                                  else n for n in recipe_names()])
def test_forward_backward(name, data):
    r, arrays, (x, y), _, _ = _setup(name, data, filter_keep=0)
    rep = Report()
    # one JAX lowering here: tests/test_jax_core.py holds matmul to native and
    # tests/test_jax_conv.py onednn to native; the full table (parity.numerics) runs all three
    impls = ("matmul",)
    checks.check_forward(rep, name, arrays, r, x, y, impls)
    seen = {row.check for row in rep.rows}
    assert {"logits train mode", "logits eval mode", "grad 7.weight", "grad 0.bias"} <= seen
    _assert_ok(rep)


def test_slow_forward_recipes_share_a_default_recipes_net():
    """What lets SAME_NET_AS's forward checks run only in the slow suite: the recipe differs from
    its default-suite twin only in fields the forward pass does not read (training length,
    optimizer constants, the proxy's data filter) and in the widths."""
    import dataclasses
    from airbench_common import get_recipe
    not_forward = {"name", "notes", "widths", "epochs", "lr", "weight_decay", "filter_keep"}
    for slow, twin in SAME_NET_AS.items():
        a, b = dataclasses.asdict(get_recipe(slow)), dataclasses.asdict(get_recipe(twin))
        assert {k for k in a if a[k] != b[k]} <= not_forward, (slow, twin)


@pytest.mark.parametrize("name", recipe_names())
def test_lr_schedules_whole_run(name, data):
    r, _, _, _, _ = _setup(name, data, filter_keep=0)
    rep = Report()
    lr.check_lrs(rep, name, r, n_train=50000)
    _assert_ok(rep)


def test_tta_levels(data):
    r, arrays, (x, y), _, _ = _setup("airbench94", data)
    rep = Report()
    checks.check_tta(rep, "airbench94", arrays, r, x, ("matmul",))
    assert len(rep.rows) == 3
    _assert_ok(rep)


def test_muon_steps_freeze_renorm(data):
    r, arrays, (x, y), (x2, y2), _ = _setup("airbench94_muon", data)
    rep = Report()
    jt = get_workload("jax").from_arrays(r, 50000, arrays)
    steps.check_steps(rep, r.name, arrays, r, 50000, x, y, x2, y2, jtemplate=jt)
    steps.check_freeze(rep, r.name, arrays, r, 50000, x, y, jt)
    steps.check_renorm(rep, r.name, arrays, r)
    groups = {row.check.split("[")[1].split("]")[0] for row in rep.rows if "delta [" in row.check}
    assert groups == {"whiten_bias", "norm_biases", "head", "filters"}
    # each side's float64 run is float64 throughout (BatchNorm, head, loss, Newton-Schulz): with
    # no cutout ties, the two algorithms agree far below float32 rounding
    f64 = [row for row in rep.rows if "float64 both" in row.check]
    assert len(f64) == 4 and max(row.rel for row in f64) < 1e-5, [(x.check, x.rel) for x in f64]
    _assert_ok(rep)


def test_sgd_steps_and_lookahead(data):
    r, arrays, (x, y), (x2, y2), _ = _setup("airbench94", data)
    rep = Report()
    jt = get_workload("jax").from_arrays(r, 50000, arrays)
    steps.check_steps(rep, r.name, arrays, r, 50000, x, y, x2, y2, jtemplate=jt)
    steps.check_lookahead(rep, r.name, arrays, r, 50000, x, y, jt)
    assert any("lookahead" in row.check for row in rep.rows)
    _assert_ok(rep)


def test_newton_schulz_and_whitening(data):
    rep = Report()
    steps.check_newton_schulz(rep)
    r, _, _, _, w = _setup("airbench94", data)
    checks.whitening_compare(rep, "airbench94", r, w)
    _assert_ok(rep)


def test_a_real_difference_is_caught(data):
    """The checks have teeth: a one-ulp-scale change passes, a 1e-3 change of one weight fails."""
    r, arrays, (x, y), _, _ = _setup("airbench94", data)
    jax_wl = get_workload("jax")
    t = get_workload("torch").from_arrays(r, 50000, arrays).forward(x, y, train=False)
    j = jax_wl.from_arrays(r, 50000, arrays).forward(x, y, train=False)
    arrays["7.weight"] = arrays["7.weight"] * np.float32(1.001)
    j_bad = jax_wl.from_arrays(r, 50000, arrays).forward(x, y, train=False)
    assert compare(j["logits"], t["logits"], "logits_eval")["ok"]
    assert not compare(j_bad["logits"], t["logits"], "logits_eval")["ok"]


# ---------------------------------------------------------------- inputs the same on every machine
from parity.numerics import inputs as ni  # noqa: E402


def _names_shapes(r):
    from airbench_torch.net import net_for_recipe
    return {k: tuple(v.shape) for k, v in net_for_recipe(r).state_dict().items()}


@pytest.mark.parametrize("name", ["airbench94", "airbench96", "airbench94_muon"])
def test_net_shapes_are_the_torch_nets_state_dict(name):
    """The shared weights' names, shapes and order (the order the reference draws follow) are
    those of airbench_torch's net, and the trainable ones those it trains."""
    from airbench_torch.net import net_for_recipe
    from parity.numerics.groups import trainable_names
    r = scaled_recipe(name, 1 / 8)
    net = net_for_recipe(r)
    assert list(ni.net_shapes(r).items()) == list(_names_shapes(r).items())
    assert trainable_names(ni.net_shapes(r), r) == [k for k, p in net.named_parameters()
                                                     if p.requires_grad]


def test_inputs_do_not_depend_on_eigh_signs_or_last_bits(data, monkeypatch):
    """What differs between machines (an eigenvector's sign, float64 last bits of a reduction)
    must not reach the inputs."""
    r = scaled_recipe("airbench96", SCALE)
    w = normalize(data[0])
    shapes = _names_shapes(r)
    ref = ni.reference_arrays(r, w, shapes, seed=0)
    real_eigh = np.linalg.eigh

    def other_machine_eigh(cov):
        ev, vec = real_eigh(cov)
        flips = np.where(np.arange(vec.shape[1]) % 3 == 0, -1.0, 1.0)   # LAPACK's sign choice
        return ev * (1 + 2.0 ** -51), vec * flips * (1 + 2.0 ** -51)     # and float64 last bits

    monkeypatch.setattr(ni.np.linalg, "eigh", other_machine_eigh)
    other = ni.reference_arrays(r, w, shapes, seed=0)
    assert ni.inputs_sha256(ref) == ni.inputs_sha256(other)
    assert [k for k in ref if not np.array_equal(ref[k], other[k])] == []


def test_quantize_absorbs_float64_last_bits_but_not_real_changes():
    x = np.random.default_rng(0).standard_normal(100_000)
    assert np.array_equal(ni.quantize(x), ni.quantize(x * (1 + 2.0 ** -50)))
    assert not np.array_equal(ni.quantize(x), ni.quantize(x * (1 + 2.0 ** -18)))
    assert ni.quantize(x).dtype == np.float32


def test_whitening_filters_canonical_and_whitening():
    """The float64 filters whiten the patches (W C W^T ~ I for the unit-eigenvalue scaling) and
    each eigenvector's largest component is positive."""
    imgs, _ = synthetic_images(64, seed=1)
    w = normalize(imgs)
    f = ni.whitening_filters64(w, 2, 0.0)
    half = f.shape[0] // 2
    v = f[:half].reshape(half, -1)
    cov = ni.patch_covariance64(w, 2)
    assert np.allclose(v @ cov @ v.T, np.eye(half), atol=1e-8)
    assert np.array_equal(f[half:], -f[:half])
    piv = np.abs(v).argmax(1)
    assert np.all(v[np.arange(half), piv] > 0)


# computed on this project's machines (AMD EPYC AVX2 and AVX-512 kinds); a machine that gives
# another hash gives the numerics checks other inputs, which this test exists to catch
SYNTH_SHA = {
    "airbench94": "27863a91ee6e706f41acb95489791bf47a9a2f3104f30680566f636633dfc0d0",
    "airbench96": "8254cd732de2813e820330bddb60b6085d5d3867bb81ab6ed6e3e91cdf9e81be",
}


@pytest.mark.parametrize("name", sorted(SYNTH_SHA))
def test_inputs_hash_is_the_committed_one(name, data):
    r = scaled_recipe(name, SCALE)
    w = normalize(data[0])
    arrays = ni.reference_arrays(r, w, _names_shapes(r), seed=0)
    s = BatchStream(data[0], data[1], batch_size=BATCH, seed=0, flip=r.flip, altflip=r.altflip,
                    translate=r.translate, cutout=r.cutout, total_steps=2)
    x, y = s.batch(0)
    got = ni.inputs_sha256(arrays, x, y, ni.well_conditioned(x))
    assert got == SYNTH_SHA[name], got


def test_row_margin_and_floor_rule():
    rep = Report()
    b = np.ones(10)
    # passes by tolerance: margin = bound / max_abs
    row = rep.add("r", "c", b + 1e-5, b, "grad")
    assert row.ok and row.via == "tol" and row.margin == pytest.approx((1e-8 + 1e-3) / 1e-5)
    # beyond tolerance but within 4x the floor of either side's float64 reference
    row = rep.add("r", "c", b + 2e-3, b, "grad", ref64=b + 1e-3, jax64=b + 2e-3 + 1e-3)
    assert row.ok and row.via == "floor" and row.floor == pytest.approx(1e-3)
    assert row.margin == pytest.approx(2.0)
    # the same row on a well-conditioned input may not use the floor
    row = rep.add("r", "c", b + 2e-3, b, "grad", ref64=b + 1e-3, jax64=b + 2e-3 + 1e-3,
                  allow_floor=False)
    assert not row.ok and row.via == "" and row.margin < 1
    # beyond both
    row = rep.add("r", "c", b + 1e-2, b, "grad", ref64=b + 1e-3)
    assert not row.ok


@pytest.mark.slow
def test_full_width_depth3_forward_backward():
    """Full-width airbench96 (depth 3): logits, loss, every gradient, running stats, on real images
    and on the well-conditioned batch, and both sides' float64 results against each other."""
    rep = Report()
    checks.run_recipe_checks(rep, "airbench96", batch=8, whiten_n=1000, steps=False, lrs=False,
                         impls=("matmul",), log=False)
    _assert_ok(rep)
    wc = [r for r in rep.rows if "[well-conditioned]" in r.check]
    f64 = [r for r in rep.rows if "float64 both" in r.check]
    assert len(wc) > 20 and len(f64) == 2 and all(r.via == "tol" for r in f64)
    # every row that needed the float32 floor says why
    assert all(r.note for r in rep.rows if r.via == "floor")


@pytest.mark.slow
def test_the_command_end_to_end_writes_rows_and_provenance(tmp_path):
    """`python -m parity.numerics` at a small width: exit 0, and a JSON whose rows all pass and
    whose meta says which code, versions, machine and inputs made it."""
    import json

    from airbench_common.env import code_version
    from parity.numerics.__main__ import main
    out = tmp_path / "n.json"
    assert main(["--recipe", "airbench94", "--width-scale", "0.0625", "--batch", "8",
                 "--data", "synthetic", "--whiten-images", "64", "--impls", "matmul",
                 "--no-steps", "--no-bf16", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["n_fail"] == 0 and got["n_rows"] == len(got["rows"]) > 20
    assert got["meta"]["code"] == code_version() and got["meta"]["versions"]["jax"]
    assert len(got["meta"]["recipes"]["airbench94"]["inputs_sha256"]) == 64
