"""Framework-neutral pieces shared by airbench_jax and airbench_torch: the dataset files, the
recipe table and run records. Imports neither framework."""
from .errors import UsageError, cli_main
from .data import CLASSES, DatasetError, dataset_label, load_cifar10, resolve_data_dir
from .recipes import (CIFAR_MEAN, CIFAR_STD, NS_COEFFS, RECIPES, Recipe, RecipeError, get_recipe,
                      parse_overrides, recipe_names)
from .schedules import LOOKAHEAD_EVERY, ParamGroup, lookahead_decays, lr_schedules, param_groups
from .records import append_record, make_record, read_records

__all__ = [
    "UsageError", "cli_main",
    "CLASSES", "DatasetError", "dataset_label", "load_cifar10", "resolve_data_dir",
    "CIFAR_MEAN", "CIFAR_STD", "LOOKAHEAD_EVERY", "NS_COEFFS", "RECIPES", "ParamGroup", "Recipe",
    "RecipeError", "get_recipe", "lookahead_decays", "lr_schedules", "param_groups",
    "parse_overrides", "recipe_names", "append_record", "make_record", "read_records",
]
