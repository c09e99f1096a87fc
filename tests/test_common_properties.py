"""Property-based tests (hypothesis) of the inputs with many values and few rules: recipe overrides
and their validation, option values, and run-record files with torn, foreign and corrupt lines."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airbench_common import RECIPES, Recipe, RecipeError, get_recipe
from airbench_common.files import jsonable
from airbench_common.recipes import parse_overrides
from airbench_common.records import REQUIRED_FIELDS, make_record, parse_records
from airbench_common.validate import OptionError, integer

FIELDS = {f.name: f for f in dataclasses.fields(Recipe) if f.name != "name"}
NUMERIC = [k for k, f in FIELDS.items() if type(f.default) in (int, float)]

# anything a user or a caller might pass
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["1", "0", "true", "no", "nan", "inf", "-1", "2.5", "1e400", "4,8,8",
                     "(4, 8, 8)", "none", "sgd", "muon", "", " 3 ", "0x10", "1_000"]),
    st.tuples(st.integers(-3, 300), st.integers(-3, 300), st.integers(-3, 300)),
    st.lists(st.integers(0, 64), max_size=4), st.dictionaries(st.text(max_size=3), st.integers()))


def _cli_text(value) -> str:
    """How a user would type an accepted value on the command line."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=400, deadline=None)
@given(recipe=st.sampled_from(sorted(RECIPES)), key=st.sampled_from(sorted(FIELDS)),
       value=ANY_VALUE)
def test_any_override_is_accepted_typed_or_refused_with_recipe_error(recipe, key, value):
    """Never another exception; an accepted value has the field's type, survives re-validation
    and reads back the same from its command-line spelling."""
    try:
        r = get_recipe(recipe, **{key: value})
    except RecipeError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    got = getattr(r, key)
    kind = type(FIELDS[key].default)
    if kind is float and key == "scaling_factor" and got is None:
        pass
    elif kind is float:
        assert isinstance(got, float) and math.isfinite(got)
    elif kind is int:
        assert isinstance(got, int) and not isinstance(got, bool)
    else:
        assert isinstance(got, kind)
    assert get_recipe(r) == r                                   # idempotent
    again = get_recipe(recipe, **parse_overrides([f"{key}={_cli_text(got)}"]))
    assert getattr(again, key) == got


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(NUMERIC),
       value=st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                       st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                       st.integers(max_value=-1)))
def test_numeric_fields_refuse_non_finite_and_negative(key, value):
    with pytest.raises(RecipeError, match=key):
        get_recipe("airbench94", **{key: value})


@settings(max_examples=200, deadline=None)
@given(lr=st.floats(1e-6, 1e3), wd=st.floats(0, 1), mom=st.floats(0, 0.999),
       ls=st.floats(0, 0.99), lr_end=st.floats(0, 1), epochs=st.floats(0.01, 100),
       widths=st.tuples(*[st.integers(1, 512)] * 3), k=st.integers(1, 32),
       bs=st.integers(2, 4096))
def test_valid_values_are_accepted_as_given(lr, wd, mom, ls, lr_end, epochs, widths, k, bs):
    r = get_recipe("airbench94", lr=lr, weight_decay=wd, momentum=mom, label_smoothing=ls,
                   lr_end=lr_end, epochs=epochs, widths=widths, whiten_kernel=k, batch_size=bs)
    assert (r.lr, r.weight_decay, r.momentum, r.label_smoothing, r.lr_end, r.epochs, r.widths,
            r.whiten_kernel, r.batch_size) == (lr, wd, mom, ls, lr_end, epochs, widths, k, bs)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                       st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
                       .map(str.strip), max_size=6))
def test_parse_overrides_reads_back_what_was_written(d):
    assert parse_overrides([f"{k}={v}" for k, v in d.items()]) == d


@given(st.integers(-1000, 1000), st.integers(-5, 5), st.integers(0, 10))
def test_integer_bounds(value, low, width):
    high = low + width
    if low <= value <= high:
        assert integer("--x", value, low=low, high=high) == value
        assert integer("--x", float(value), low=low, high=high) == value
    else:
        with pytest.raises(OptionError, match="too (small|large)"):
            integer("--x", value, low=low, high=high)


@given(st.one_of(st.booleans(), st.floats().filter(lambda x: not (math.isfinite(x) and
                                                               x.is_integer())),
                 st.text(), st.none()))
def test_integer_refuses_non_integers(value):
    with pytest.raises(OptionError, match="not an integer"):
        integer("--runs", value)


# ---------------------------------------------------------------------- run-record files
def _record(seed, extra):
    return make_record(recipe="airbench94", overrides={}, seed=seed, framework="torch",
                       versions={}, device="cpu", dtype="float32", flags={}, acc=0.5,
                       acc_tta=0.5, tta_level=2, train_seconds=1.0, eval_seconds=0.1, steps=3,
                       **extra)


EXTRA = st.dictionaries(st.from_regex(r"x_[a-z]{1,6}", fullmatch=True),
                        st.one_of(st.floats(), st.integers(), st.text(max_size=8), st.none()),
                        max_size=3)
JUNK = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b.strip()).map(lambda b: ("corrupt", b)),
    st.builds(lambda d: ("foreign", json.dumps(d).encode()),
              st.dictionaries(st.sampled_from(REQUIRED_FIELDS), st.integers(), max_size=5)),
    st.builds(lambda x: ("foreign", json.dumps(x).encode()),
              st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5))),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.one_of(st.tuples(st.just("record"), EXTRA), JUNK), max_size=12),
       torn=st.integers(1, 200), tear=st.booleans())
def test_parse_records_keeps_exactly_the_whole_records(items, torn, tear):
    lines, want, skipped = [], [], 0
    for i, (kind, payload) in enumerate(items):
        if kind == "record":
            rec = jsonable(_record(i, payload))
            lines.append(json.dumps(rec, sort_keys=True).encode())
            want.append(rec)
        else:
            try:  # a random byte string may happen to be JSON: then it is foreign, not a record
                obj = json.loads(payload.decode("utf-8"))
                assume(not (isinstance(obj, dict) and obj.get("schema") == 1
                            and all(k in obj for k in REQUIRED_FIELDS)))
            except (UnicodeDecodeError, ValueError):
                pass
            lines.append(payload)
            skipped += 1
    if tear:  # a crash mid-append: a strict prefix of a record line, last
        full = json.dumps(jsonable(_record(99, {})), sort_keys=True).encode()
        lines.append(full[:min(torn, len(full) - 1)])
        skipped += 1
    got, counts = parse_records(b"\n".join(lines) + b"\n")
    assert got == want
    assert sum(counts.values()) == skipped
