"""The setting every shared-weight check runs in: airbench_common.precision.NUMERICS (float32
everywhere, TF32 off), applied process-wide to both frameworks."""
from __future__ import annotations

from airbench_common.precision import NUMERICS


def setup_precision(threads: int | None = None) -> None:
    """Both frameworks in NUMERICS: JAX's float32 matmuls and convolutions at 'highest' precision
    (no TF32 or bfloat16 passes), PyTorch's TF32 switches as the policy says, and PyTorch's
    deterministic algorithms (so that a rerun gives the same float32 results); `threads`: PyTorch's
    CPU threads."""
    import torch
    from airbench_common.workload import get_workload
    for name in ("jax", "torch"):
        get_workload(name).set_precision(NUMERICS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
