"""oneDNN convolutions for XLA:CPU, as XLA custom calls (`jax.ffi`).

Why: XLA:CPU has no fast convolution. Its native lowering (Eigen) and our im2col + GEMM lowering
both run each pass 2-3x slower than oneDNN's direct convolutions, which PyTorch uses on CPU: that
was JAX's whole speed gap on the CPU (docs/perf/). jaxlib's wheel does not include XLA's own oneDNN
convolution rewriter, so this module brings oneDNN in through the XLA FFI, the supported way to
add a kernel to XLA:
- `csrc/onednn_conv.cc` holds three handlers (forward, input gradient, weight gradient; float32,
  NHWC activations, HWIO kernels, stride 1).
- It is compiled once with the C++ compiler ($CXX, default g++) against the oneDNN that the
  `onednn` extra installs: the `onednn-cpu-gomp` and `onednn-devel-cpu-gomp` wheels, whose files
  land under sys.prefix. $DNNLROOT points at another oneDNN installation.
- The library is cached in $AIRBENCH_JAX_CACHE (default ~/.cache/airbench_jax), one file per
  (source, oneDNN, jaxlib, compiler), written atomically, so concurrent first uses are safe. It
  is loaded into this process only after a subprocess loaded it (`build`), and a damaged cached
  copy is rebuilt: a bad file ends in one line, never in a crash.
- `conv2d_onednn` is differentiable through `jax.custom_vjp`: the backward pass is the two
  gradient custom calls. Under `jax.vmap` each custom call runs once per batch element.

`status()` says whether it is usable and why not; `airbench_jax.conv` uses it when the convolution
implementation is 'auto' (oneDNN on CPU when available, else im2col). oneDNN runs its own OpenMP
threads (OMP_NUM_THREADS, default one per core) inside the XLA op.
"""
from __future__ import annotations

import atexit
import ctypes
import dataclasses
import functools
import hashlib
import os
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

from airbench_common.files import user_cache_dir

SOURCE = Path(__file__).with_name("csrc") / "onednn_conv.cc"
TARGETS = ("AirbenchConvFwd", "AirbenchConvBwdData", "AirbenchConvBwdWeights")
CACHE_ENV = "AIRBENCH_JAX_CACHE"
INSTALL_HINT = ("install the oneDNN extra (pip install 'airbench-jax[onednn]', Linux x86-64) and a "
                "C++ compiler, or set DNNLROOT to a oneDNN installation")


@dataclasses.dataclass(frozen=True)
class Status:
    available: bool
    reason: str = ""           # why not, when not available
    library: str = ""          # the compiled custom-call library
    onednn_version: str = ""   # e.g. "3.2.0 (<git hash>)"


def _roots() -> list[Path]:
    roots = [os.environ.get("DNNLROOT"), sys.prefix, site.getuserbase(), "/usr/local", "/usr"]
    return [Path(r) for r in roots if r]


def find_onednn() -> tuple[Path, Path] | None:
    """(include dir, lib dir) of the first oneDNN installation with both headers and library."""
    for root in _roots():
        inc = root / "include"
        if not (inc / "oneapi" / "dnnl" / "dnnl.hpp").is_file():
            continue
        for lib in (root / "lib", root / "lib64", root / "lib" / "x86_64-linux-gnu"):
            if (lib / "libdnnl.so").exists():
                return inc, lib
    return None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir() / "airbench_jax")


