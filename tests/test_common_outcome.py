"""airbench_common.outcome: how a finished run is judged (collapse) and evaluated (batch size),
the same on both sides."""
import numpy as np

from airbench_common import outcome


def test_collapse_reason():
    assert outcome.collapse_reason(np.zeros(10, np.uint8)) == \
        "collapsed: all 10 test predictions are class 0"
    assert outcome.collapse_reason(np.full((2, 3), 7)) == \
        "collapsed: all 6 test predictions are class 7"           # any shape, flattened
    assert outcome.collapse_reason([4, 4]) == "collapsed: all 2 test predictions are class 4"
    assert outcome.collapse_reason(np.array([3, 3, 4], np.uint8)) is None
    assert outcome.collapse_reason(np.array([4, 3, 3], np.uint8)) is None
    assert outcome.collapse_reason(np.array([5], np.uint8)) is None     # one image: no verdict
    assert outcome.collapse_reason(np.array([], np.uint8)) is None


def test_predicted_classes():
    p = outcome.predicted_classes(np.eye(10)[[2, 7]])
    assert p.tolist() == [2, 7] and p.dtype == np.uint8
    # classes are the last axis, whatever leads it (e.g. seeds trained together, vmapped)
    logits = np.eye(10)[[[1, 2, 3], [9, 8, 0]]]                      # (2 seeds, 3 images, 10)
    assert outcome.predicted_classes(logits).tolist() == [[1, 2, 3], [9, 8, 0]]


def test_eval_batch():
    assert outcome.eval_batch(True) == 2000 and outcome.eval_batch(False) == 500
    assert (outcome.OK, outcome.DIVERGED) == ("ok", "diverged")
