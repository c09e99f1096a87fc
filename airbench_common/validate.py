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

import numpy as np

from .errors import UsageError

DTYPES = ("float32", "bfloat16", "float16")
SEED_LIMIT = 2 ** 32  # both frameworks' seeds: JAX PRNGKey takes 32-bit seeds by default
MAX_RUNS = 10_000     # runs (seeds) one command may ask for: days of GPU time; a larger count is a
                      # typo, and its seed list would not fit in memory (0:10**10 is 80 GB)


class OptionError(UsageError):
    """A bad option or argument value (a count, a seed, a dtype, ...)."""


class PathError(UsageError):
    """An output path that cannot be written (a directory, a read-only place, a file as parent)."""


class DeviceError(UsageError):
    """A device that is not there; the message lists the ones that are."""


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (either bound optional); bools and non-integral numbers
    are refused."""
    if is_bool(value) or not isinstance(value, (int, float, np.integer, np.floating)) or (
            isinstance(value, (float, np.floating))
            and not (math.isfinite(value) and float(value).is_integer())):
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
    """At least one run (0 or fewer would do nothing and exit 0, which looks like success), at most
    MAX_RUNS (the seed list is built from it)."""
    return integer("--runs", runs, low=1, high=MAX_RUNS)


def check_seeds(seed, runs: int = 1) -> int:
    """Seeds seed .. seed+runs-1 must all be valid seeds in [0, 2**32)."""
    seed = integer("--seed", seed, low=0)
    if seed + runs - 1 >= SEED_LIMIT:
        raise OptionError(f"--seed {seed} with --runs {runs} reaches seed {seed + runs - 1}, "
                          f"beyond the largest seed {SEED_LIMIT - 1}")
    return seed


def parse_seeds(text, name: str = "--seeds") -> list[int]:
    """A seed list: 'A:B' (seeds A..B-1, as a Python range), 'S' (one seed) or 'S1,S2,...';
    every seed in [0, 2**32), each once, at most MAX_RUNS of them. A range is checked by
    arithmetic before its list is built (0:10000000000 is one line, not a MemoryError)."""
    text = str(text).strip()
    try:
        if ":" in text:
            a, b = (int(v) for v in text.split(":"))
            seeds = range(a, b)
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise OptionError(f"{name} {text!r} is not a seed list; give A:B (seeds A..B-1), e.g. "
                          "0:8, or S1,S2,...") from None
    if not seeds:
        raise OptionError(f"{name} {text!r} names no seed; give A:B with A < B, e.g. 0:8")
    if isinstance(seeds, range):
        bad = seeds.start if seeds.start < 0 else SEED_LIMIT if seeds.stop > SEED_LIMIT else None
    else:
        bad = next((s for s in seeds if not 0 <= s < SEED_LIMIT), None)
    if bad is not None:
        raise OptionError(f"{name} {text!r}: seed {bad} is outside [0, {SEED_LIMIT})")
    if len(seeds) > MAX_RUNS:
        raise OptionError(f"{name} {text!r} names {len(seeds)} seeds; at most {MAX_RUNS} per "
                          f"command (give a smaller range, e.g. 0:{min(8, MAX_RUNS)})")
    seeds = list(seeds)
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


def check_out_file(path, option: str = "--out", example: str = "runs.jsonl") -> Path:
    """A file that records can be appended to: not a directory, under a directory (not a file),
    in a writable place. Checked before training starts; nothing is created. `example`: the
    file name the messages suggest."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise PathError(f"{option} is empty; give a file path such as {example}")
    if p.is_dir():
        raise PathError(f"{option} {p} is a directory; give a file path such as "
                        f"{p / example}")
    anc = _nearest_existing(p.parent)
    if not anc.is_dir():
        raise PathError(f"{option} {p}: {anc} is a file, not a directory; give a path under a "
                        "directory")
    if p.exists() and not p.is_file():
        raise PathError(f"{option} {p} is not a regular file (a device or a pipe?); give a file "
                        f"path such as {example}")
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


# ----------------------------------------------------------------------------- library arguments
# The library API (airbench_jax / airbench_torch: CifarLoader, make_net9x, train9x, infer,
# evaluate, run_recipe, checkpoints) checks its arguments here, the same checks the command line
# makes of the same values; messages name the parameter as the caller spelled it. What only
# upstream's loader and train9x take (aug, their names) is checked in airbench_common.library.
WIDTH_KEYS = ("block1", "block2", "block3")


