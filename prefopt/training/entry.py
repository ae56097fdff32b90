"""What the DPO and KTO entry points share: recipe or flat ``--config``, train, save, resume, mark done.

The entry points take a whole prefopt recipe as ``--config``:

    accelerate launch --config_file accelerate_configs/X.yaml -m prefopt.training.dpo --config RECIPE.yaml [--flag v]

A recipe is resolved to the flat train config that its train stage would write (pairs from the recipe's
pairs stage, the policy from ``training.model``, output into the train stage's directory), and the
command-line flags override it as usual. Run without overrides, the train stage is marked complete at the
end, so `prefopt run` then skips it; with overrides it is not (the result no longer matches the recipe).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

import yaml
from datasets import Dataset
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import TrlParser

from prefopt.cache import mark_complete
from prefopt.configs import load_recipe
from prefopt.pipeline import Pipeline
from prefopt.training.launch import FINAL_MODEL_DIR

logger = logging.getLogger(__name__)


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


def train_and_save(trainer, tokenizer, output_dir: str) -> None:
    """Train (resuming from the last checkpoint in ``output_dir``, if any) and save to ``output_dir/model``."""
    last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    if last:
        logger.info("Resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    final = Path(output_dir) / FINAL_MODEL_DIR
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(final)
        logger.info("Saved the aligned policy to %s", final)


def run_entry(argv: list[str] | None, method: str, script_cls: type, config_cls: type, trainer_cls: type,
              load_train_dataset: Callable[[object], Dataset]) -> None:
    """Parse (recipe or flat config, plus flags), load the training data (``load_train_dataset(script_args)``),
    train, save, and mark a recipe's stage done."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt.train %(levelname)s %(message)s")
    argv, stage_dir = resolve_recipe_argv(argv, method)
    script_args, training_args = TrlParser((script_cls, config_cls)).parse_args_and_config(args=argv)
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    trainer = trainer_cls(model=script_args.model_name_or_path, args=training_args,
                          train_dataset=load_train_dataset(script_args), processing_class=tokenizer)
    train_and_save(trainer, tokenizer, training_args.output_dir)
    if stage_dir is not None and trainer.accelerator.is_main_process:
        mark_complete(stage_dir, {"stage": "train", "launched_by_hand": True})
