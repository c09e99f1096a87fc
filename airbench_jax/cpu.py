"""The host CPU's model and the instruction-set features that decide CPU performance choices.

Linux reads /proc/cpuinfo; elsewhere the model comes from `platform.processor()` and the
feature flags are unknown (empty). Used by parity.bench and the profile tables to say which
CPU kind a measurement belongs to (AVX2 / AVX-512 / AVX512-BF16 / AMX change which kernels
oneDNN and XLA can use).
"""
from __future__ import annotations

import functools
import os
import platform

# /proc/cpuinfo flag -> the name we report
FEATURES = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16",
            "avx512_vnni": "AVX512-VNNI", "amx_tile": "AMX", "amx_bf16": "AMX-BF16"}


def parse_cpuinfo(text: str) -> dict:
    """{'model': str, 'features': [reported names], 'logical_cpus': int} from cpuinfo text."""
    model, flags, n = "", set(), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            n += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return dict(model=model, features=[v for k, v in FEATURES.items() if k in flags],
                logical_cpus=n)


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The host CPU: model, reported features, logical CPUs usable by this process."""
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = dict(model=platform.processor() or platform.machine(), features=[],
                    logical_cpus=os.cpu_count() or 0)
    if hasattr(os, "sched_getaffinity"):
        info["logical_cpus"] = len(os.sched_getaffinity(0))
    return info


def describe() -> str:
    """One line: 'AMD EPYC, 2 CPUs, AVX2 FMA AVX-512 AVX512-BF16 AVX512-VNNI'."""
    i = cpu_info()
    return f"{i['model'] or 'unknown CPU'}, {i['logical_cpus']} CPUs, " + (
        " ".join(i["features"]) or "features unknown")
