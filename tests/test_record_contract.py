"""One run-record contract for both frameworks: the same fields, in one vocabulary.

A reader (parity.compare, the report, the examples analysis) must find every fact about a run in
the same place whichever framework wrote it; these tests fail when one side adds, drops or renames
a field, names its device its own way, or says the default dataset for images a caller passed in.
"""
import numpy as np
import pytest

from airbench_common.env import cpu_model, device_fields
from airbench_common.records import (REQUIRED_FIELDS, RUN_FIELDS, data_identity, is_run_record,
                                     run_record)

TINY = dict(widths=(4, 8, 8), batch_size=32, epochs=1, whiten_images=32)
BOOKKEEPING = {"finished_at", "code", "machine"}   # filled by run_record itself


def _fields(**over):
    f = {k: None for k in RUN_FIELDS if k != "schema"}
    f.update(recipe="airbench94", overrides={}, seed=0, framework="jax", tta_level=2, steps=1)
    f.update(over)
    return f


def test_run_record_takes_exactly_the_contract_fields():
    rec = run_record(**_fields())
    assert set(rec) == set(RUN_FIELDS) | BOOKKEEPING and is_run_record(rec)
    assert rec["machine"]["cpu"] == cpu_model()
    f = _fields()
    del f["device_name"]
    with pytest.raises(TypeError, match=r"missing \['device_name'\]"):
        run_record(**f)
    with pytest.raises(TypeError, match=r"unexpected \['whiten_seconds'\]"):
        run_record(**_fields(whiten_seconds=0.1))


def test_error_is_kept_only_when_there_is_one():
    assert "error" not in run_record(**_fields(error=None))
    assert run_record(**_fields(error="collapsed"))["error"] == "collapsed"


def test_contract_extends_what_readers_require():
    assert set(REQUIRED_FIELDS) <= set(RUN_FIELDS)


def test_device_vocabulary_is_shared():
    assert device_fields("cpu", 0, None) == ("cpu", cpu_model())
    assert device_fields("gpu", 0, "NVIDIA H200") == ("cuda:0", "NVIDIA H200")   # JAX's name
    assert device_fields("cuda", 1, "NVIDIA H100") == ("cuda:1", "NVIDIA H100")  # PyTorch's
    assert device_fields("tpu", None, "v5e") == ("tpu:0", "v5e")


def test_data_identity_says_when_the_caller_gave_the_images(tmp_path):
    given = data_identity(None, 64, 50, arrays=True)
    assert given == dict(label="user-supplied arrays", dir=None, n_train=64, n_test=50)
    folder = data_identity(str(tmp_path), 10, 5, arrays=False)
    assert folder["dir"] == str(tmp_path) and folder["label"] != "user-supplied arrays"


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, (n,)).astype(np.int64))


@pytest.fixture(scope="module")
def both_records():
    from airbench_jax import run_recipe as jax_run
    from airbench_torch import run_recipe as torch_run
    data = dict(overrides=TINY, train_data=_data(64, 0), test_data=_data(50, 1), device="cpu",
                eval_every_epoch=False)
    return jax_run("airbench94", 3, **data), torch_run("airbench94", 3, **data)


def test_both_frameworks_write_the_same_fields(both_records):
    j, t = both_records
    for rec in both_records:
        rec.pop("error", None)          # random labels may collapse a tiny net, on either side
        assert set(rec) == set(RUN_FIELDS) | BOOKKEEPING, rec["framework"]
    assert j["recipe_params"] == t["recipe_params"]
    assert j["data"] == t["data"] == dict(label="user-supplied arrays", dir=None, n_train=64,
                                          n_test=50)
    assert j["device"] == t["device"] == "cpu" and j["device_name"] == t["device_name"]
    assert j["compile_seconds"] > 0 and t["compile_seconds"] is None   # eager PyTorch
    assert j["setup_seconds"] > 0 and t["setup_seconds"] > 0
    assert j["setup_seconds"] <= j["train_seconds"] and t["setup_seconds"] <= t["train_seconds"]


def test_both_sides_evaluate_in_the_same_batches():
    """One evaluation batch size (airbench_common.outcome.eval_batch) on both sides: PyTorch's
    forward sees batches of it, JAX's compiled evaluation has its shape (tail padded)."""
    import torch

    from airbench_common import get_recipe
    from airbench_common.outcome import eval_batch
    from airbench_jax.train import _eval_batches, default_eval_batch
    from airbench_torch.loader import CifarLoader
    from airbench_torch.net import net_for_recipe
    from airbench_torch.train import infer_both

    b = eval_batch(False)
    assert default_eval_batch() == b and eval_batch(True) == 2000   # upstream's on accelerators
    n = 2 * b + 7
    x, y = _data(n, 2)
    loader = CifarLoader(None, train=False, data=(x, y), device="cpu")
    net = net_for_recipe(get_recipe("airbench94", widths=(4, 8, 8)))
    seen = []
    net.register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])))
    infer_both(net, loader, tta_level=0)
    assert seen == [b, b, 7]
    assert _eval_batches(n, default_eval_batch()) == (b, 3)
