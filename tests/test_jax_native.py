"""The oneDNN custom-call library and the evaluation cache, attacked: a process that ends with
oneDNN work in flight exits 0; a damaged or unbuildable library never crashes JAX ('auto' falls
back to im2col with one line, explicit 'onednn' is a one-line UsageError); the evaluation cache
never answers one TTA level with another's logits."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *, env: dict | None = None, timeout: int = 600):
    """Run `code` in a fresh interpreter that imports this checkout's packages."""
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=full, timeout=timeout)


# ----------------------------------------------------------------------------- exit after TTA
_EXIT_SCRIPT = """
import numpy as np
import airbench_jax as ab
from airbench_jax import onednn
impls = ["matmul", "native"] + (["onednn"] if onednn.status().available else [])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 16)
loader = ab.CifarLoader(train=False, batch_size=8, data=(x, y))
for impl in impls:
    net = ab.make_net94(widths=(8, 16, 16), conv_impl=impl)
    for level in (0, 1, 2):
        logits = ab.infer(net, loader, level)
        acc = ab.evaluate(net, loader, level)
        assert logits.shape == (16, 10) and 0 <= acc <= 1, (impl, level)
# the crash's condition: evaluation work still running when the interpreter exits (JAX dispatches
# asynchronously; the results are dropped unread, as in `print(infer(...).shape)`)
big = ab.CifarLoader(train=False, data=(rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8),
                                        rng.integers(0, 10, 400)))
ab.infer(net, big, 2).block_until_ready()
for _ in range(8):
    ab.infer(net, big, 2)
print("ok", *impls)
"""


