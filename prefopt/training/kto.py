"""KTO training entry point, launched with ``accelerate launch`` like :mod:`prefopt.training.dpo`.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.kto --config train.yaml

It trains on the pairs dataset given unpaired: every chosen completion is a desirable example and every
rejected one an undesirable example, each with its own judged score (``pref_score``); a completion that
appears in several pairs is used once. ``train.yaml`` holds :class:`KTOScriptArguments` and
:class:`~prefopt.training.trainers.PrefKTOConfig` fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoTokenizer
from trl import TrlParser

from prefopt.schemas import PAIRS, load_stage_dataset
from prefopt.training.dpo import train_and_save
from prefopt.training.recipe_entry import mark_trained, resolve_recipe_argv
from prefopt.training.trainers import SCORE_KEY, PrefKTOConfig, PrefKTOTrainer

KTO_PAIRS = {c: PAIRS[c] for c in ("prompt", "chosen", "rejected", "chosen_id", "rejected_id", "chosen_score",
                                   "rejected_score")}


@dataclass
class KTOScriptArguments:
    pairs_path: str = field(metadata={"help": "Pairs dataset (a pairs stage directory or a saved dataset)."})
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})


def to_unpaired(pairs: Dataset) -> Dataset:
    """Chosen completions as desirable and rejected ones as undesirable examples, each candidate once."""
    rows, seen = {"prompt": [], "completion": [], "label": [], SCORE_KEY: []}, set()
    for pair in pairs:
        for side, label in (("chosen", True), ("rejected", False)):
            if pair[f"{side}_id"] in seen:
                continue
            seen.add(pair[f"{side}_id"])
            rows["prompt"].append([{"role": "user", "content": pair["prompt"]}])
            rows["completion"].append([{"role": "assistant", "content": pair[side]}])
            rows["label"].append(label)
            rows[SCORE_KEY].append(float(pair[f"{side}_score"]))
    return Dataset.from_dict(rows).shuffle(seed=0)  # KTO reads sequentially: mix the two classes


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt.train %(levelname)s %(message)s")
    argv, stage_dir = resolve_recipe_argv(argv, "kto")
    script_args, training_args = TrlParser((KTOScriptArguments, PrefKTOConfig)).parse_args_and_config(args=argv)
    pairs = load_stage_dataset(script_args.pairs_path, KTO_PAIRS, "KTO training pairs")
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    trainer = PrefKTOTrainer(model=script_args.model_name_or_path, args=training_args,
                             train_dataset=to_unpaired(pairs), processing_class=tokenizer)
    train_and_save(trainer, tokenizer, training_args.output_dir)
    mark_trained(stage_dir, trainer)


if __name__ == "__main__":
    main()
