"""The upstream arm's CPU patches, for tests only: AIRBENCH_UPSTREAM_PREPARE=upstream_cpu:patch
makes parity.upstream's worker call `patch()` before it imports upstream's code.

Upstream's code is GPU-only. Patched here, in the worker process alone, is exactly what cannot
run on these CPUs: `.half()` -> `.float()`, `.cuda()` -> no-op, CUDA events and synchronisation
-> the wall clock, the torchvision import (a stub with `transforms.Normalize`; the staged .pt
files mean its datasets are never used), `torch.load`'s CUDA map_location -> the CPU, and
`nn.Module.compile` -> no-op (torch.compile's max-autotune needs a GPU), and the airbench
package's `CifarLoader(gpu=0)` default -> 'cpu' (`torch.device(0)` fails without CUDA). Upstream's
own code is otherwise what runs."""
import sys
from pathlib import Path


def patch() -> None:
    import torch
    from torch import nn
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from upstream_train94 import patch_for_cpu
    patch_for_cpu()
    load = torch.load

    def load_on_cpu(*args, **kwargs):
        kwargs["map_location"] = "cpu"
        return load(*args, **kwargs)
    torch.load = load_on_cpu
    nn.Module.compile = lambda self, *args, **kwargs: None
    import importlib.util
    if importlib.util.find_spec("airbench") is not None:
        import airbench.utils
        init = airbench.utils.CifarLoader.__init__
        init.__defaults__ = init.__defaults__[:-1] + ("cpu",)
