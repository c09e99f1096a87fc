"""Parity between the JAX port (airbench_jax) and the PyTorch reference (airbench_torch).

The only package that imports both. `python -m parity.compare` runs both frameworks for many
seeds and compares accuracy distributions and timings (parity.study).
Frameworks are reached only through their workloads (airbench_common.workload), imported
lazily, so this package imports without either.
"""
