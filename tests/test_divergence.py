"""Divergence is a result: both implementations record a collapsed or non-finite run as
status 'diverged' with the reason, the same way (airbench_common.outcome)."""
import importlib
import os

import numpy as np
import pytest


# (outcome.collapse_reason itself: tests/test_common_outcome.py)
def _data():
    if not os.environ.get("AIRBENCH_DATA"):
        pytest.skip("AIRBENCH_DATA is unset")
    from airbench_common.data import load_cifar10
    tr, te = load_cifar10("train"), load_cifar10("test")
    return (tr[0][:500], tr[1][:500]), (te[0][:600], te[1][:600])


TINY = dict(widths=(16, 32, 32), epochs=1, batch_size=100, whiten_images=500)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["airbench_jax", "airbench_torch"])
def test_huge_learning_rate_is_recorded_as_diverged_on_both_sides(module):
    train, test = _data()
    m = importlib.import_module(module)
    huge = dict(TINY, muon_lr=1e6, head_lr=1e6, bias_lr=1e6)
    rec = m.run_recipe("airbench94_muon", 0, overrides=huge, train_data=train, test_data=test,
                       log=lambda *a: None)
    assert rec["status"] == "diverged", rec.get("acc")
    assert rec["error"].startswith(("collapsed", "non-finite"))
    ok = m.run_recipe("airbench94_muon", 0, overrides=TINY, train_data=train, test_data=test,
                      log=lambda *a: None, predictions=True)
    assert ok["status"] == "ok" and "error" not in ok
    preds = ok["_predictions"]
    assert preds.dtype == np.uint8 and preds.shape == (600,)
    assert ok["acc_tta"] == pytest.approx(float((preds == test[1]).mean()))
