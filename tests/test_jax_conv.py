"""Every conv implementation computes the same convolution and the same gradients; the choice is
overridable; the CPU description parses /proc/cpuinfo."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from airbench_common.errors import UsageError
from airbench_jax import conv
from airbench_jax.cpu import parse_cpuinfo


def _loss(impl, padding):
    def f(x, w):
        y = conv._CONVS[impl](x, w, padding)
        return jnp.sum(jnp.sin(y))          # a non-linear loss so g differs per output
    return f


# 6x6 -> 36 output pixels (im2col dw in 'hybrid'), 3x3 -> 9 (native dw); 2x2 VALID as whitening
@pytest.mark.parametrize("hw,k,padding", [(6, 3, "SAME"), (3, 3, "SAME"), (5, 2, "VALID"),
                                          (4, 2, "SAME")])
@pytest.mark.parametrize("impl", ["matmul", "hybrid"])
def test_impl_matches_native_value_and_grads(impl, hw, k, padding):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (3, hw, hw, 5), jnp.float32)
    w = jax.random.normal(kw, (k, k, 5, 7), jnp.float32) * 0.3
    ref = conv.conv_native(x, w, padding)
    np.testing.assert_allclose(conv._CONVS[impl](x, w, padding), ref, rtol=1e-5, atol=1e-5)
    g_ref = jax.grad(_loss("native", padding), argnums=(0, 1))(x, w)
    g = jax.jit(jax.grad(_loss(impl, padding), argnums=(0, 1)))(x, w)
    for a, b in zip(g, g_ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_hybrid_uses_both_weight_gradient_lowerings():
    # the threshold sits between the layer sizes the test above covers
    assert 3 * 3 < conv.HYBRID_MIN_PIXELS <= 6 * 6


def test_resolve_impl_auto_env_and_bad_value(monkeypatch):
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    assert conv.resolve_impl("auto") == ("matmul" if jax.default_backend() == "cpu" else "native")
    monkeypatch.setenv(conv.ENV_VAR, "matmul")
    assert conv.resolve_impl("auto") == "matmul"
    assert conv.resolve_impl("native") == "native"        # an explicit choice beats the env
    monkeypatch.setenv(conv.ENV_VAR, "fft")
    with pytest.raises(UsageError, match="'fft' is not one of auto, native, matmul, hybrid"):
        conv.resolve_impl("auto")


def test_parse_cpuinfo_reports_features():
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
            "flags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\n"
            "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu\n")
    info = parse_cpuinfo(text)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert info["logical_cpus"] == 2
    assert info["features"] == ["AVX2", "FMA", "AVX-512", "AVX512-BF16", "AMX", "AMX-BF16"]
    assert parse_cpuinfo("processor : 0\nflags : sse2\n")["features"] == []


def test_cli_offers_every_conv_lowering():
    """The JAX CLI's --conv-impl choices are the lowerings airbench_jax.conv implements."""
    from airbench_jax import __main__ as jax_cli
    from airbench_jax import conv
    assert tuple(jax_cli.CONV_IMPLS) == tuple(conv.IMPLS)