@pytest.mark.slow
def test_infer_and_evaluate_exit_cleanly_at_every_tta_level_and_lowering(tmp_path):
    """Before: SIGSEGV at exit (139) after TTA inference with oneDNN (exit() destroyed oneDNN's
    primitive cache and JIT-compiled kernels under custom calls still in flight)."""
    # as-trained: evaluation runs each lowering itself (by default im2col nets evaluate 'native')
    proc = _python(_EXIT_SCRIPT, env={"AIRBENCH_JAX_EVAL_CONV": "as-trained",
                                      "AIRBENCH_JAX_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-500:], proc.stderr[-3000:])
    assert proc.stdout.startswith("ok matmul native"), proc.stdout
    assert "exiting" not in proc.stderr, proc.stderr[-2000:]   # no error from a refused call


# ----------------------------------------------------------------------------- evaluation cache
def test_a_bad_tta_level_is_refused_and_never_answers_for_another_level():
    """Before: after infer(net, loader, 1.5) (cached under int(1.5) == 1, compiled as level 2), a
    later infer(net, loader, 1) returned level 2's logits; evaluate(net, loader, 7) returned level
    2's accuracy."""
    import jax
    import numpy as np
    import airbench_jax as ab
    from airbench_common.errors import UsageError
    from airbench_jax import augment as aug
    from airbench_jax import evaluation as T
    from airbench_jax.model import split_net

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 8)
    loader = ab.CifarLoader(train=False, batch_size=8, data=(x, y))
    net = ab.make_net94(widths=(8, 8, 8), conv_impl="native")
    for bad in (1.5, 7, -1, True, 1.0, "1", None):
        with pytest.raises(UsageError, match=r"tta_level .* is not one of 0, 1, 2") as e:
            ab.infer(net, loader, bad)
        assert repr(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="tta_level 7 is not one of 0, 1, 2"):
        ab.evaluate(net, loader, 7)
    g, p, r = split_net(net)
    images = aug.normalize(loader.images)
    for call in (lambda: T.infer_arrays(g, p, r, images, 1.5),
                 lambda: T.infer_both(g, p, r, images, 3),
                 lambda: T.predict(net, images, 1.5),
                 lambda: T.predict_both(net, images, False),
                 lambda: T.accuracy(net, images, y, 2.5),
                 lambda: T.compile_eval(g, p, r, 8, 1.5)):
        with pytest.raises(UsageError, match="is not one of 0, 1, 2"):
            call()
    level1 = np.asarray(ab.infer(net, loader, np.int64(1)))       # numpy ints are ints
    level2 = np.asarray(ab.infer(net, loader, 2))
    want1 = np.asarray(jax.jit(T.eval_logits, static_argnums=(0, 4))(g, p, r, images, 1)[1])
    np.testing.assert_allclose(level1, want1, rtol=1e-5, atol=1e-5)
    assert not np.allclose(level1, level2)
    np.testing.assert_array_equal(np.asarray(ab.infer(net, loader, 1)), level1)
    assert ab.evaluate(net, loader, 1) == float((level1.argmax(1) == y).mean())


def test_check_tta_level():
    from airbench_common.validate import OptionError, check_tta_level
    assert [check_tta_level(v) for v in (0, 1, 2)] == [0, 1, 2]
    for bad in (3, -1, 1.5, 1.0, True, False, "2", None):
        with pytest.raises(OptionError, match="is not one of 0, 1, 2"):
            check_tta_level(bad)
    with pytest.raises(OptionError, match="^--tta-level 9 "):
        check_tta_level(9, "--tta-level")


# ----------------------------------------------------------------------------- the native build
def _require_onednn():
    import importlib.metadata as md
    try:
        md.version("onednn-devel-cpu-gomp")
    except md.PackageNotFoundError:
        if not os.environ.get("DNNLROOT"):
            pytest.skip("oneDNN is not installed (the onednn extra)")
    from airbench_jax import onednn
    if onednn.find_onednn() is None or shutil.which("g++") is None:
        pytest.skip("no oneDNN headers/library or no g++ here")
    return onednn


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    """One real build (~3 s with g++) for this module's tests: (library path, its bytes)."""
    onednn = _require_onednn()
    cache = tmp_path_factory.mktemp("onednn-cache")
    old = os.environ.get(onednn.CACHE_ENV)
    os.environ[onednn.CACHE_ENV] = str(cache)
    try:
        lib = onednn.build(cxx="g++")
    finally:
        if old is None:
            del os.environ[onednn.CACHE_ENV]
        else:
            os.environ[onednn.CACHE_ENV] = old
    return lib, lib.read_bytes()


def _seed_cache(folder: Path, built_library, content: bytes | None = None) -> Path:
    """`folder` holding the built library under its cache name (with `content` instead, e.g. a
    truncated copy), without the check's sidecar."""
    lib, data = built_library
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / lib.name
    target.write_bytes(data if content is None else content)
    target.chmod(0o755)
    return target


_USE_ONEDNN = """
import sys
import numpy as np, jax, jax.numpy as jnp
import airbench_jax as ab
from airbench_jax import conv, onednn
impl = conv.resolve_impl(sys.argv[1] if len(sys.argv) > 1 else "auto")
assert impl == "onednn", (impl, onednn.status())
x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)) * 0.1
g = jax.jit(jax.grad(lambda w: conv.conv_onednn(x, w).sum()))(w)
np.testing.assert_allclose(g, jax.grad(lambda w: conv.conv_native(x, w).sum())(w), rtol=1e-5)
rng = np.random.default_rng(0)
loader = ab.CifarLoader(train=False, data=(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                                           rng.integers(0, 10, 4)))
net = ab.make_net94(widths=(8, 8, 8), conv_impl="onednn")
assert ab.infer(net, loader, 1).shape == (4, 10)
print("ok", onednn.status().library)
"""


# slow suite: two interpreters and a rebuild by g++; the default suite checks the cache's other
# failures in-process (below, and tests/test_jax_conv.py::test_onednn_build_is_cached_and_failures_are_one_line)
@pytest.mark.slow
def test_a_truncated_cached_library_is_rebuilt_and_jax_still_runs(tmp_path, built_library):
    """Before: a truncated cached library killed every JAX run that used oneDNN ('auto' too) with
    SIGBUS (exit 135) when it was loaded."""
    lib, data = built_library
    cache = tmp_path / "cache"
    target = _seed_cache(cache, built_library, data[: len(data) // 3])
    proc = _python(_USE_ONEDNN, env={"AIRBENCH_JAX_CACHE": str(cache), "CXX": "g++"})
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout.strip() == f"ok {target}"
    said = [ln for ln in proc.stderr.splitlines() if "airbench_jax" in ln]
    assert len(said) == 1 and f"{target} was damaged" in said[0] and "SIGBUS" in said[0], said
    assert target.read_bytes() == data                       # rebuilt whole
    side = target.with_name(target.name + ".ok").read_text().split()
    assert side[0] == str(len(data))
    # the check is remembered: a second process loads it without a word
    proc = _python(_USE_ONEDNN + "\n", env={"AIRBENCH_JAX_CACHE": str(cache), "CXX": "g++"})
    assert proc.returncode == 0 and "airbench_jax" not in proc.stderr, proc.stderr[-2000:]


def test_a_cached_library_is_checked_once_then_by_its_sidecar(tmp_path, monkeypatch,
                                                              built_library):
    onednn = _require_onednn()
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache"))
    target = _seed_cache(tmp_path / "cache", built_library)
    calls = []
    real = onednn._check_loadable
    monkeypatch.setattr(onednn, "_check_loadable", lambda p: calls.append(p) or real(p))
    assert onednn.build(cxx="g++") == target and calls == [target]     # checked in a subprocess
    assert onednn.build(cxx="g++") == target and len(calls) == 1       # then by size + sha256
    data = target.read_bytes()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))               # same size, other bytes
    assert onednn.build(cxx="g++") == target and len(calls) == 2


def test_a_damaged_library_that_cannot_be_rebuilt_is_one_line_naming_it(tmp_path, monkeypatch,
                                                                       built_library):
    onednn = _require_onednn()
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache"))
    bad_cxx = _fake_compiler(tmp_path)
    inc, libdir = onednn.find_onednn()
    target = tmp_path / "cache" / f"airbench_onednn_conv-{onednn._build_key(bad_cxx, inc, libdir)}.so"
    _seed_cache(tmp_path / "cache", built_library).rename(target)
    target.write_bytes(target.read_bytes()[:4096])
    with pytest.raises(RuntimeError) as e:
        onednn.build(cxx=bad_cxx)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"the cached library {target} is damaged (")
    assert "error: boom" in msg and msg.endswith("; delete it")


