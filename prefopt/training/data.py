"""prefopt's datasets in TRL's conversational formats, so each model's own chat template renders the prompts.

Pairs become ``prompt``/``chosen``/``rejected`` message lists plus the judged gap (``pref_gap``); KTO trains on
``prompt``/``completion``/``label`` plus the judged score (``pref_score``). A ``system`` column, where
present, becomes a system message.
"""

from __future__ import annotations

import pandas as pd
from datasets import Dataset

from prefopt.generation.engines import messages
from prefopt.schemas import PAIRS, TRAIN_UNPAIRED, DataError, require_columns
from prefopt.training.trainers import GAP_KEY, SCORE_KEY

KTO_PAIRS = {c: PAIRS[c] for c in ("prompt", "chosen", "rejected", "chosen_id", "rejected_id", "chosen_score",
                                   "rejected_score")}


def prompt_messages(prompts: list[str], systems: list[str | None] | None = None) -> list[list[dict]]:
    """Chat messages of each prompt: a system message where one is given, then the user turn."""
    return [messages(p, s) for p, s in zip(prompts, systems or [None] * len(prompts))]


def _assistant(texts: list[str]) -> list[list[dict]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


def to_conversational(pairs: Dataset, gap_column: str = "margin") -> Dataset:
    """TRL's conversational preference format plus each pair's judged gap as ``pref_gap``."""
    flat = pairs.flatten()
    if gap_column not in flat.column_names:
        raise ValueError(f"gap_column {gap_column!r} is not a column of the pairs; numeric columns: "
                         f"{[c for c in flat.column_names if c == 'margin' or c.startswith('margins.')]}")
    systems = pairs["system"] if "system" in pairs.column_names else None
    return Dataset.from_dict({
        "prompt": prompt_messages(pairs["prompt"], systems),
        "chosen": _assistant(pairs["chosen"]),
        "rejected": _assistant(pairs["rejected"]),
        GAP_KEY: [float(g) for g in flat[gap_column]],
    })


def to_kto_examples(prompts: list[str], completions: list[str], labels: list[bool], scores: list[float],
                    systems: list[str | None] | None = None) -> Dataset:
    """TRL's conversational unpaired format plus each example's judged score, shuffled (KTO reads sequentially:
    the two classes must be mixed)."""
    return Dataset.from_dict({
        "prompt": prompt_messages(prompts, systems),
        "completion": _assistant(completions),
        "label": [bool(x) for x in labels],
        SCORE_KEY: [float(x) for x in scores],
    }).shuffle(seed=0)


def to_unpaired(pairs: Dataset) -> Dataset:
    """Chosen completions as desirable and rejected ones as undesirable examples, each candidate once (with the
    label of the first pair it appears in)."""
    frame = pairs.select_columns(list(KTO_PAIRS)).to_pandas()
    sides = [pd.DataFrame({"order": 2 * frame.index + i, "prompt": frame["prompt"], "id": frame[f"{side}_id"],
                           "completion": frame[side], "label": side == "chosen", "score": frame[f"{side}_score"]})
             for i, side in enumerate(("chosen", "rejected"))]
    examples = pd.concat(sides).sort_values("order").drop_duplicates("id", keep="first")
    return to_kto_examples(examples["prompt"].tolist(), examples["completion"].tolist(), examples["label"].tolist(),
                           examples["score"].tolist())


def kto_dataset(data: Dataset, source: str) -> Dataset:
    """KTO examples (``prefopt.schemas.UNPAIRED``, or any dataset with prompt/completion/label) as they are, or
    pairs given unpaired."""
    if "label" in data.column_names and "chosen" not in data.column_names:
        require_columns(data, TRAIN_UNPAIRED, source, "KTO examples")
        scores = data["score"] if "score" in data.column_names else [1.0] * len(data)
        systems = data["system"] if "system" in data.column_names else None
        return to_kto_examples(data["prompt"], data["completion"], data["label"], scores, systems)
    if "chosen" not in data.column_names:
        raise DataError(f"{source}: neither KTO examples (columns {list(TRAIN_UNPAIRED)}) nor pairs (columns "
                        f"{list(KTO_PAIRS)}); it has {data.column_names}")
    require_columns(data, KTO_PAIRS, source, "KTO training pairs")
    return to_unpaired(data)
