"""DPO training entry point, launched with ``accelerate launch``.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.dpo --config train.yaml

``--config`` takes a whole prefopt recipe (see :mod:`prefopt.training.recipe_entry`) or a flat TRL-style
file. The flat file (``train.yaml``) is the fields of :class:`DPOScriptArguments` plus any
:class:`~prefopt.training.trainers.PrefDPOConfig` field, i.e. any ``trl.DPOConfig`` field and prefopt's
``pref_loss``, ``gap_transform``, ``sft_route_*``, ``curriculum``... (command-line flags override it). The
train stage writes this file for you; it can also be written by hand. The final model and tokenizer are saved to ``<output_dir>/model``; a rerun after a
crash resumes from the last checkpoint in ``output_dir``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import TrlParser

from prefopt.schemas import TRAIN_PAIRS, load_stage_dataset
from prefopt.training.launch import FINAL_MODEL_DIR
from prefopt.training.recipe_entry import mark_trained, resolve_recipe_argv
from prefopt.training.trainers import GAP_KEY, PrefDPOConfig, PrefDPOTrainer

logger = logging.getLogger(__name__)


@dataclass
class DPOScriptArguments:
    pairs_path: str = field(metadata={"help": "Pairs dataset (a pairs stage directory or a saved dataset)."})
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})
    gap_column: str = field(default="margin", metadata={
        "help": "Pairs column with the judged gap the loss uses: 'margin' (aggregate) or 'margins.<dimension>'."})


def to_conversational(pairs: Dataset, gap_column: str = "margin") -> Dataset:
    """TRL's conversational preference format (so the model's own chat template renders every prompt), plus
    each pair's judged gap as ``pref_gap``."""
    flat = pairs.flatten()
    if gap_column not in flat.column_names:
        raise ValueError(f"gap_column {gap_column!r} is not a column of the pairs; numeric columns: "
                         f"{[c for c in flat.column_names if c == 'margin' or c.startswith('margins.')]}")
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p}] for p in pairs["prompt"]],
        "chosen": [[{"role": "assistant", "content": c}] for c in pairs["chosen"]],
        "rejected": [[{"role": "assistant", "content": r}] for r in pairs["rejected"]],
        GAP_KEY: [float(g) for g in flat[gap_column]],
    })


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


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt.train %(levelname)s %(message)s")
    argv, stage_dir = resolve_recipe_argv(argv, "dpo")
    script_args, training_args = TrlParser((DPOScriptArguments, PrefDPOConfig)).parse_args_and_config(args=argv)
    pairs = load_stage_dataset(script_args.pairs_path, TRAIN_PAIRS, "DPO training pairs")
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    trainer = PrefDPOTrainer(
        model=script_args.model_name_or_path,
        args=training_args,
        train_dataset=to_conversational(pairs, script_args.gap_column),
        processing_class=tokenizer,
    )
    train_and_save(trainer, tokenizer, training_args.output_dir)
    mark_trained(stage_dir, trainer)


if __name__ == "__main__":
    main()
