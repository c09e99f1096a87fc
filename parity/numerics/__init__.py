"""Shared-weight numerics: airbench_jax against airbench_torch from the same weights and batches.

`python -m parity.numerics` (checks, steps, lr, rows, tolerances) compares logits, loss, gradients,
optimizer steps and learning rates on one batch; `python -m parity.lockstep` (lockstep) trains both
from the same weights on one batch stream; `python -m parity.policies` (policies) compares the two
under each precision policy. What they share: the machine-independent weights (inputs), the one
batch stream (batches), the weight conversion (convert), the float32 setting (setting) and the
result rows (rows).

Importing this package imports neither framework (`main` imports the command on call).
"""


def main(argv=None) -> int:
    """`python -m parity.numerics` (parity.numerics.__main__), for `python -m parity numerics`."""
    from .__main__ import main as numerics_main  # noqa: PLC0415 - the command on call only
    return numerics_main(argv)