def _build_key(cxx: str, inc: Path, lib: Path) -> str:
    libdnnl = (lib / "libdnnl.so").resolve()
    st = libdnnl.stat()
    parts = [SOURCE.read_bytes(), str(libdnnl).encode(), str(st.st_size).encode(),
             str(st.st_mtime_ns).encode(), str(inc).encode(), jaxlib.__version__.encode(),
             cxx.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


CACHE_HINT = f"set {CACHE_ENV} to a writable folder"
# the symbols a usable library exports (checked in a subprocess before this process loads it)
SYMBOLS = TARGETS + ("airbench_onednn_version", "airbench_onednn_impls", "airbench_onednn_shutdown")
_CHECK = ("import ctypes, sys\n"
          "lib = ctypes.CDLL(sys.argv[1])\n"
          "[getattr(lib, name) for name in sys.argv[2:]]\n"
          "lib.airbench_onednn_version.restype = ctypes.c_char_p\n"
          "assert lib.airbench_onednn_version()\n")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _digest(path: Path) -> str:
    data = path.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _sidecar(library: Path) -> Path:
    """Where the size and sha256 of a library that passed `_check_loadable` are kept."""
    return library.with_name(library.name + ".ok")


def _check_loadable(path: Path) -> str | None:
    """None when `path` is a non-empty library that a fresh process loads, with every symbol;
    else why not. In a subprocess: a damaged library can crash the process that maps it
    (SIGBUS from a truncated file), and it must never be this one."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if size == 0:
        return "it is empty (0 bytes)"
    try:
        proc = subprocess.run([sys.executable, "-c", _CHECK, str(path), *SYMBOLS],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "loading it took over 120 s"
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return f"loading it killed a test process with {sig}"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return f"it does not load: {lines[-1] if lines else f'exit status {proc.returncode}'}"


def _verified(path: Path) -> str | None:
    """`_check_loadable`, run only when the sidecar does not hold this file's size and sha256
    (after a build, or when the file changed since it was checked): None when good."""
    try:
        digest = _digest(path)
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    try:
        if _sidecar(path).read_text().strip() == digest:
            return None
    except OSError:
        pass
    why = _check_loadable(path)
    if why is None:
        _write_sidecar(path, digest)
    return why


def _write_sidecar(path: Path, digest: str) -> None:
    """Best effort (a read-only cache only means the check runs again next time)."""
    side = _sidecar(path)
    try:
        fd, tmp = tempfile.mkstemp(suffix=".ok.tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, side)
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_folder() -> Path:
    """The cache folder, created if need be; a one-line RuntimeError naming it and the fix when it
    is a file or cannot be created."""
    folder = cache_dir()
    if folder.exists() and not folder.is_dir():
        raise RuntimeError(f"the oneDNN library cache {folder} is a file, not a folder; "
                           f"remove it or {CACHE_HINT}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(f"cannot create the oneDNN library cache folder {folder} "
                           f"({e.strerror}); {CACHE_HINT}") from None
    return folder


def _compile(cxx: str, inc: Path, lib: Path, folder: Path) -> Path:
    """Compile into a private temporary file in `folder`, fsync it and check it
    (`_check_loadable`); returns the temporary path (the caller renames it into place)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RuntimeError(f"the oneDNN library cache folder {folder} is not writable; {CACHE_HINT}")
    try:
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
    except OSError as e:
        raise RuntimeError(f"cannot write in the oneDNN library cache folder {folder} "
                           f"({e.strerror}); {CACHE_HINT}") from None
    os.close(fd)
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
           f"-I{inc}", str(SOURCE), f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", tmp]
    shown = shlex.join(cmd[:1] + cmd[1:-1] + ["<cache>/" + Path(tmp).name])
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"compiling {SOURCE.name} took over 600 s ({shown})") from None
        except OSError as e:
            raise RuntimeError(f"cannot run the C++ compiler {cxx!r} ({e.strerror})") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            # the first error, not the last line (g++ ends with the source line and a caret)
            first = next((ln for ln in lines if "error:" in ln),
                         lines[-1] if lines else f"exit status {proc.returncode}, no output")
            raise RuntimeError(f"compiling {SOURCE.name} failed: {first} (command: {shown})")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        why = _check_loadable(Path(tmp))
        if why is not None:
            raise RuntimeError(f"the C++ compiler {cxx!r} exited 0 but its library is unusable: "
                               f"{why} (command: {shown})")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(tmp)


def build(cxx: str | None = None) -> Path:
    """The custom-call library, checked (cached in $AIRBENCH_JAX_CACHE, compiled there on first
    use and rebuilt when the cached file is damaged). Raises RuntimeError with a one-line reason
    when oneDNN, the compiler, the cache folder or the build is missing or fails.

    A library reaches its final name only whole and checked: it is compiled to a temporary name
    in the cache folder, fsynced, loaded once in a subprocess, renamed into place and the folder
    fsynced. A cached library is checked the same way before this process loads it; the check's
    result is kept beside it (NAME.so.ok: size and sha256), so the subprocess runs only after a
    build or when the file no longer matches."""
    found = find_onednn()
    if found is None:
        raise RuntimeError(f"oneDNN not found (no include/oneapi/dnnl/dnnl.hpp with lib/libdnnl.so "
                           f"under {', '.join(str(r) for r in _roots())})")
    inc, lib = found
    cxx = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    folder = _cache_folder()
    out = folder / f"airbench_onednn_conv-{_build_key(cxx, inc, lib)}.so"
    damaged = None
    if out.exists():
        damaged = _verified(out)
        if damaged is None:
            return out
    try:
        tmp = _compile(cxx, inc, lib, folder)
    except RuntimeError as e:
        if damaged is None:
            raise
        raise RuntimeError(f"the cached library {out} is damaged ({damaged}) and rebuilding it "
                           f"failed: {e}; delete it") from None
    try:
        digest = _digest(tmp)
        # a concurrent build may land first: both files are whole and checked, either one wins
        os.replace(tmp, out)
    except OSError as e:
        if tmp.exists():
            tmp.unlink()
        where = f"the damaged cached library {out}" if damaged else str(out)
        raise RuntimeError(f"cannot write {where} ({e.strerror}); delete it or {CACHE_HINT}") \
            from None
    _fsync_dir(folder)
    _write_sidecar(out, digest)
    if damaged:
        print(f"airbench_jax: the cached oneDNN library {out} was damaged ({damaged}); rebuilt it",
              file=sys.stderr)
    return out


