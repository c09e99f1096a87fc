"""How a finished run turned out, decided the same way by both implementations.

A run is ``diverged`` when its training loss became non-finite, when its evaluation is
non-finite, or when the network *collapsed*: at the end every test prediction is the same class
(constant logits, chance accuracy; e.g. a learning rate of 1e6). Such a run is a result, never a
success: its record has status "diverged" and the reason in `error`, and parity.compare counts it
apart from the accuracy statistics.
"""
from __future__ import annotations

import numpy as np

OK, DIVERGED = "ok", "diverged"

# Test images per evaluation batch, the same on both sides. Upstream evaluates in batches of 2000
# (a GPU's choice). On a CPU smaller batches stay in cache (faster on both sides: the measurement
# is in docs/results/HISTORY.md) and keep JAX's full-width im2col buffers from needing GBs.
# Results do not depend on it (evaluation mode: each image's logits are its own).
EVAL_BATCH_ACCELERATOR, EVAL_BATCH_CPU = 2000, 500


def eval_batch(accelerator: bool) -> int:
    return EVAL_BATCH_ACCELERATOR if accelerator else EVAL_BATCH_CPU


def predicted_classes(logits) -> np.ndarray:
    """Per-example predicted class as uint8 (CIFAR-10 has 10 classes), the compact form the
    per-example parity analysis keeps for every run."""
    preds = np.asarray(logits).argmax(-1)
    return preds.astype(np.uint8)


def collapse_reason(predictions) -> str | None:
    """The reason a run counts as collapsed (every prediction the same class), else None.
    Needs at least two test images: one prediction is always 'all the same'."""
    p = np.asarray(predictions).ravel()
    if p.size >= 2 and np.all(p == p[0]):
        return f"collapsed: all {p.size} test predictions are class {int(p[0])}"
    return None
