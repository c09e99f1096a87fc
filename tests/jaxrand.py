"""Random test inputs drawn the quick way: jax.random.normal(key, shape, dtype) drawn flat and
reshaped gives the same values (threefry counts over the flattened index), but XLA:CPU compiles a
flat draw far faster than a small 3- to 5-D one such as (4, 9, 9, 5)."""
import math

import jax
import jax.numpy as jnp


def normal(key, shape, dtype=jnp.float32):
    """jax.random.normal(key, shape, dtype), bit for bit."""
    shape = tuple(shape)
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
