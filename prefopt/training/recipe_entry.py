"""Let the training entry points take a whole prefopt recipe as ``--config``.

    accelerate launch --config_file accelerate_configs/X.yaml -m prefopt.training.dpo --config RECIPE.yaml [--flag v]

A recipe is resolved to the flat train config that its train stage would write (pairs from the recipe's
pairs stage, the policy from ``training.model``, output into the train stage's directory), and the
command-line flags override it as usual. Run without overrides, the train stage is marked complete at the
end, so `prefopt run` then skips it; with overrides it is not (the result no longer matches the recipe).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from prefopt.cache import mark_complete
from prefopt.configs import load_recipe
from prefopt.pipeline import Pipeline


def is_recipe(path: str) -> bool:
    data = yaml.safe_load(Path(path).read_text())
    return isinstance(data, dict) and "training" in data and "name" in data


def resolve_recipe_argv(argv: list[str] | None, method: str) -> tuple[list[str], Path | None]:
    """``argv`` with a recipe ``--config`` replaced by its flat train config; and the stage directory to mark
    complete after training (None when the config was not a recipe, or flags override it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        return argv, None
    index = argv.index("--config") + 1
    if index >= len(argv) or not is_recipe(argv[index]):
        return argv, None
    recipe = load_recipe(argv[index])
    if recipe.training.method != method:
        raise SystemExit(f"{argv[index]}: training.method is {recipe.training.method!r}; launch "
                         f"-m prefopt.training.{recipe.training.method} instead")
    train_config = Pipeline(recipe).write_train_config()
    argv[index] = str(train_config)
    overridden = len(argv) > 2
    return argv, None if overridden else train_config.parent


def mark_trained(stage_dir: Path | None, trainer) -> None:
    if stage_dir is not None and trainer.accelerator.is_main_process:
        mark_complete(stage_dir, {"stage": "train", "launched_by_hand": True})
