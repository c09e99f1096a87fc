"""airbench_common.precision without either framework: the named policies, the device defaults,
each part's override and how an overridden policy is named, and the one-line refusals."""
import pytest

from airbench_common import precision as P
from airbench_common.errors import UsageError


def test_defaults_per_device():
    assert P.default_policy_name(False) == "float32" and P.default_policy_name(True) == "upstream"
    cpu, gpu = P.resolve(accelerator=False), P.resolve(accelerator=True)
    assert P.resolve() is cpu      # CPU unless told otherwise
    assert cpu == P.NUMERICS and cpu.to_dict() == dict(
        name="float32", params="float32", compute="float32", batchnorm="float32",
        newton_schulz="float32", tf32="off")
    # upstream's CUDA policy: half weights and activations, float32 BN, bfloat16 NS, TF32 for
    # cuDNN convolutions only (PyTorch's defaults, which upstream does not change)
    assert gpu.to_dict() == dict(name="upstream", params="float16", compute="float16",
                                 batchnorm="float32", newton_schulz="bfloat16", tf32="conv")
    # a named policy wins over the device's default
    assert P.resolve("float32", accelerator=True) is P.POLICIES["float32"]
    assert P.resolve("bfloat16").to_dict() == dict(
        name="bfloat16", params="bfloat16", compute="bfloat16", batchnorm="float32",
        newton_schulz="bfloat16", tf32="conv")


def test_overrides_are_named_and_dtype_sets_params_and_compute():
    p = P.resolve("upstream", dtype="bfloat16", ns_dtype="float32")
    assert (p.params, p.compute, p.newton_schulz) == ("bfloat16", "bfloat16", "float32")
    assert p.name == "upstream+params=bfloat16,compute=bfloat16,newton_schulz=float32"
    assert P.resolve("upstream", dtype="float16") is P.POLICIES["upstream"]  # no change, no rename
    mixed = P.resolve("float32", dtype="bfloat16", param_dtype="float32")
    assert (mixed.params, mixed.compute) == ("float32", "bfloat16")
    assert mixed.name == "float32+compute=bfloat16"   # params asked for, but unchanged


@pytest.mark.parametrize("kw, part, value", [
    (dict(param_dtype="bfloat16"), "params", "bfloat16"),
    (dict(ns_dtype="float16"), "newton_schulz", "float16"),
    (dict(tf32="on"), "tf32", "on"),
    (dict(dtype="float64"), "compute", "float64"),
])
def test_each_part_overrides_only_itself(kw, part, value):
    base = P.POLICIES["float32"]
    p = P.resolve("float32", **kw)
    changed = {k for k in base.to_dict() if getattr(p, k) != getattr(base, k)} - {"name"}
    assert getattr(p, part) == value
    assert changed == ({"params", "compute"} if "dtype" in kw else {part})
    assert p.name.startswith("float32+") and f"{part}={value}" in p.name
    assert P.resolve("float32", bn_dtype="float32") is base        # the one BatchNorm dtype


def test_a_precision_object_is_its_own_base():
    custom = P.resolve("upstream", tf32="off")
    assert P.resolve(custom) is custom
    again = P.resolve(custom, ns_dtype="float32")
    assert again.name == "upstream+tf32=off+newton_schulz=float32" and again.tf32 == "off"


@pytest.mark.parametrize("kw, msg", [
    (dict(policy="fp8"), "precision policy 'fp8' is not one of float32, upstream, bfloat16"),
    (dict(dtype="half"), "--dtype 'half' is not one of float32, bfloat16, float16, float64"),
    (dict(param_dtype="half"),
     "--param-dtype 'half' is not one of float32, bfloat16, float16, float64"),
    (dict(ns_dtype="int8"), "--ns-dtype 'int8' is not one of float32, bfloat16, float16, float64"),
    (dict(tf32="maybe"), "--tf32 'maybe' is not one of off, conv, on"),
    (dict(bn_dtype="float16"), "--bn-dtype 'float16' is not one of float32"),
])
def test_bad_parts_are_one_line_usage_errors(kw, msg):
    with pytest.raises(P.PrecisionError) as e:
        P.resolve(**kw)
    assert str(e.value) == msg and isinstance(e.value, UsageError)


def test_a_side_that_computes_in_its_weights_dtype_refuses_a_mixed_policy():
    mixed = P.resolve("float32", dtype="bfloat16", param_dtype="float32")
    with pytest.raises(P.PrecisionError) as e:
        P.require_same_params_and_compute(mixed, "PyTorch")
    assert str(e.value) == ("precision 'float32+compute=bfloat16': params float32 with compute "
                            "bfloat16 is not supported by the PyTorch side (it computes in the "
                            "dtype it stores); give one --dtype")
    same = P.resolve("upstream")
    assert P.require_same_params_and_compute(same, "PyTorch") is same


def test_constants():
    assert P.DTYPES == ("float32", "bfloat16", "float16", "float64")
    assert P.BN_DTYPES == ("float32",) and P.TF32_MODES == ("off", "conv", "on")
    assert P.EPS == {"float32": 2.0 ** -23, "bfloat16": 2.0 ** -7, "float16": 2.0 ** -10,
                     "float64": 2.0 ** -52}
    assert list(P.POLICIES) == ["float32", "upstream", "bfloat16"]
