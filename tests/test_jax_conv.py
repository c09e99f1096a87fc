"""Every conv implementation computes the same convolution and the same gradients; the choice is
overridable; the oneDNN custom calls build, cache and fail cleanly; the CPU description reads
/proc/cpuinfo's model and features."""
import importlib.metadata as md
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from airbench_common.errors import UsageError
from airbench_jax import conv, onednn
from airbench_jax import cpu
from jaxrand import normal


def _onednn_installed() -> bool:
    try:
        md.version("onednn-devel-cpu-gomp")
        return True
    except md.PackageNotFoundError:
        return bool(os.environ.get("DNNLROOT"))


def require_onednn():
    """Skip where oneDNN is not installed; where it is (CI), it must build and load."""
    if not _onednn_installed():
        pytest.skip("oneDNN is not installed (the onednn extra)")
    st = onednn.status()
    assert st.available, st.reason


def _loss(impl, padding):
    def f(x, w):
        y = conv._CONVS[impl](x, w, padding)
        return jnp.sum(jnp.sin(y))          # a non-linear loss so g differs per output
    return f


# 6x6 -> 36 output pixels (im2col dw in 'hybrid'), 3x3 -> 9 (native dw); 2x2 VALID as whitening
@pytest.mark.parametrize("hw,k,padding", [(6, 3, "SAME"), (3, 3, "SAME"), (5, 2, "VALID"),
                                          (4, 2, "SAME")])
@pytest.mark.parametrize("impl", ["matmul", "hybrid", "onednn"])
def test_impl_matches_native_value_and_grads(impl, hw, k, padding):
    if impl == "onednn":
        require_onednn()
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = normal(kx, (3, hw, hw, 5), jnp.float32)
    w = normal(kw, (k, k, 5, 7), jnp.float32) * 0.3
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
    cpu_default = "onednn" if onednn.status().available else "matmul"
    assert conv.resolve_impl("auto") == (cpu_default if jax.default_backend() == "cpu"
                                         else "native")
    monkeypatch.setenv(conv.ENV_VAR, "matmul")
    assert conv.resolve_impl("auto") == "matmul"
    assert conv.resolve_impl("native") == "native"        # an explicit choice beats the env
    monkeypatch.setenv(conv.ENV_VAR, "fft")
    with pytest.raises(UsageError,
                       match="'fft' is not one of auto, onednn, native, matmul, hybrid"):
        conv.resolve_impl("auto")


def test_without_onednn_auto_falls_back_and_an_explicit_choice_says_why(monkeypatch):
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    monkeypatch.setattr(onednn, "status", lambda: onednn.Status(False, "oneDNN not found (x)"))
    assert conv.resolve_impl("auto") == "matmul"
    with pytest.raises(UsageError) as e:
        conv.resolve_impl("onednn")
    msg = str(e.value)
    assert "'onednn' is not available: oneDNN not found (x)" in msg
    assert "pip install 'airbench-jax[onednn]'" in msg and "choose matmul" in msg
    assert "\n" not in msg
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(RuntimeError, match="oneDNN convolutions are not available: oneDNN not"):
        onednn.conv2d_onednn(x, w)


