"""DPO training entry point, launched with ``accelerate launch``.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.dpo --config train.yaml

``--config`` takes a whole prefopt recipe (see :mod:`prefopt.training.entry`) or a flat TRL-style
file. The flat file (``train.yaml``) is the fields of :class:`DPOScriptArguments` plus any
:class:`~prefopt.training.trainers.PrefDPOConfig` field, i.e. any ``trl.DPOConfig`` field and prefopt's
``pref_loss``, ``gap_transform``, ``sft_route_*``, ``curriculum``... (command-line flags override it). The
train stage writes this file for you; it can also be written by hand. The final model and tokenizer are saved to ``<output_dir>/model``; a rerun after a
crash resumes from the last checkpoint in ``output_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from prefopt.schemas import TRAIN_PAIRS, load_stage_dataset
from prefopt.training.data import to_conversational
from prefopt.training.entry import run_entry
from prefopt.training.trainers import PrefDPOConfig, PrefDPOTrainer


@dataclass
class DPOScriptArguments:
    pairs_path: str = field(metadata={"help": "Pairs dataset (a pairs stage directory or a saved dataset)."})
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})
    gap_column: str = field(default="margin", metadata={
        "help": "Pairs column with the judged gap the loss uses: 'margin' (aggregate) or 'margins.<dimension>'."})


def load_pairs(script_args: DPOScriptArguments) -> Dataset:
    pairs = load_stage_dataset(script_args.pairs_path, TRAIN_PAIRS, "DPO training pairs")
    return to_conversational(pairs, script_args.gap_column)


def main(argv: list[str] | None = None) -> None:
    run_entry(argv, "dpo", DPOScriptArguments, PrefDPOConfig, PrefDPOTrainer, load_pairs)


if __name__ == "__main__":
    main()