@functools.cache
def _load() -> tuple[Status, ctypes.CDLL | None]:
    try:
        path = build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise RuntimeError(f"loading {path} failed ({e}); delete it") from None
        for name in TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                        platform="cpu")
        lib.airbench_onednn_version.restype = ctypes.c_char_p
        lib.airbench_onednn_impls.restype = ctypes.c_char_p
        lib.airbench_onednn_impls.argtypes = [ctypes.c_int64] * 11
        version = lib.airbench_onednn_version().decode()
        # before exit() destroys oneDNN's globals under custom calls still in flight (JAX
        # dispatches asynchronously): see "Lifetime" in csrc/onednn_conv.cc. Registered after
        # JAX's own atexit hooks, so it runs before them.
        atexit.register(lib.airbench_onednn_shutdown)
    except (RuntimeError, OSError, AttributeError) as e:
        return Status(False, str(e).splitlines()[0] if str(e) else type(e).__name__), None
    return Status(True, library=str(path), onednn_version=version), lib


def status() -> Status:
    """Whether the oneDNN convolutions can run here (built and loaded on first call)."""
    return _load()[0]


@functools.cache
def warn_fallback() -> None:
    """Once per process, where oneDNN is installed but cannot be used: say why on stderr (a user
    who installed it expects it; without it, im2col is the documented default)."""
    st = status()
    if not st.available and find_onednn() is not None:
        print(f"airbench_jax: oneDNN convolutions unavailable ({st.reason}); JAX uses im2col "
              f"convolutions, ~1.5x slower", file=sys.stderr)


def padding_amounts(kh: int, kw: int, padding: str):
    """((top, bottom), (left, right)) zero padding of a stride-1 convolution: none for 'VALID';
    for 'SAME' as PyTorch's padding='same' (the extra row/column at the end for even kernels).
    The rule of every lowering (airbench_jax.conv's im2col too, which imports this module)."""
    if padding == "VALID":
        return (0, 0), (0, 0)
    return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def pads(kernel_hw: tuple[int, int], padding: str) -> dict[str, int]:
    """The custom calls' padding attributes for 'VALID' or 'SAME' (`padding_amounts`)."""
    (pt, pb), (pl, pr) = padding_amounts(kernel_hw[0], kernel_hw[1], padding)
    return dict(pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr)


def kernels(x_shape, w_shape, padding: str = "SAME") -> str:
    """The kernels oneDNN chose for one convolution ("fwd | bwd data | bwd weights")."""
    st, lib = _load()
    if lib is None:
        raise RuntimeError(st.reason)
    p = pads(w_shape[:2], padding)
    n, h, w, c = x_shape
    return lib.airbench_onednn_impls(n, h, w, c, w_shape[0], w_shape[1], w_shape[3],
                                     p["pad_top"], p["pad_bottom"], p["pad_left"],
                                     p["pad_right"]).decode()


def _call(target: str, out_shape, *args, padding: str, kernel_hw):
    st = status()  # builds and registers the custom calls on first use
    if not st.available:
        raise RuntimeError(f"oneDNN convolutions are not available: {st.reason}; {INSTALL_HINT}")
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                            vmap_method="sequential")(*args, **pads(kernel_hw, padding))


def _forward(x, w, padding):
    p = pads(w.shape[:2], padding)
    n, h, wd, _ = x.shape
    out = (n, h + p["pad_top"] + p["pad_bottom"] - w.shape[0] + 1,
           wd + p["pad_left"] + p["pad_right"] - w.shape[1] + 1, w.shape[3])
    return _call("AirbenchConvFwd", out, x, w, padding=padding, kernel_hw=w.shape[:2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_onednn(x, w, padding: str = "SAME"):
    """Stride-1 convolution of float32 NHWC `x` with HWIO `w` ('SAME' or 'VALID'), by oneDNN
    (RuntimeError at trace time where `status()` says it is not available)."""
    return _forward(x, w, padding)


def _fwd(x, w, padding):
    return _forward(x, w, padding), (x, w)


def _bwd(padding, res, g):
    x, w = res
    dx = _call("AirbenchConvBwdData", x.shape, g, w, padding=padding, kernel_hw=w.shape[:2])
    dw = _call("AirbenchConvBwdWeights", w.shape, x, g, padding=padding, kernel_hw=w.shape[:2])
    return dx, dw


conv2d_onednn.defvjp(_fwd, _bwd)