def _fake_compiler(tmp_path: Path) -> str:
    script = tmp_path / "bad-c++"
    script.write_text("#!/bin/sh\necho \"x.cc: In function 'int f()':\" >&2\n"
                      "echo 'x.cc:1:1: error: boom' >&2\necho '    1 | x' >&2\n"
                      "echo '      | ^' >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_a_compile_error_reports_its_first_error_line_and_the_command(tmp_path, monkeypatch):
    """Before: the message ended with g++'s last line, a caret."""
    onednn = _require_onednn()
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache"))
    cxx = _fake_compiler(tmp_path)
    with pytest.raises(RuntimeError) as e:
        onednn.build(cxx=cxx)
    msg = str(e.value)
    assert "\n" not in msg and "compiling onednn_conv.cc failed: x.cc:1:1: error: boom" in msg
    assert f"(command: {cxx} -O2" in msg and "| ^" not in msg
    assert os.listdir(tmp_path / "cache") == []


def test_a_compiler_that_writes_nothing_caches_nothing(tmp_path, monkeypatch):
    """Before: CXX=true 'built' a 0-byte library, cached it, and every later run failed with
    'file too short' without naming the file."""
    onednn = _require_onednn()
    monkeypatch.setenv(onednn.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"the C\+\+ compiler 'true' exited 0 but its library "
                                           r"is unusable: it is empty \(0 bytes\)") as e:
        onednn.build(cxx="true")
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path / "cache") == []


def test_a_cache_path_that_is_a_file_is_named(tmp_path, monkeypatch):
    """Before: 'File exists'."""
    onednn = _require_onednn()
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv(onednn.CACHE_ENV, str(afile))
    with pytest.raises(RuntimeError, match=f"the oneDNN library cache {afile} is a file, not a "
                                           f"folder; remove it or set AIRBENCH_JAX_CACHE"):
        onednn.build(cxx="g++")
    monkeypatch.setenv(onednn.CACHE_ENV, str(afile / "sub"))
    with pytest.raises(RuntimeError, match=f"cannot create the oneDNN library cache folder "
                                           f"{afile / 'sub'} .*; set AIRBENCH_JAX_CACHE"):
        onednn.build(cxx="g++")


_RESOLVE = """
import sys
from airbench_common.errors import UsageError
from airbench_jax import conv
print(conv.resolve_impl("auto"), conv.resolve_impl("auto"))
try:
    conv.resolve_impl("onednn")
except UsageError as e:
    print("UsageError:", e)
"""


# one fresh process in the default suite; each cause's message is checked in process above
# (test_a_compile_error_..., test_a_compiler_that_writes_nothing_..., test_a_cache_path_...)
@pytest.mark.parametrize("case", ["cxx-true",
                                  pytest.param("compile-error", marks=pytest.mark.slow),
                                  pytest.param("cache-is-a-file", marks=pytest.mark.slow)])
def test_auto_falls_back_with_one_line_and_explicit_onednn_is_a_usage_error(tmp_path, case):
    _require_onednn()
    env = {"AIRBENCH_JAX_CACHE": str(tmp_path / "cache"), "AIRBENCH_JAX_CONV": ""}
    if case == "cxx-true":
        env["CXX"], want = "true", "is empty (0 bytes)"
    elif case == "compile-error":
        env["CXX"], want = _fake_compiler(tmp_path), "error: boom"
    else:
        (tmp_path / "cache").write_text("x")
        want = f"{tmp_path / 'cache'} is a file, not a folder"
    proc = _python(_RESOLVE, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0] == "matmul matmul" and len(out) == 2, out
    assert out[1].startswith("UsageError: conv_impl 'onednn' is not available: ") and want in out[1]
    said = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(said) == 1 and said[0].startswith("airbench_jax: oneDNN convolutions unavailable (")
    assert want in said[0] and "JAX uses im2col convolutions" in said[0]
    if case != "cache-is-a-file":
        assert os.listdir(tmp_path / "cache") == []
