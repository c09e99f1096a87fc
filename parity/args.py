"""The checks the parity commands share, so that each command's `main` validates every option and
path before any work (airbench_common.validate does the checking; this names the options).

Every parity command's `main` is wrapped in `errors.cli_main` and parses with `cli.Parser`: bad
input is one line on stderr and exit status 2, no traceback (unless --verbose or
AIRBENCH_TRACEBACK=1), and nothing is written or created by a command that failed its checks.
"""
from __future__ import annotations

from airbench_common import validate as V
from airbench_common.recipes import Recipe, parse_overrides, recipe_names

from .numerics.inputs import scaled_recipe

SEED_HIGH = V.SEED_LIMIT - 1
# the JAX workload's conv lowerings with 'auto' (airbench_jax.conv.IMPLS), written out so that
# --help imports no jax (a test keeps them equal)
CONV_IMPLS = ("auto", "onednn", "native", "matmul", "hybrid")


def parser(prog: str, description: str, **kw):
    """The project's Parser (argparse errors as one line) with --verbose (a traceback on errors)."""
    from airbench_common.cli import Parser  # noqa: PLC0415
    p = Parser(prog=prog, description=description, **kw)
    p.add_argument("--verbose", action="store_true", help="show a traceback on errors")
    return p


def recipe_list(text, option: str = "--recipe") -> list[str]:
    """'all' (every recipe) or comma-separated recipe names, each one that exists."""
    if str(text).strip() == "all":
        return recipe_names()
    names = [n.strip() for n in str(text).split(",")]
    if not any(names):
        raise V.OptionError(f"{option} {text!r} names no recipe; give 'all' or names among "
                            f"{', '.join(recipe_names())}")
    for n in names:
        check_recipe(n, option=option)
    return names


def check_recipe(name, width_scale: float = 1.0, sets=(), option: str = "--recipe") -> Recipe:
    """The recipe `name` with --set overrides and widths scaled by width_scale, as the command will
    build it (unknown names, unknown or out-of-range overrides: a RecipeError naming them)."""
    if str(name) not in recipe_names():
        raise V.OptionError(f"{option} {name!r} is not a recipe; choose one of: "
                            f"{', '.join(recipe_names())}")
    return scaled_recipe(name, width_scale, **parse_overrides(list(sets)))


def count(option: str, value, low: int = 1, high: int | None = None) -> int | None:
    """None, or an integer in [low, high]."""
    return None if value is None else V.integer(option, value, low=low, high=high)


def width_scale(value, option: str = "--width-scale", high: float = 4.0) -> float:
    return V.number(option, value, low=0, low_open=True, high=high)


def seed(value, option: str = "--seed") -> int:
    return V.integer(option, value, low=0, high=SEED_HIGH)


def threads(value, option: str = "--threads") -> int | None:
    return count(option, value, low=1, high=4096)


def out_file(path, option: str = "--json"):
    """None, or a file path that can be written (checked, not created)."""
    return None if path is None else V.check_out_file(path, option)


def out_dir(path, option: str = "--out"):
    """A folder that exists or can be created (checked, not created)."""
    return V.check_out_dir(path, option)
