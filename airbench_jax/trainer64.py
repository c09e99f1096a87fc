"""The float64 JaxTrainer's calls (airbench_jax.workload.JaxTrainer64): the JAX side's own
float64 reference for the shared-weight checks. JAX computes in float64 only inside
`jax.enable_x64(True)`, so every call of that trainer runs inside it and casts its float inputs
to float64: its users never switch JAX's global mode themselves."""
from __future__ import annotations

import numpy as np


def x64():
    """JAX's float64 mode, for the calls inside the `with`."""
    import jax
    return jax.enable_x64(True)


class X64Calls:
    """A Trainer's calls, each inside x64() (mixed in before the JaxTrainer it wraps)."""

    def arrays(self):
        with x64():
            return super().arrays()

    def ema_arrays(self):
        with x64():
            return super().ema_arrays()

    def with_arrays(self, arrays, step=0, ema_arrays=None):
        with x64():
            return type(self)(super().with_arrays(arrays, step, ema_arrays).state)

    def load_proxy_arrays(self, arrays):
        with x64():
            super().load_proxy_arrays(arrays)

    def forward(self, x, y, train):
        with x64():
            return super().forward(np.asarray(x, np.float64), y, train)

    def step(self, x, y):
        with x64():
            return super().step(np.asarray(x, np.float64), y)

    def logits(self, x, tta_level):
        with x64():
            return super().logits(np.asarray(x, np.float64), tta_level)
