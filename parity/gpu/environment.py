"""The environment stage of `python -m parity.gpu_check`: the XLA flags and environment variables
it sets (before JAX is imported) and why, and what the machine is (GPU, driver, CUDA and cuDNN
versions, libraries, JAX's devices, the default precision policy)."""
from __future__ import annotations

import os
import subprocess

# XLA flags for a small convnet on one GPU, set only when the user has not set XLA_FLAGS (and
# recorded either way). Each must be known to XLA: an unknown flag aborts the process.
XLA_FLAGS = (
    ("--xla_gpu_autotune_level=4",
     "autotune every cuDNN convolution and GEMM and check its result (XLA's own default level, "
     "made explicit so the measured kernels are autotuned ones whatever the site's default)"),
    ("--xla_gpu_force_conv_nhwc=true",
     "NHWC layout for every convolution: our activations are NHWC and cuDNN's tensor-core "
     "kernels want NHWC, so no transposes between the convolutions"),
)
# Environment for JAX and PyTorch sharing one GPU in one process, set only where unset.
ENV_DEFAULTS = (
    ("XLA_PYTHON_CLIENT_PREALLOCATE", "false",
     "JAX would otherwise take 75% of the GPU memory at start-up and starve PyTorch"),
)


def setup_environment() -> dict:
    """Set XLA_FLAGS and ENV_DEFAULTS where the user has not (before JAX is imported)."""
    out = {}
    if os.environ.get("XLA_FLAGS"):
        out["XLA_FLAGS"] = dict(value=os.environ["XLA_FLAGS"], set_by="user", reasons={})
    else:
        os.environ["XLA_FLAGS"] = " ".join(f for f, _ in XLA_FLAGS)
        out["XLA_FLAGS"] = dict(value=os.environ["XLA_FLAGS"], set_by="parity.gpu_check",
                                reasons=dict(XLA_FLAGS))
    for name, value, why in ENV_DEFAULTS:
        if name in os.environ:
            out[name] = dict(value=os.environ[name], set_by="user")
        else:
            os.environ[name] = value
            out[name] = dict(value=value, set_by="parity.gpu_check", reason=why)
    return out


def environment(env_set: dict) -> dict:
    import jax
    import torch
    from airbench_common.env import machine_info, package_versions
    from airbench_common.precision import default_policy_name
    info = dict(env_set=env_set, machine=machine_info(),
                versions=package_versions("torch", "jax", "jaxlib", "flax", "optax", "scipy",
                                          "matplotlib", "tqdm", "jax-cuda13-plugin",
                                          "jax-cuda12-plugin"),
                jax=dict(backend=jax.default_backend(),
                         devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()]),
                torch=dict(cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                           cudnn=torch.backends.cudnn.version()
                           if torch.backends.cudnn.is_available() else None))
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = dict(name=p.name, capability=f"{p.major}.{p.minor}",
                           memory_gib=round(p.total_memory / 2 ** 30, 1),
                           multiprocessors=p.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm,power.limit", "--format=csv"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"not available ({type(exc).__name__})"
    accel = jax.default_backend() != "cpu"
    info["default_precision_policy"] = default_policy_name(accel)
    return info
