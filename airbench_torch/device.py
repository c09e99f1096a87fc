"""Device and precision policy (airbench_common.precision names the policies; this maps them).

CUDA default (policy `upstream`): half weights and activations, BatchNorm kept in float32,
channels_last memory format, Newton-Schulz in bfloat16, TF32 as PyTorch leaves it (cuDNN convs
may, matmuls do not). CPU default (policy `float32`): everything float32, Newton-Schulz included,
because CPU half and bfloat16 kernels are much slower than float32 ones. Any policy runs on either
device (`precision=`); weights are stored in the compute dtype (the net computes in its weights'
dtype), so a policy with params != compute is refused. Memory format: channels_last on CUDA and on
the CPU too, where oneDNN's convolutions are faster in it (`python -m parity.bench
--torch-channels-last both` measures both; the README has the numbers). Other device types:
contiguous.
"""
from __future__ import annotations

import torch
from torch import nn

from airbench_common import precision as P

NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "float64": torch.float64}


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


def resolve_precision(policy=None, device: torch.device | None = None, *, dtype=None,
                      param_dtype=None, bn_dtype=None, ns_dtype=None,
                      tf32=None) -> P.Precision:
    """The run's Precision: `policy` (a name, a Precision, None: the device's default) with the
    given parts overridden (dtypes as names or torch dtypes); mixed params/compute is refused."""
    def name(d):
        return dtype_name(d) if isinstance(d, torch.dtype) else d
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    p = P.resolve(policy, accelerator=dev.type != "cpu", dtype=name(dtype),
                  param_dtype=name(param_dtype), bn_dtype=name(bn_dtype),
                  ns_dtype=name(ns_dtype), tf32=tf32)
    return P.require_same_params_and_compute(p, "PyTorch")


def torch_dtype(name: str) -> torch.dtype:
    return NS_DTYPES[name]


def apply_tf32(p: P.Precision) -> None:
    """Set PyTorch's (process-wide) TF32 switches to the policy's mode: 'conv' is PyTorch's own
    default (cuDNN convolutions may use TF32, matmuls do not)."""
    torch.backends.cuda.matmul.allow_tf32 = p.tf32 == "on"
    torch.backends.cudnn.allow_tf32 = p.tf32 in ("conv", "on")


def tf32_state() -> dict:
    """PyTorch's TF32 switches as they are now (recorded beside the policy)."""
    return dict(matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                cudnn=bool(torch.backends.cudnn.allow_tf32))


def compute_dtype(device: torch.device) -> torch.dtype:
    """dtype of weights/activations (BatchNorm excepted) under the device's default policy."""
    return NS_DTYPES[resolve_precision(None, device).compute]


def default_ns_dtype(device: torch.device) -> torch.dtype:
    return NS_DTYPES[resolve_precision(None, device).newton_schulz]


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
                    channels_last: bool | None = None, precision=None) -> nn.Module:
    """Move `net` to `device` with the precision policy (None: the device's default; weights in
    its params dtype, BatchNorm in its batchnorm dtype) and memory format (channels_last: None =
    the device's)."""
    p = precision if isinstance(precision, P.Precision) else resolve_precision(precision, device)
    net = net.to(device=device, dtype=NS_DTYPES[p.params])
    if uses_channels_last(device, channels_last):
        net = net.to(memory_format=torch.channels_last)
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.to(NS_DTYPES[p.batchnorm])
    return net


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compile_clock() -> float:
    """Seconds torch.compile (Dynamo and Inductor) has spent compiling in this process so far:
    a Stopwatch (airbench_common.timing) reads it around each timed part. Eager PyTorch compiles
    nothing, so it stays where it is."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:  # pragma: no cover - a PyTorch without Dynamo compiles nothing
        return 0.0
    return float(sum(sum(v) for v in compilation_time_metrics.values()))
