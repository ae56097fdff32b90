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

from prefopt.schemas import TRAIN_PAIRS
from prefopt.training.entry import run_entry
from prefopt.training.trainers import GAP_KEY, PrefDPOConfig, PrefDPOTrainer


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


def main(argv: list[str] | None = None) -> None:
    run_entry(argv, "dpo", DPOScriptArguments, PrefDPOConfig, PrefDPOTrainer, TRAIN_PAIRS,
              lambda pairs, script_args: to_conversational(pairs, script_args.gap_column))


if __name__ == "__main__":
    main()