def test_onednn_used_directly_in_a_fresh_process_registers_itself():
    """Calling the oneDNN convolution without going through resolve_impl first (as
    benchmarks/profile_step.py does) still builds and registers the custom calls."""
    import subprocess
    import sys
    require_onednn()
    code = ("import jax, jax.numpy as jnp, numpy as np\n"
            "from airbench_jax import conv\n"
            "x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))\n"
            "y = jax.jit(jax.grad(lambda x, w: conv.conv_onednn(x, w).sum()))(x, w)\n"
            "np.testing.assert_allclose(y, jax.grad(lambda x, w: conv.conv_native(x, w).sum())"
            "(x, w), rtol=1e-6)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_onednn_runs_under_vmap_jit_and_falls_back_for_float64():
    require_onednn()
    kx, kw = jax.random.split(jax.random.PRNGKey(1))
    x = normal(kx, (3, 2, 5, 5, 4), jnp.float32)      # 3 "seeds" of a batch of 2
    w = normal(kw, (3, 3, 3, 4, 6), jnp.float32) * 0.3
    f = lambda x, w: jnp.sum(jnp.sin(conv.conv_onednn(x, w)))
    val, (gx, gw) = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1))))(x, w)
    for i in range(3):
        v_ref, (gx_ref, gw_ref) = jax.value_and_grad(
            lambda x, w: jnp.sum(jnp.sin(conv.conv_native(x, w))), argnums=(0, 1))(x[i], w[i])
        np.testing.assert_allclose(val[i], v_ref, rtol=1e-5)
        np.testing.assert_allclose(gx[i], gx_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gw[i], gw_ref, rtol=1e-4, atol=1e-5)
    # float64 (the numerics' references) is not a oneDNN type: im2col computes it, exactly
    with jax.enable_x64(True):
        x64, w64 = x[0].astype(jnp.float64), w[0].astype(jnp.float64)
        y = conv.conv_onednn(x64, w64)
        assert y.dtype == jnp.float64
        np.testing.assert_array_equal(y, conv.conv_matmul(x64, w64))
    # one kernel per pass, none of them oneDNN's slow reference loops
    passes = onednn.kernels((2, 5, 5, 4), (3, 3, 4, 6)).split(" | ")
    assert len(passes) == 3 and not any(p.startswith("ref") for p in passes), passes


def test_onednn_build_is_cached_and_failures_are_one_line(tmp_path, monkeypatch):
    require_onednn()
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache"))
    lib = onednn.build()
    assert lib.parent == tmp_path / "cache" and lib.is_file()
    mtime = lib.stat().st_mtime_ns
    assert onednn.build() == lib and lib.stat().st_mtime_ns == mtime   # cached, not rebuilt
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler 'no-such-c\\+\\+' on PATH"):
        onednn.build(cxx="no-such-c++")
    # a source that does not compile: a one-line reason, nothing left in the cache
    bad = tmp_path / "bad.cc"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(onednn, "SOURCE", bad)
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache2"))
    with pytest.raises(RuntimeError, match="compiling bad.cc failed") as e:
        onednn.build()
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path / "cache2") == []
    # no oneDNN anywhere
    monkeypatch.setattr(onednn, "_roots", lambda: [tmp_path])
    with pytest.raises(RuntimeError, match="oneDNN not found"):
        onednn.build()


