"""DPO training entry point, launched with ``accelerate launch``.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.dpo --config train.yaml

``--config`` takes a whole prefopt recipe (see :mod:`prefopt.training.entry`) or a flat TRL-style
file. The flat file (``train.yaml``) is the fields of :class:`DPOScriptArguments` plus any
:class:`~prefopt.training.dpo_trainer.PrefDPOConfig` field, i.e. any ``trl.DPOConfig`` field and prefopt's
``pref_loss``, ``gap_transform``, ``sft_route_*``, ``curriculum``... (command-line flags override it). The
train stage writes this file for you; it can also be written by hand. ``pairs_path`` is any pairs dataset that
:func:`prefopt.training.data.load_training_data` reads: a file, a directory or a Hub id, in TRL's preference format
(text or messages, explicit or implicit prompt) or prefopt's pairs. The final model and tokenizer are saved to
``<output_dir>/model``; a rerun after a crash resumes from the last checkpoint in ``output_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from prefopt.training.data import DataArguments, load_training_data, trl_pairs
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.training.entry import run_entry


@dataclass(kw_only=True)
class DPOScriptArguments(DataArguments):
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})
    gap_column: str = field(
        default="margin",
        metadata={
            "help": "Column with each pair's judged gap (e.g. 'margin' or 'margins.<dimension>'); pairs without it "
            "train with losses that need no gap."
        },
    )


def load_pairs(script_args: DPOScriptArguments) -> Dataset:
    return trl_pairs(load_training_data(script_args.spec(), "dpo", script_args.gap_column), script_args.gap_column)


def main(argv: list[str] | None = None) -> None:
    run_entry(argv, "dpo", DPOScriptArguments, PrefDPOConfig, PrefDPOTrainer, load_pairs)


if __name__ == "__main__":
    main()
