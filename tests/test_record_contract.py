"""One run-record contract for both frameworks: the same fields, in one vocabulary.

A reader (parity.compare, the report, the examples analysis) must find every fact about a run in
the same place whichever framework wrote it; these tests fail when one side adds, drops or renames
a field, names its device its own way, or says the default dataset for images a caller passed in.
"""
import numpy as np
import pytest

from airbench_common.records import RUN_FIELDS

TINY = dict(widths=(4, 8, 8), batch_size=32, epochs=1, whiten_images=32)
BOOKKEEPING = {"finished_at", "code", "machine"}   # filled by run_record itself


# run_record, data_identity and device_fields themselves, without either framework:
# tests/test_common_records.py and tests/test_common_env.py; here, both frameworks' records.
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
    for rec in both_records:  # airbench_common.timing: one definition on both sides
        assert rec["time_seconds"] == pytest.approx(rec["train_seconds"] + rec["eval_seconds"])
        assert rec["timed_compile_seconds"] is not None and rec["timed_compile_seconds"] >= 0


def test_both_sides_evaluate_in_the_same_batches():
    """One evaluation batch size (airbench_common.outcome.eval_batch) on both sides: PyTorch's
    forward sees batches of it, JAX's compiled evaluation has its shape (tail padded)."""
    import torch

    from airbench_common import get_recipe
    from airbench_common.outcome import eval_batch
    from airbench_jax.evaluation import default_eval_batch, eval_batches
    from airbench_torch.loader import CifarLoader
    from airbench_torch.net import net_for_recipe
    from airbench_torch.evaluation import infer_both

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
    assert eval_batches(n, default_eval_batch()) == (b, 3)
