"""A whole recipe: the stages' sections together, loaded from YAML with overrides and validated on load.

``config.py`` (the :class:`Recipe`), ``sections.py`` (``sweep:``, ``rounds:``), ``resources.py`` (``resources:``),
``checks.py`` (checks between sections), ``load.py`` (YAML, ``--set``, :func:`load_recipe`), ``before_run.py``
(files, models, GPUs and the trainers' configs, before any stage runs).
"""

from prefopt.recipe.before_run import check_trainer_configs, preflight
from prefopt.recipe.checks import round_recipe
from prefopt.recipe.config import Recipe
from prefopt.recipe.load import load_recipe, read_recipe_data, recipe_from_data, set_path
from prefopt.recipe.sections import RoundsConfig, SweepConfig

__all__ = [
    "Recipe",
    "RoundsConfig",
    "SweepConfig",
    "check_trainer_configs",
    "load_recipe",
    "preflight",
    "read_recipe_data",
    "recipe_from_data",
    "round_recipe",
    "set_path",
]
