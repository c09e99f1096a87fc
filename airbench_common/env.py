"""What makes a run reproducible beyond recipe and seed: versions, machine, flags."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform


def package_versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy",) + names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags_of_interest() -> list[str]:
    """The vector/matrix extensions that change which kernels libraries pick (Linux only)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
              "amx_int8")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def code_version() -> str:
    """The git commit of this source tree ('+dirty' when it has uncommitted changes), or
    'unknown' outside a git checkout (an installed wheel): which code made a record."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ[k] for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS",
                                           "CUDA_VISIBLE_DEVICES", "AIRBENCH_DATA")
                if k in os.environ},
    }


# JAX calls an NVIDIA or AMD GPU's platform "gpu" (or "cuda"/"rocm"); PyTorch calls both "cuda".
_ACCELERATOR_KINDS = {"gpu": "cuda", "cuda": "cuda", "rocm": "cuda"}


def device_fields(kind: str, index: int | None, name: str | None) -> tuple[str, str]:
    """(device, device_name) of a run record, in one vocabulary for both frameworks: 'cpu', or
    'cuda:N' for a GPU as PyTorch names it (other accelerators 'kind:N'); the name is the chip's
    (the CPU model on a CPU)."""
    kind = kind.lower()
    if kind == "cpu":
        return "cpu", cpu_model()
    kind = _ACCELERATOR_KINDS.get(kind, kind)
    return f"{kind}:{0 if index is None else int(index)}", str(name or "unknown")