def test_cpu_info_reports_features(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                    "flags\t\t: fpu amx_bf16 avx2 fma avx512f avx512_bf16 amx_tile amx_int8\n\n"
                    "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                    "flags\t\t: fpu\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/cpuinfo" else p, *a, **k))
    cpu.cpu_info.cache_clear()
    try:
        got = cpu.cpu_info()
        assert got["model"] == "Intel(R) Xeon(R) Platinum 8481C"
        assert got["logical_cpus"] == cpu.logical_cpus() >= 1
        assert got["features"] == ["AVX2", "FMA", "AVX-512", "AVX512-BF16", "AMX", "AMX-BF16"]
        assert cpu.describe().startswith("Intel(R) Xeon(R) Platinum 8481C, ")
    finally:
        cpu.cpu_info.cache_clear()
    assert cpu.reported_features(["sse2"]) == []


def test_cli_offers_every_conv_lowering():
    """The JAX CLI's --conv-impl choices are the lowerings airbench_jax.conv implements."""
    from airbench_common import cli
    from airbench_jax.workload import WORKLOAD
    from airbench_jax import conv
    from parity import lockstep
    opt = next(a for a in cli.build_parser(WORKLOAD)._actions if "--conv-impl" in a.option_strings)
    assert tuple(opt.choices) == tuple(conv.IMPLS) == tuple(lockstep.CONV_IMPLS)


def test_evaluation_keeps_onednn_and_runs_im2col_nets_with_the_native_conv(monkeypatch):
    from flax import nnx
    from airbench_common import get_recipe
    from airbench_jax.model import make_net
    from airbench_jax.conv import eval_impl
    from airbench_jax.evaluation import eval_graphdef
    assert [eval_impl(t, "auto") for t in ("onednn", "native", "matmul", "hybrid")] == [
        "onednn", "native", "native", "native"]
    assert eval_impl("onednn", "matmul") == "matmul"        # $AIRBENCH_JAX_EVAL_CONV forces
    monkeypatch.delenv("AIRBENCH_JAX_EVAL_CONV", raising=False)
    r = get_recipe("airbench94", widths=(8, 8, 8))
    for trained, want in (("matmul", "native"), ("onednn", "onednn")):
        if trained == "onednn":
            require_onednn()
        g, p, rest = nnx.split(make_net(r, jax.random.PRNGKey(0), conv_impl=trained),
                               nnx.Param, ...)
        net = nnx.merge(eval_graphdef(g, p, rest), p, rest)
        assert net.conv_impl == want and net.group1.conv1.impl == want


def test_an_installed_but_unusable_onednn_is_said_once_and_recorded(monkeypatch, capsys):
    from airbench_jax.finish import onednn_flag
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    monkeypatch.setattr(onednn, "status", lambda: onednn.Status(False, "compiling x failed"))
    monkeypatch.setattr(onednn, "find_onednn", lambda: ("inc", "lib"))
    onednn.warn_fallback.cache_clear()
    try:
        if jax.default_backend() == "cpu":
            assert conv.resolve_impl("auto") == "matmul"
            conv.resolve_impl("auto")
            err = capsys.readouterr().err.splitlines()
            assert err == ["airbench_jax: oneDNN convolutions unavailable (compiling x failed); "
                           "JAX uses im2col convolutions, ~1.5x slower"]
            assert onednn_flag("matmul") == {"onednn": "unavailable: compiling x failed"}
        # not installed at all: im2col is the documented default, nothing to say
        onednn.warn_fallback.cache_clear()
        monkeypatch.setattr(onednn, "find_onednn", lambda: None)
        conv.resolve_impl("auto")
        assert capsys.readouterr().err == ""
    finally:
        onednn.warn_fallback.cache_clear()


def test_run_records_name_the_onednn_that_ran():
    from airbench_jax.finish import onednn_flag
    require_onednn()
    assert onednn_flag("onednn") == {"onednn": onednn.status().onednn_version}
    assert onednn.status().onednn_version.split(" ")[0].count(".") == 2


def test_onednn_convolutions_xla_runs_side_by_side_give_the_same_results():
    """Independent custom calls of one shape (as TTA's plain and mirrored passes) may run at the
    same time on XLA's threads; each must still compute its own convolution."""
    require_onednn()
    ks = jax.random.split(jax.random.PRNGKey(3), 5)
    xs = [normal(k, (16, 15, 15, 32), jnp.float32) for k in ks[:4]]
    w = normal(ks[4], (3, 3, 32, 32), jnp.float32) * 0.1

    @jax.jit
    def four(a, b, c, d, w):
        return [conv.conv_onednn(v, w) for v in (a, b, c, d)]
    for _ in range(3):
        for got, x in zip(four(*xs, w), xs):
            np.testing.assert_allclose(got, conv.conv_native(x, w), rtol=1e-4, atol=1e-4)


def test_tta_logits_with_onednn_match_the_native_convolution():
    """TTA level 2 runs six independent forward passes that XLA schedules side by side; before
    the custom calls ran one at a time, concurrent executions of one oneDNN primitive raced and
    gave logits 18% off at full width (parity.numerics' TTA rows caught it)."""
    from flax import nnx
    from airbench_common import get_recipe
    from airbench_jax.model import make_net
    from airbench_jax.evaluation import eval_logits
    require_onednn()
    r = get_recipe("airbench94")
    x = normal(jax.random.PRNGKey(0), (32, 32, 32, 3), jnp.float32)
    out = {}
    for impl in ("native", "onednn"):
        g, p, rest = nnx.split(make_net(r, jax.random.PRNGKey(0), conv_impl=impl),
                               nnx.Param, ...)
        out[impl] = jax.jit(eval_logits, static_argnums=(0, 4))(g, p, rest, x, 2)[1]
    np.testing.assert_allclose(out["onednn"], out["native"], rtol=1e-4,
                               atol=1e-4 * float(jnp.abs(out["native"]).max()))
