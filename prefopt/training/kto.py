"""KTO training entry point, launched with ``accelerate launch`` like :mod:`prefopt.training.dpo`.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.kto --config train.yaml

It trains on KTO examples (``prefopt.schemas.UNPAIRED``, as strategy ``kto_unpaired`` writes them), or on a
pairs dataset given unpaired: every chosen completion is a desirable example and every rejected one an
undesirable example, each with its own judged score (``pref_score``); a completion that appears in several
pairs is used once (:func:`prefopt.training.data.kto_dataset`). ``train.yaml`` holds
:class:`KTOScriptArguments` and :class:`~prefopt.training.trainers.PrefKTOConfig` fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from prefopt.schemas import load_stage_dataset
from prefopt.training.data import kto_dataset
from prefopt.training.entry import run_entry
from prefopt.training.trainers import PrefKTOConfig, PrefKTOTrainer


@dataclass
class KTOScriptArguments:
    pairs_path: str = field(metadata={"help": "KTO examples or a pairs dataset (a pairs stage directory or a "
                                              "saved dataset)."})
    model_name_or_path: str = field(metadata={"help": "Policy model directory; also the reference model."})


def load_examples(script_args: KTOScriptArguments) -> Dataset:
    return kto_dataset(load_stage_dataset(script_args.pairs_path, {}, "KTO training data"), script_args.pairs_path)


def main(argv: list[str] | None = None) -> None:
    run_entry(argv, "kto", KTOScriptArguments, PrefKTOConfig, PrefKTOTrainer, load_examples)


if __name__ == "__main__":
    main()