def show(value, limit: int = 60) -> str:
    """`value` for a one-line message: its repr on one line, cut at `limit` characters."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):      # an array: its kind, not data
        return f"<{type(value).__name__} shape {tuple(value.shape)} dtype {value.dtype}>"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_bool(value) -> bool:
    """A Python or numpy bool."""
    return isinstance(value, (bool, np.bool_))


def is_int(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not is_bool(value)


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer (not a bool, not a float) in [0, 2**32)."""
    if not is_int(value):
        raise OptionError(f"{name} {show(value)} is not an integer; give a whole number in "
                          f"[0, {SEED_LIMIT})")
    value = int(value)
    if not 0 <= value < SEED_LIMIT:
        raise OptionError(f"{name} {value} is outside [0, {SEED_LIMIT}); seeds are 32-bit")
    return value


def check_seed_list(seeds, name: str = "seeds") -> list[int]:
    """A non-empty list of distinct seeds (each as check_seed)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise OptionError(f"{name} {show(seeds)} is not a list of seeds; give e.g. [0, 1, 2]")
    seeds = [check_seed(s, f"{name}: seed") for s in seeds]
    if not seeds:
        raise OptionError(f"{name} []: no seeds given; give at least one, e.g. [0, 1, 2]")
    dup = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
    if dup is not None:
        raise OptionError(f"{name}: seed {dup} is given twice; give each seed once")
    return seeds


def check_batch_size(value, name: str = "batch_size") -> int:
    """At least one image per batch."""
    return integer(name, value, low=1)


def check_flag(name: str, value) -> bool | None:
    """None (the default) or a bool."""
    if value is None or is_bool(value):
        return None if value is None else bool(value)
    raise OptionError(f"{name} {show(value)} is not True, False or None")


def check_callable(name: str, value):
    """None or something callable (e.g. make_net, a no-argument function returning the net)."""
    if value is not None and not callable(value):
        raise OptionError(f"{name} {show(value)} is not callable; give a function that takes no "
                          "arguments and returns the net, or None")
    return value


def check_instance(name: str, value, cls, what: str, *, optional: bool = False):
    """`value` is an instance of `cls` (None too with optional); `what` names cls for the user."""
    if (value is None and optional) or isinstance(value, cls):
        return value
    raise OptionError(f"{name} {show(value)} ({type(value).__name__}) is not {what}")


def check_widths(widths, name: str = "widths") -> tuple[int, int, int]:
    """Upstream's dict(block1=, block2=, block3=) or three positive integers -> a tuple."""
    how = "give dict(block1=, block2=, block3=) or three positive integers"
    if isinstance(widths, dict):
        if set(widths) != set(WIDTH_KEYS):
            raise OptionError(f"{name} {show(widths)} must have exactly the keys block1, block2, "
                              f"block3; {how}")
        values = [widths[k] for k in WIDTH_KEYS]
    elif isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
        raise OptionError(f"{name} {show(widths)} is not a dict or a sequence; {how}")
    else:
        values = list(widths)
    if len(values) != 3 or not all(is_int(v) and v >= 1 for v in values):
        raise OptionError(f"{name} {show(widths)} is not three positive integers; {how}")
    return tuple(int(v) for v in values)


def check_path_like(name: str, value):
    """A path as a str or os.PathLike (not empty) -> Path."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise PathError(f"{name} {show(value)} ({type(value).__name__}) is not a path; give a "
                        "str or pathlib.Path")
    if str(value).strip() == "":
        raise PathError(f"{name} is empty; give a path")
    return Path(value).expanduser()


def check_data_dir(path, name: str = "path") -> Path | None:
    """A CIFAR-10 folder: None ($AIRBENCH_DATA or the default cache), an existing folder, or a
    folder that can be created there for the download (its nearest existing parent a folder)."""
    if path is None:
        return None
    p = check_path_like(name, path)
    if p.exists() and not p.is_dir():
        raise PathError(f"{name} {p} is a file, not a folder; give the folder that holds "
                        "train.npz/test.npz, cifar-10-batches-py/ or cifar-10-python.tar.gz")
    anc = _nearest_existing(p)
    if not anc.is_dir():
        raise PathError(f"{name} {p}: {anc} is a file, not a folder; give a folder path")
    return p


def _host_array(value):
    """numpy view of an array-like: numpy, JAX, or a torch tensor (on any device)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):      # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_data_pair(data, name: str) -> tuple:
    """(images, labels) passed as arrays (numpy, JAX or torch): the checks a dataset file gets
    (airbench_common.data.check_arrays: uint8 (N, 32, 32, 3) with N >= 1, integer labels 0-9,
    one per image) -> (uint8 numpy images, int64 numpy labels)."""
    from .data import check_arrays
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__") or len(data) != 2:
        raise OptionError(f"{name} {show(data)} is not a pair (images, labels); give "
                          "(uint8 array (N, 32, 32, 3), integer labels (N,))")
    try:
        images, labels = (_host_array(a) for a in data)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{name} is not a pair of arrays ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())})") from None
    return check_arrays(images, labels, name, fix="give uint8 images (N, 32, 32, 3) with N >= 1 "
                        "and one integer label 0-9 per image")

