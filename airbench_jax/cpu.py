"""The host CPU's model and the instruction-set features that decide CPU performance choices.

The model and the feature flags come from airbench_common.env's one probe of /proc/cpuinfo
(elsewhere the model is `platform.processor()` and the features are unknown, empty). Used by
parity.bench and the profile tables to say which CPU kind a measurement belongs to (AVX2 /
AVX-512 / AVX512-BF16 / AMX change which kernels oneDNN and XLA can use).
"""
from __future__ import annotations

import functools
import os

from airbench_common.env import cpu_flags_of_interest, cpu_model

# /proc/cpuinfo flag -> the name we report
FEATURES = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16",
            "avx512_vnni": "AVX512-VNNI", "amx_tile": "AMX", "amx_bf16": "AMX-BF16"}


def reported_features(flags) -> list[str]:
    """The reported names of the FEATURES among cpuinfo `flags`, in FEATURES' order."""
    have = set(flags)
    return [name for flag, name in FEATURES.items() if flag in have]


def logical_cpus() -> int:
    """Logical CPUs this process may run on (its affinity where the OS says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The host CPU: model, reported features, logical CPUs usable by this process."""
    return dict(model=cpu_model(), features=reported_features(cpu_flags_of_interest()),
                logical_cpus=logical_cpus())


def describe() -> str:
    """One line: 'AMD EPYC, 2 CPUs, AVX2 FMA AVX-512 AVX512-BF16 AVX512-VNNI'."""
    i = cpu_info()
    return f"{i['model'] or 'unknown CPU'}, {i['logical_cpus']} CPUs, " + (
        " ".join(i["features"]) or "features unknown")
