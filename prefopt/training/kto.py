"""KTO training entry point, launched with ``accelerate launch`` like :mod:`prefopt.training.dpo`.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.kto --config train.yaml

It trains on KTO examples (TRL's unpaired format: prompt, completion, label; ``prefopt.schemas.UNPAIRED`` as
strategy ``kto_unpaired`` writes them), or on pairs given unpaired: every chosen reply is a desirable example and
every rejected one an undesirable example, each with its own judged score (``pref_score``) where the pairs have
scores; a reply that appears in several pairs is used once (:func:`prefopt.training.data.trl_examples`).
``pairs_path`` is read like the DPO entry point's. ``train.yaml`` holds :class:`KTOScriptArguments` and
:class:`~prefopt.training.kto_trainer.PrefKTOConfig` fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from prefopt.training.data import DataArguments, load_training_data, trl_examples
from prefopt.training.entry import run_entry
from prefopt.training.kto_trainer import PrefKTOConfig, PrefKTOTrainer


@dataclass(kw_only=True)
class KTOScriptArguments(DataArguments):
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})


def load_examples(script_args: KTOScriptArguments) -> Dataset:
    return trl_examples(load_training_data(script_args.spec(), "kto"))


def main(argv: list[str] | None = None) -> None:
    run_entry(argv, "kto", KTOScriptArguments, PrefKTOConfig, PrefKTOTrainer, load_examples)


if __name__ == "__main__":
    main()
