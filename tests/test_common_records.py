"""Run records: required fields, atomic appends, torn lines skipped, non-finite values kept."""
import json
import math
import multiprocessing as mp

import numpy as np
import pytest

from airbench_common.records import append_record, float_or_nan, make_record, read_records


def _rec(seed, acc=0.9):
    return make_record(recipe="airbench94", overrides={"epochs": 1}, seed=seed, framework="jax",
                       versions={"jax": "0"}, device="cpu", dtype="float32", flags={},
                       acc=acc, acc_tta=acc, tta_level=2, train_seconds=1.0, eval_seconds=0.1,
                       steps=np.int64(10))


def test_append_and_read_back(tmp_path):
    path = tmp_path / "runs.jsonl"
    for s in range(3):
        append_record(path, _rec(s))
    recs = read_records(path)
    assert [r["seed"] for r in recs] == [0, 1, 2] and recs[0]["steps"] == 10
    assert recs[0]["framework"] == "jax" and "finished_at" in recs[0]


def test_nan_is_kept_as_a_string(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0, acc=float("nan")))
    assert math.isnan(float_or_nan(read_records(path)[0]["acc"]))


def test_torn_line_is_skipped_and_next_append_starts_clean(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, _rec(0))
    with open(path, "a") as f:
        f.write('{"seed": 1, "acc"')  # a crash mid-write
    with pytest.warns(UserWarning, match="torn"):
        assert [r["seed"] for r in read_records(path)] == [0]
    append_record(path, _rec(2))
    with pytest.warns(UserWarning):
        assert [r["seed"] for r in read_records(path)] == [0, 2]


def test_incomplete_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        append_record(tmp_path / "r.jsonl", {"seed": 1})


def _writer(path, start):
    for s in range(start, start + 50):
        append_record(path, _rec(s))


def test_concurrent_writers_do_not_interleave(tmp_path):
    path = tmp_path / "runs.jsonl"
    ctx = mp.get_context("spawn")  # fork is unsafe once JAX's threads exist in this process
    procs = [ctx.Process(target=_writer, args=(path, k * 100)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 150 and all(json.loads(line)["recipe"] == "airbench94" for line in lines)
