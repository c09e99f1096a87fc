"""The end of every JAX run: the final evaluation, the divergence verdict and the run record.

`conclude` is the final evaluation and the verdict, shared by the runs (`finish_run`, for a
sequential run and for each seed of a vmapped group) and the library's train9x (which raises on
its verdict instead of recording it). `finish_run` adds the record, in the fields both
frameworks write (airbench_common.records.RUN_FIELDS; the timing fields as
airbench_common.timing defines them).
"""
from __future__ import annotations

import copy
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from airbench_common import outcome, records
from airbench_common.env import device_fields, package_versions
from airbench_common.timing import Stopwatch

from . import onednn
from . import precision as prec
from .evaluation import predict_both
from .prepare import Run
from .state import TrainState


class Outcome(NamedTuple):
    """A run's verdict (`error` None: ok) and, when it was evaluated, its plain and TTA accuracy
    and its TTA predictions (uint8 per test image)."""
    error: str | None
    acc: float | None = None
    acc_tta: float | None = None
    predictions: np.ndarray | None = None

    @property
    def status(self) -> str:
        return outcome.DIVERGED if self.error else outcome.OK

    @property
    def evaluated(self) -> bool:
        return self.acc is not None


def weights_finite(state: TrainState) -> bool:
    """Every float leaf of the net's params and state is finite."""
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves((state.params, state.rest))
               if jnp.issubdtype(v.dtype, jnp.floating))


def conclude(state: TrainState, tta_level: int = 0, test_x=None, test_y=None, *, error=None,
             watch: Stopwatch | None = None) -> Outcome:
    """Unless training diverged already (`error`, airbench_jax.loop.loss_verdict): the final
    evaluation of the normalized `test_x` against the host labels `test_y` (plain and TTA
    predictions in one pass, the plain forward being part of TTA; timed in `watch`'s eval part),
    then the verdict: collapsed predictions (airbench_common.outcome) or non-finite weights make
    the run diverged. Without test images, the weights' verdict only."""
    if error is not None:
        return Outcome(error)
    acc = acc_tta = predictions = None
    if test_x is not None:
        with (watch or Stopwatch()).part("eval"):
            plain, predictions = predict_both(state, test_x, tta_level)
        acc_tta = float((predictions == test_y).mean())
        acc = float((plain == test_y).mean())
        error = outcome.collapse_reason(predictions)
    if error is None and not weights_finite(state):
        error = "non-finite weights after training"
    return Outcome(error, acc, acc_tta, predictions)


def onednn_flag(impl: str) -> dict:
    """On the CPU, which oneDNN ran the convolutions, or why none did."""
    if impl == "onednn" or jax.default_backend() == "cpu":
        st = onednn.status()
        return dict(onednn=st.onednn_version if st.available else f"unavailable: {st.reason}")
    return {}


def finish_run(run: Run, seed: int, state: TrainState, test_x, watch: Stopwatch, *, error, steps: int,
               per_epoch: list, setup_seconds: float, compile_seconds: float,
               eval_compile_seconds: float) -> tuple[dict, Outcome]:
    """The end of one run (a sequential run, or one seed of a group: `watch` is then the group's,
    copied so that each seed's evaluation is its own): `conclude` on the run's device and
    precision, then the run's record, outside them (its flags are the process's settings) ->
    (record, outcome). `run` is the run's airbench_jax.prepare.Run; `test_x` its normalized test images;
    `error` why training diverged (None: it did not), `steps` its step count. The TTA
    predictions of an evaluated run are the record's `_predictions` (in memory only: parity.compare
    stores them apart)."""
    watch = copy.deepcopy(watch)
    r, pol = run.recipe, run.policy
    with prec.run_context(pol, run.device):
        out = conclude(state, r.tta_level, test_x, run.test[1], error=error, watch=watch)
    times = watch.fields(setup_seconds=setup_seconds, compile_seconds=compile_seconds,
                         evaluated=out.evaluated)
    flags = dict(conv_impl=run.impl, **onednn_flag(run.impl),
                 XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
                 jax_enable_x64=bool(jax.config.jax_enable_x64),
                 jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision))
    d = run.device or jax.devices()[0]
    device, device_name = device_fields(d.platform, d.id, getattr(d, "device_kind", None))
    dt = prec.dtypes(pol)
    # onednn-cpu-gomp: the library behind conv_impl 'onednn' ("not installed" where absent)
    versions = package_versions("jax", "jaxlib", "flax", "optax", "onednn-cpu-gomp")
    rec = records.run_record(
        recipe=r.name, overrides=run.overrides, seed=seed, framework="jax", versions=versions,
        device=device, device_name=device_name, dtype=str(dt["compute"]), flags=flags,
        acc=out.acc, acc_tta=out.acc_tta, tta_level=r.tta_level, steps=steps,
        status=out.status, eval_compile_seconds=eval_compile_seconds,
        ns_dtype=str(dt["newton_schulz"]), precision=pol.to_dict(), per_epoch=per_epoch,
        data=run.data, recipe_params=r.to_dict(), error=out.error, **times)
    if out.predictions is not None:
        rec["_predictions"] = out.predictions
    return rec, out
