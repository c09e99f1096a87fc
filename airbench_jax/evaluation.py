"""Evaluation: logits, predictions and accuracy of a net (or a train state) on normalized NHWC
images, with test-time augmentation, through ahead-of-time compiled functions.

Each evaluation function is compiled once per (graph, batch shape, dtype, params structure, TTA
level), outside any timed region (`compile_eval`), and reused by every later run with the same
shapes, so no evaluation timing ever includes compilation. Images are evaluated in equal batches
(`eval_batches`; the tail zero-padded) of airbench_common.outcome.eval_batch images. The
convolutions of the evaluated graph are chosen for a forward pass alone (conv.eval_impl).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from airbench_common import outcome
from airbench_common.validate import check_tta_level

from . import augment as aug
from .conv import EVAL_ENV_VAR, eval_impl
from .model import split_net
from .state import TrainState


def eval_logits(graphdef, params, rest, x, tta_level: int):
    """(plain logits, TTA logits): the plain forward is part of every TTA level, so the plain
    accuracy costs nothing extra."""
    net = nnx.merge(graphdef, params, rest)
    plain = net(x)
    if tta_level == 0:
        return plain, plain
    mirror_x = 0.5 * plain + 0.5 * net(aug.flip_lr(x))
    if tta_level == 1:
        return plain, mirror_x

    def mirror(z):
        return 0.5 * net(z) + 0.5 * net(aug.flip_lr(z))

    p = aug.pad_reflect(x, 1)
    t = 0.5 * (mirror(p[:, 0:32, 0:32]) + mirror(p[:, 2:34, 2:34]))
    return plain, 0.5 * mirror_x + 0.5 * t


_eval_jit = jax.jit(eval_logits, static_argnums=(0, 4))
_EVAL_CACHE: dict = {}      # key (_eval_key) -> compiled evaluation function
_EVAL_GRAPHS: dict = {}     # (trained graphdef, $AIRBENCH_JAX_EVAL_CONV) -> evaluated graphdef


def _eval_key(graphdef, params, rest, shape, dtype, tta_level: int):
    # `tta_level` is the checked int that the compiled function was traced with (a key of
    # int(level) beside a function traced with the raw value once let 1.5, compiled as level 2,
    # answer later level-1 calls)
    leaves = jax.tree.leaves((params, rest))
    return (graphdef, tuple(shape), str(jnp.dtype(dtype)), tta_level,
            jax.tree.structure((params, rest)),
            tuple((tuple(v.shape), str(v.dtype)) for v in leaves))


def eval_graphdef(graphdef, params, rest):
    """The graph evaluation runs: the trained one with each convolution's implementation
    replaced by conv.eval_impl's choice ($AIRBENCH_JAX_EVAL_CONV; 'as-trained': unchanged)."""
    choice = os.environ.get(EVAL_ENV_VAR, "auto")
    if choice == "as-trained":
        return graphdef
    key = (graphdef, choice)
    if key not in _EVAL_GRAPHS:
        net = nnx.merge(graphdef, params, rest)
        for _, mod in nnx.iter_modules(net):
            for attr in ("impl", "conv_impl"):      # Conv's and CifarNet's (the whitening conv)
                if isinstance(getattr(mod, attr, None), str):
                    setattr(mod, attr, eval_impl(getattr(mod, attr), choice))
        _EVAL_GRAPHS[key] = split_net(net)[0]
    return _EVAL_GRAPHS[key]


def default_eval_batch() -> int:
    """airbench_common.outcome.eval_batch for JAX's default backend."""
    return outcome.eval_batch(jax.default_backend() != "cpu")


def eval_batches(n: int, batch: int) -> tuple[int, int]:
    """(batch actually used, number of batches): one shape for all batches (the tail padded)."""
    batch = max(1, min(int(batch), n))
    return batch, -(-n // batch)


def compile_eval(graphdef, params, rest, n: int, tta_level: int, *, batch: int | None = None,
                 dtype=jnp.float32) -> float:
    """Compile the evaluation function used for `n` images at `tta_level` (if not yet compiled);
    returns the seconds spent compiling (0.0 when it was already compiled)."""
    tta_level = check_tta_level(tta_level)
    batch, _ = eval_batches(n, batch or default_eval_batch())
    shape = (batch, 32, 32, 3)
    graphdef = eval_graphdef(graphdef, params, rest)
    key = _eval_key(graphdef, params, rest, shape, dtype, tta_level)
    if key in _EVAL_CACHE:
        return 0.0
    t = time.perf_counter()
    x = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))
    _EVAL_CACHE[key] = _eval_jit.lower(graphdef, params, rest, x, tta_level).compile()
    return time.perf_counter() - t


def compile_evals(state: TrainState, n: int, tta_level: int, every_epoch: bool,
                  dtype) -> float:
    """Compile the evaluations a run calls on `n` test images: the final one at `tta_level`, and
    the per-epoch validation (level 0) when `every_epoch` -> seconds spent compiling."""
    levels = sorted({tta_level} | ({0} if every_epoch else set()))
    return sum(compile_eval(state.graphdef, state.params, state.rest, n, level, dtype=dtype)
               for level in levels)


def infer_arrays(graphdef, params, rest, images, tta_level: int = 0, batch: int | None = None):
    """Logits for normalized NHWC images, evaluated in equal batches of `batch` (default
    `default_eval_batch()`; the tail is zero-padded so one compiled shape serves every batch)."""
    tta_level = check_tta_level(tta_level)
    return infer_both(graphdef, params, rest, images, tta_level, batch)[1]


def infer_both(graphdef, params, rest, images, tta_level: int = 0, batch: int | None = None):
    """(plain logits, TTA logits) of normalized NHWC images, as infer_arrays."""
    tta_level = check_tta_level(tta_level)
    n = images.shape[0]
    batch, n_batches = eval_batches(n, batch or default_eval_batch())
    compile_eval(graphdef, params, rest, n, tta_level, batch=batch, dtype=images.dtype)
    graphdef = eval_graphdef(graphdef, params, rest)
    fn = _EVAL_CACHE[_eval_key(graphdef, params, rest, (batch, 32, 32, 3), images.dtype,
                               tta_level)]
    pad = n_batches * batch - n
    if pad:
        images = jnp.concatenate([images, jnp.zeros((pad,) + images.shape[1:], images.dtype)])
    out = [fn(params, rest, images[i * batch:(i + 1) * batch]) for i in range(n_batches)]
    return tuple(jnp.concatenate([o[k] for o in out])[:n] for k in (0, 1))


def _state_parts(state_or_net):
    if isinstance(state_or_net, TrainState):
        return state_or_net.graphdef, state_or_net.params, state_or_net.rest
    return split_net(state_or_net)


def predict_both(state_or_net, images, tta_level: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-example predicted classes (uint8) of normalized NHWC images: (plain, TTA)."""
    tta_level = check_tta_level(tta_level)
    plain, tta = infer_both(*_state_parts(state_or_net), images, tta_level)
    return tuple(outcome.predicted_classes(jax.device_get(v)) for v in (plain, tta))


def predict(state_or_net, images, tta_level: int = 0) -> np.ndarray:
    """Per-example predicted classes (uint8) of normalized NHWC images at `tta_level`."""
    tta_level = check_tta_level(tta_level)
    return predict_both(state_or_net, images, tta_level)[1]


def accuracy(state_or_net, images, labels, tta_level: int = 0) -> float:
    tta_level = check_tta_level(tta_level)
    return float((predict(state_or_net, images, tta_level) == np.asarray(labels)).mean())
