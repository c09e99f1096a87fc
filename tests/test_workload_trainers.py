"""The Workload interface's model and optimizer parts (airbench_common.workload), on both
frameworks: each implements all of it, and on a tiny net built from the same upstream-named arrays
they agree (forward logits, TTA logits, one step, float64 references, Newton-Schulz, Muon's
renormalization, the learning rates); steppers run n steps; the dtypes follow a policy."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flax")

from airbench_common import precision as P  # noqa: E402
from airbench_common import workload as W  # noqa: E402
from airbench_common.workload import get_workload  # noqa: E402
from parity.numerics.batches import normalize, synthetic_images  # noqa: E402
from parity.numerics.inputs import scaled_recipe  # noqa: E402
from parity.numerics.setting import setup_precision  # noqa: E402

FRAMEWORKS = ("jax", "torch")
TRAINER = ("arrays", "ema_arrays", "load_arrays", "forward", "step", "stepper", "logits",
           "proxy_arrays", "dtypes")
WORKLOAD = ("devices", "precision", "run", "warmup", "from_arrays", "from_init",
            "whitening_filters", "newton_schulz", "muon_step", "learning_rates", "compile_clock",
            "set_precision", "backend_info")


@pytest.fixture(scope="module")
def pair():
    setup_precision()
    r = scaled_recipe("airbench94", 1 / 16, batch_size=16)
    imgs, labels = synthetic_images(48, seed=1)
    x = normalize(imgs).astype(np.float32)
    torch_t = get_workload("torch").from_init(r, 48, x, seed=0, channels_last=False)
    arrays = torch_t.arrays()
    jax_t = get_workload("jax").from_arrays(r, 48, arrays)
    return r, torch_t, jax_t, arrays, x[:16], labels[:16]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_workload_implements_the_whole_interface(fw):
    wl = get_workload(fw)
    for name in WORKLOAD:
        assert getattr(type(wl), name) is not getattr(W.Workload, name), name
    trainer = type(wl.from_arrays(scaled_recipe("airbench94", 1 / 16), 50000,
                                  _arrays_of("airbench94")))
    for name in TRAINER:
        assert getattr(trainer, name) is not getattr(W.Trainer, name), name


def _arrays_of(name):
    from parity.numerics.inputs import reference_weights
    r = scaled_recipe(name, 1 / 16)
    return reference_weights(r, normalize(synthetic_images(16, seed=2)[0]))


def test_same_arrays_same_logits_and_loss(pair):
    r, torch_t, jax_t, arrays, x, y = pair
    for train in (False, True):
        t, j = torch_t.forward(x, y, train), jax_t.forward(x, y, train)
        np.testing.assert_allclose(j["logits"], t["logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(j["loss"], t["loss"], rtol=1e-5)
    np.testing.assert_allclose(jax_t.logits(x, 0), torch_t.logits(x, 0), atol=1e-5)
    for k, v in arrays.items():                     # arrays() round-trips through JAX
        np.testing.assert_array_equal(jax_t.arrays()[k], v, err_msg=k)


def test_float64_trainers_agree_far_below_float32(pair):
    """precision='float64': each side's float64 reference (JAX switches to x64 mode itself)."""
    r, _, _, arrays, x, y = pair
    t = get_workload("torch").from_arrays(r, 48, arrays, precision="float64")
    j = get_workload("jax").from_arrays(r, 48, arrays, precision="float64")
    tf, jf = t.forward(x, y, train=False), j.forward(x, y, train=False)
    assert jf["logits"].dtype == tf["logits"].dtype == np.float64
    np.testing.assert_allclose(jf["logits"], tf["logits"], rtol=1e-10, atol=1e-10)


def test_optimizer_pieces_agree():
    rng = np.random.default_rng(0)
    jax_wl, torch_wl = get_workload("jax"), get_workload("torch")
    g = rng.standard_normal((48, 20)).astype(np.float32)
    np.testing.assert_allclose(jax_wl.newton_schulz(g, 3, 1e-7, "float32"),
                               torch_wl.newton_schulz(g, 3, 1e-7, "float32"), atol=1e-5)
    p = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal(p.shape).astype(np.float32)
    a, b = jax_wl.muon_step(p, g, 0.0, 0.6), torch_wl.muon_step(p, g, 0.0, 0.6)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b), np.sqrt(8), rtol=1e-5)   # the renormalization
    r = scaled_recipe("airbench94_muon", 1 / 16)
    tl, jl = torch_wl.learning_rates(r, 5000), jax_wl.learning_rates(r, 5000)
    assert set(tl) == set(jl) == {"whiten_bias", "norm_biases", "head", "filters"}
    for k in tl:
        np.testing.assert_allclose(jl[k], tl[k], rtol=1e-5, atol=1e-9, err_msg=k)


def test_dtypes_follow_the_policy():
    r = scaled_recipe("airbench94_muon", 1 / 16)
    arrays = _arrays_of("airbench94_muon")
    x = normalize(synthetic_images(2, seed=3)[0])
    pol = P.resolve("bfloat16")
    for fw in FRAMEWORKS:
        d = get_workload(fw).from_arrays(r, 50000, arrays, precision=pol).dtypes(x)
        assert d["activations"] == pol.compute and d["newton_schulz"] == pol.newton_schulz, fw
        assert {v for k, v in d["stored"].items() if ".norm" not in k} == {pol.params}, fw


def test_conv_impls_say_what_runs_here():
    jax_wl = get_workload("jax")
    impls = jax_wl.conv_impls()
    assert {"native", "matmul", "onednn"} <= set(impls) and "auto" not in impls
    assert impls["native"] == "" and impls["matmul"] == ""
    assert jax_wl.conv_impl("auto") in impls and jax_wl.conv_impl("native") == "native"
    assert get_workload("torch").conv_impls() == {} and get_workload("torch").conv_impl() is None


@pytest.mark.slow  # two train-step compilations (about a minute on 2 busy cores)
def test_one_step_same_loss_and_weights(pair):
    r, _, _, arrays, x, y = pair
    t = get_workload("torch").from_arrays(r, 48, arrays)
    j = get_workload("jax").from_arrays(r, 48, arrays)
    np.testing.assert_allclose(j.step(x, y), t.step(x, y), rtol=1e-5)
    ta, ja = t.arrays(), j.arrays()
    assert any(not np.array_equal(ta[k], arrays[k]) for k in arrays)   # the step moved weights
    for k in ta:
        np.testing.assert_allclose(ja[k], ta[k], atol=1e-4, rtol=1e-3, err_msg=k)


@pytest.mark.slow
def test_steppers_run_n_steps_and_load_arrays_restores(pair):
    r, _, _, arrays, x, y = pair
    j = get_workload("jax").from_arrays(r, 48, arrays)
    run, compile_seconds = j.stepper(x, y)
    assert compile_seconds > 0
    run(2)
    assert int(j.state.step) == 2
    j.load_arrays(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(j.arrays()[k], v, err_msg=k)
    t = get_workload("torch").from_arrays(r, 48, arrays)
    run, compile_seconds = t.stepper(x, y)
    assert compile_seconds is None
    run(3)
    assert t.state.step == 3
    assert any(not np.array_equal(t.arrays()[k], arrays[k]) for k in arrays)
