"""A comparison's configuration: what is compared (recipe, preset, overrides, frameworks, data)
and the question fixed before any run (margin, most runs per side, wall-time cap).

Its identity is what must match for runs to belong to the same comparison (IDENTITY_KEYS: the
number of runs and the frameworks may change between resumes); `config_hash` digests it, and
every record of the comparison carries that hash (parity.study.store).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from airbench_common.data import dataset_label, load_cifar10, resolve_data_dir
from airbench_common.recipes import get_recipe
from airbench_common.workload import MODULES

from . import plan as P
from . import presets
from .errors import CompareError

DEFAULT_RECIPE = "airbench94_muon"
FRAMEWORKS = (*MODULES, "upstream")   # upstream: parity.study.upstream's arm
# what must match for runs to belong to the same comparison (runs and frameworks may change)
IDENTITY_KEYS = ("recipe", "preset", "recipe_params", "n_train", "n_test", "data_label",
                 "data_identity", "margin", "upstream")


def _jsonify(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _sha256(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_identity(train_data, test_data) -> dict:
    """Content hashes of the data a comparison runs on (any other data is another study)."""
    return dict(train_sha256=_sha256(*train_data), test_images_sha256=_sha256(test_data[0]),
                test_labels_sha256=_sha256(np.asarray(test_data[1]).astype(np.int64)))


def config_hash(config: dict) -> str:
    ident = {k: config.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def check_margin(margin) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise CompareError(f"--margin {margin!r} is not a number; give accuracy points, "
                           "e.g. 0.5") from None
    if not (math.isfinite(m) and m > 0):
        raise CompareError(f"--margin {margin!r} must be a positive finite number of accuracy "
                           "points, e.g. 0.5")
    return m


def check_runs(runs) -> int:
    if runs is None or int(runs) < 1:
        raise CompareError(f"--runs {runs!r} must be at least 1 (runs per framework)")
    return int(runs)


def make_config(recipe: str, preset: str, user_overrides: dict | None, frameworks, runs: int,
                margin: float, data_dir=None, data_label: str | None = None,
                identity: dict | None = None, margin_source: str = "the preset",
                upstream: dict | None = None, wall_minutes: float | None = None) -> dict:
    """The comparison's configuration; validates recipe, preset and overrides."""
    p = presets.get_preset(preset)
    overrides = p.recipe_overrides(recipe, user_overrides)
    resolved = get_recipe(recipe, **overrides)           # raises RecipeError on bad overrides
    if p.n_train is not None:
        resolved.steps_per_epoch(p.n_train)              # batch larger than the subset?
    eff = {k: getattr(resolved, k) for k in overrides}   # coerced to the fields' types
    frameworks = list(frameworks)
    for fw in frameworks:
        if fw not in FRAMEWORKS:
            raise CompareError(f"unknown framework {fw!r}; choose from {', '.join(FRAMEWORKS)}")
    if len(set(frameworks)) != len(frameworks) or not frameworks:
        raise CompareError(f"--frameworks {','.join(frameworks)}: name each framework once")
    ddir = resolve_data_dir(data_dir)
    cfg = _jsonify(dict(
        recipe=recipe, preset=preset, preset_description=p.description,
        preset_trains=p.trains, preset_label=p.label(),
        overrides=eff, user_overrides=dict(user_overrides or {}),
        recipe_params=resolved.to_dict(), n_train=p.n_train, n_test=p.n_test,
        frameworks=frameworks, runs=check_runs(runs), margin=check_margin(margin),
        wall_minutes=wall_minutes or p.wall_minutes, eval_every_epoch=p.eval_every_epoch,
        alpha=P.ALPHA, first_look=P.FIRST_LOOK,
        data_dir=str(ddir), data_label=data_label or dataset_label(ddir),
        data_identity=identity, margin_source=margin_source, upstream=upstream))
    cfg["config_hash"] = config_hash(cfg)
    return cfg


def check_config(existing: dict, new: dict, out_dir: Path) -> None:
    """Raise CompareError (one line) naming the first setting in which `new` differs from the
    configuration already in out_dir."""
    for key in IDENTITY_KEYS:
        a, b = existing.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            what = f"{key} differs in {', '.join(diff)}"
        else:
            what = f"{key} {a!r} there vs {b!r} now"
        raise CompareError(f"{out_dir} holds a different comparison ({what}); use another "
                           "--out (or the same settings to resume)")


def load_subsets(config: dict):
    """(train_data, test_data) as (images, labels) tuples: the first n_train/n_test images."""
    tr_x, tr_y = load_cifar10("train", config["data_dir"])
    te_x, te_y = load_cifar10("test", config["data_dir"])
    n_tr, n_te = config.get("n_train"), config.get("n_test")
    if n_tr is not None:
        tr_x, tr_y = tr_x[:n_tr], tr_y[:n_tr]
    if n_te is not None:
        te_x, te_y = te_x[:n_te], te_y[:n_te]
    return (tr_x, tr_y), (te_x, te_y)
