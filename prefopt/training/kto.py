"""KTO training entry point, launched with ``accelerate launch`` like :mod:`prefopt.training.dpo`.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m prefopt.training.kto --config train.yaml

It trains on the pairs dataset given unpaired: every chosen completion is a desirable example and every
rejected one an undesirable example, each with its own judged score (``pref_score``); a completion that
appears in several pairs is used once. ``train.yaml`` holds :class:`KTOScriptArguments` and
:class:`~prefopt.training.trainers.PrefKTOConfig` fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from prefopt.schemas import PAIRS
from prefopt.training.entry import run_entry
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
    run_entry(argv, "kto", KTOScriptArguments, PrefKTOConfig, PrefKTOTrainer, KTO_PAIRS,
              lambda pairs, script_args: to_unpaired(pairs))


if __name__ == "__main__":
    main()
