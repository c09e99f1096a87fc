"""The validation layer: every input the implementations and parity accept, checked once, here.

Recipe hyper-parameters are checked by `recipes.get_recipe` (types and ranges of every field).
This module checks the rest: counts (runs, training images, seeds), output paths (before any
training, so nothing computed is lost to a bad path), devices and dtypes. Each check raises a
subclass of UsageError (a ValueError) whose one-line message names the value, says why it is
wrong and what is accepted; `errors.cli_main` turns it into that line on stderr and exit 2.
"""
from __future__ import annotations

import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import UsageError

DTYPES = ("float32", "bfloat16", "float16")
SEED_LIMIT = 2 ** 32  # both frameworks' seeds: JAX PRNGKey takes 32-bit seeds by default


class OptionError(UsageError):
    """A bad option or argument value (a count, a seed, a dtype, ...)."""


class PathError(UsageError):
    """An output path that cannot be written (a directory, a read-only place, a file as parent)."""


class DeviceError(UsageError):
    """A device that is not there; the message lists the ones that are."""


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (either bound optional); bools and non-integral numbers
    are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise OptionError(f"{name} {value!r} is not an integer")
    value = int(value)
    if low is not None and value < low:
        raise OptionError(f"{name} {value} is too small: it must be >= {low}")
    if high is not None and value > high:
        raise OptionError(f"{name} {value} is too large: it must be <= {high}")
    return value


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """`value` as a finite float in [low, high] ((low, high] with low_open); e.g. a margin:
    number("--margin", m, low=0, low_open=True)."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f"{name} {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise OptionError(f"{name} {value!r} must be a finite number")
    if low is not None and (x <= low if low_open else x < low):
        raise OptionError(f"{name} {x:g} is too small: it must be {'>' if low_open else '>='} "
                          f"{low:g}")
    if high is not None and x > high:
        raise OptionError(f"{name} {x:g} is too large: it must be <= {high:g}")
    return x


def check_runs(runs) -> int:
    """At least one run (0 or fewer would do nothing and exit 0, which looks like success)."""
    return integer("--runs", runs, low=1)


def check_seeds(seed, runs: int = 1) -> int:
    """Seeds seed .. seed+runs-1 must all be valid seeds in [0, 2**32)."""
    seed = integer("--seed", seed, low=0)
    if seed + runs - 1 >= SEED_LIMIT:
        raise OptionError(f"--seed {seed} with --runs {runs} reaches seed {seed + runs - 1}, "
                          f"beyond the largest seed {SEED_LIMIT - 1}")
    return seed


def parse_seeds(text, name: str = "--seeds") -> list[int]:
    """A seed list: 'A:B' (seeds A..B-1, as a Python range), 'S' (one seed) or 'S1,S2,...';
    every seed in [0, 2**32), each once."""
    text = str(text).strip()
    try:
        if ":" in text:
            a, b = (int(v) for v in text.split(":"))
            seeds = list(range(a, b))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise OptionError(f"{name} {text!r} is not a seed list; give A:B (seeds A..B-1), e.g. "
                          "0:8, or S1,S2,...") from None
    if not seeds:
        raise OptionError(f"{name} {text!r} names no seed; give A:B with A < B, e.g. 0:8")
    bad = next((s for s in seeds if not 0 <= s < SEED_LIMIT), None)
    if bad is not None:
        raise OptionError(f"{name} {text!r}: seed {bad} is outside [0, {SEED_LIMIT})")
    if len(set(seeds)) != len(seeds):
        raise OptionError(f"{name} {text!r} names a seed twice; name each seed once")
    return seeds


def check_n_train(n_train, available: int) -> int:
    """The first n_train of `available` training images: 1 <= n_train <= available."""
    if n_train is None:
        return available
    return integer("--n-train", n_train, low=1, high=available)


def check_choice(name: str, value, choices: Iterable) -> object:
    choices = tuple(choices)
    if value not in choices:
        raise OptionError(f"{name} {value!r} is not one of {', '.join(map(str, choices))}")
    return value


TTA_LEVELS = (0, 1, 2)


def check_tta_level(value, name: str = "tta_level") -> int:
    """A test-time augmentation level: the int 0 (none), 1 (mirror) or 2 (mirror + translate);
    bools, floats (1.5, 1.0) and other values are refused."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or int(value) not in TTA_LEVELS):
        raise OptionError(f"{name} {value!r} is not one of {', '.join(map(str, TTA_LEVELS))} "
                          f"(an int: 0 none, 1 mirror, 2 mirror + translate)")
    return int(value)


def check_dtype(name: str, value) -> str | None:
    """None (the implementation's default) or one of DTYPES."""
    return None if value is None else check_choice(name, value, DTYPES)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in `folder`: the only test that is right for root, read-only
    mounts, ACLs and full disks alike."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PathError(f"{what}: cannot write in {folder} ({exc.strerror or exc}); choose a "
                        "writable place") from None


def check_out_file(path, option: str = "--out") -> Path:
    """A file that records can be appended to: not a directory, under a directory (not a file),
    in a writable place. Checked before training starts; nothing is created."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise PathError(f"{option} is empty; give a file path such as runs.jsonl")
    if p.is_dir():
        raise PathError(f"{option} {p} is a directory; give a file path such as "
                        f"{p / 'runs.jsonl'}")
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise PathError(f"{option} {p}: {anc} is a file, not a directory; give a path under a "
                        "directory")
    if p.exists() and not p.is_file():
        raise PathError(f"{option} {p} is not a regular file (a device or a pipe?); give a file "
                        "path such as runs.jsonl")
    if p.exists():
        try:
            with open(p, "ab"):
                pass
        except OSError as exc:
            raise PathError(f"{option} {p} cannot be written ({exc.strerror or exc}); choose a "
                            "writable file") from None
    else:
        _probe_writable(anc, f"{option} {p}")
    return p


def check_out_dir(path, option: str = "--out") -> Path:
    """A directory results go into: an existing directory or one that can be created."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise PathError(f"{option} is empty; give a directory path")
    if p.exists() and not p.is_dir():
        raise PathError(f"{option} {p} is a file; give a directory (it is created if missing)")
    anc = _nearest_existing(p)
    if not anc.is_dir():
        raise PathError(f"{option} {p}: {anc} is a file, not a directory")
    _probe_writable(anc, f"{option} {p}")
    return p


def check_input_file(path, option: str) -> Path:
    """An existing, readable regular file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PathError(f"{option} {p} does not exist")
    if p.is_dir():
        raise PathError(f"{option} {p} is a directory; give a file")
    if not os.access(p, os.R_OK):
        raise PathError(f"{option} {p} is not readable")
    return p


def unknown_device(requested, available: Iterable[str]) -> DeviceError:
    """The error for a device that is not there, listing those that are."""
    return DeviceError(f"device {str(requested)!r} is not available here; available: "
                       f"{', '.join(available)}")


def check_device(requested: str | None, available: Iterable[str],
                 aliases: dict[str, str] | None = None) -> str | None:
    """`requested` (None: the framework's default) if it names one of `available` (after
    aliases, e.g. {'cuda': 'gpu'}); DeviceError listing `available` otherwise."""
    if requested is None:
        return None
    available = list(available)
    name = str(requested).strip().lower()
    platform, sep, index = name.partition(":")
    platform = (aliases or {}).get(platform, platform)
    name = platform + sep + index
    if name not in available:
        raise unknown_device(requested, available)
    return name
