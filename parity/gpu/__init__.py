"""The stages of `python -m parity.gpu_check` (parity/gpu_check.py runs them in order and keeps the
summary): environment, the data subset it carries (subset), numerics, throughput and runs
(stages), studies."""
