"""Device and precision policy.

CUDA (upstream's policy): half weights and activations, BatchNorm kept in float32, channels_last
memory format, Newton-Schulz in bfloat16. CPU: everything float32 (CPU half/bfloat16 kernels are
slow), Newton-Schulz in float32 (measured on the 2-core EPYC: CPU bfloat16 matmul ~18x slower), and
channels_last too (`python -m parity.bench --torch-channels-last both`: 1.2x the contiguous
throughput on the 2-core EPYC, README "Measured here"). Other device types: contiguous (unmeasured).
"""
from __future__ import annotations

import torch
from torch import nn

NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_devices() -> list[str]:
    """The device names accepted here: cpu (cpu:0), and cuda / cuda:i / mps where present."""
    names = ["cpu", "cpu:0"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None/'auto' -> CUDA if available, else CPU; otherwise the given device, which must be
    one that is there (DeviceError, listing those that are, otherwise)."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        device = str(device)
    from airbench_common.validate import check_device
    return torch.device(check_device(device, available_devices()))


def compute_dtype(device: torch.device) -> torch.dtype:
    """dtype of weights/activations (BatchNorm excepted) and of the stored images."""
    return torch.float16 if device.type == "cuda" else torch.float32


def default_ns_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_ns_dtype(ns_dtype, device: torch.device) -> torch.dtype:
    if ns_dtype is None:
        return default_ns_dtype(device)
    if isinstance(ns_dtype, torch.dtype):
        return ns_dtype
    if ns_dtype not in NS_DTYPES:
        raise ValueError(f"ns_dtype {ns_dtype!r} is not one of {list(NS_DTYPES)}")
    return NS_DTYPES[ns_dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def uses_channels_last(device: torch.device, channels_last: bool | None = None) -> bool:
    """Memory format of images and conv weights: `channels_last` if given, else the policy."""
    if channels_last is not None:
        return bool(channels_last)
    return device.type in ("cuda", "cpu")


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """NCHW `x` laid out channels_last or contiguous (a layout, the values are unchanged)."""
    return x.contiguous(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format)


def apply_precision(net: nn.Module, device: torch.device,
                    channels_last: bool | None = None) -> nn.Module:
    """Move `net` to `device` with the precision policy (BatchNorm stays float32) and memory
    format (channels_last: None = the policy)."""
    net = net.to(device=device, dtype=compute_dtype(device))
    if uses_channels_last(device, channels_last):
        net = net.to(memory_format=torch.channels_last)
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.float()
    return net


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
