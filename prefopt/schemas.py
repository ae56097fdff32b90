"""The on-disk datasets through which stages talk, and checks that an input has what a stage needs.

Each stage writes a Hugging Face dataset with ``save_to_disk`` into its output directory, under
``data/``. The required columns are below (``docs/schemas.md`` explains each one); extra columns are kept.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from datasets import Dataset, load_from_disk
from datasets.fingerprint import generate_random_fingerprint

from prefopt.errors import DataError

DATA_DIR = "data"

CANDIDATES = {
    "candidate_id": "unique id '<prompt_id>/<generator>/<sample_index>'",
    "prompt_id": "id of the prompt, shared by all its candidates",
    "prompt": "the user message the generator answered",
    "reference": "gold answer if known, else null",
    "generator": "name of the generator that wrote the completion",
    "model": "model path or id of that generator",
    "sample_index": "0..n-1 within (prompt, generator)",
    "completion": "the generated text",
    "finish_reason": "'stop' (ended by itself) or 'length' (hit max_new_tokens)",
    "sampling": "struct: temperature, top_p, max_new_tokens, seed",
}

# Written by the generate stage, null unless a generator sets `logprobs: true`.
CANDIDATES_OPTIONAL = {
    "token_logprobs": "log-probability of each generated token under the generator (end-of-sequence included)",
    "cumulative_logprob": "their sum: log p(completion | prompt)",
}

JUDGMENTS = {
    **CANDIDATES,
    "judge": "name of the judge",
    "scores": "struct: one score per rubric dimension (null where the judge failed)",
    "aggregate": "the recipe's aggregate of the dimension scores (null where the judge failed)",
    "raw_judgment": "the judge's raw output (LLM judge: a JSON list of every answer, failed attempts included)",
    "parse_status": "'ok' or the reason the judgment could not be used",
}

# Written by the judge stage (not required of judgments made elsewhere).
JUDGMENTS_OPTIONAL = {
    "attempts": "engine calls the judgment took (LLM judge: 1 + retries; others: 1)",
    "sample_scores": "list of structs: each valid sample's scores (LLM judge with samples > 1: their mean is scores)",
}

PAIRS = {
    "pair_id": "unique id '<chosen_id>|<rejected_id>'",
    "prompt_id": "id of the prompt",
    "prompt": "the user message",
    "chosen": "preferred completion",
    "rejected": "dispreferred completion",
    "chosen_id": "candidate_id of the chosen completion",
    "rejected_id": "candidate_id of the rejected completion",
    "chosen_generator": "generator of the chosen completion",
    "rejected_generator": "generator of the rejected completion",
    "chosen_scores": "struct: judge scores of the chosen completion",
    "rejected_scores": "struct: judge scores of the rejected completion",
    "chosen_score": "aggregate score of the chosen completion",
    "rejected_score": "aggregate score of the rejected completion",
    "margin": "chosen_score - rejected_score",
    "margins": "struct: per-dimension chosen - rejected",
    "judge_agrees": "true where the judge scores chosen strictly above rejected",
    "strategy": "the strategy (and filter) that made the pair",
}

# Columns some strategies add to pairs (not required).
PAIRS_OPTIONAL = {
    "chosen_z": "within-prompt strategies: (chosen score - prompt mean) / prompt std (null if all equal)",
    "rejected_z": "within-prompt strategies: the same for the rejected completion",
    "prompt_candidates": "within-prompt strategies: judged candidates the prompt had",
    "external_margin": "margin_bayes: the external (judged) margin it calibrated",
    "implicit_margin": "margin_bayes: the proxy's implicit margin h = chosen log-ratio - rejected log-ratio",
    "fused_score": "margin_bayes: the fused score the pairs were ranked by",
    "system": "reward_augmented (placement system): the conditioning system message",
    "condition_score": "reward_augmented: the score stated in the conditioning text",
}

# KTO examples of strategy kto_unpaired: one row per judged candidate that got a label.
UNPAIRED = {
    "example_id": "candidate_id of the completion",
    "prompt_id": "id of the prompt",
    "prompt": "the user message",
    "completion": "the completion",
    "generator": "generator of the completion",
    "label": "true: desirable (score >= desirable_min); false: undesirable",
    "score": "aggregate score of the completion",
    "scores": "struct: judge scores of the completion",
    "class_weight": "n / (2 n_class): the weight under which both labels count equally",
    "strategy": "the rule that labelled it",
}

# What training needs: any preference dataset with these columns (plus the loss's gap column, if it uses one;
# a 'system' column, if present, becomes a system message).
TRAIN_PAIRS = {column: PAIRS[column] for column in ("prompt", "chosen", "rejected")}
# KTO trains on pairs given unpaired, or on these columns directly.
TRAIN_UNPAIRED = {column: UNPAIRED[column] for column in ("prompt", "completion", "label")}

EVAL_PREDICTIONS = {
    "set": "the evaluation set: the tiny world's 'in_domain' / 'out_of_domain', or a benchmark file's name",
    "domain": "'in_domain' or 'out_of_domain': which mean the set counts towards",
    "problem": "the problem",
    "answer": "gold answer",
    "completion": "the model's greedy completion",
    "correct": "final answer matches (tiny world: the step verifier; benchmark files: the math verifier)",
}


def require_columns(ds: Dataset, schema: dict[str, str], source: str, what: str) -> None:
    missing = [c for c in schema if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: dataset is missing column(s) {missing} needed as {what} "
            f"({'; '.join(f'{c}: {schema[c]}' for c in missing)}); it has {ds.column_names}"
        )


def arrow_dataset(table: pa.Table) -> Dataset:
    """A Dataset over an in-memory Arrow table. (Without a fingerprint, datasets would serialise every byte of
    the table to make one: a full copy of a million candidates.)"""
    return Dataset(table, fingerprint=generate_random_fingerprint())


def load_stage_dataset(path: str | Path, schema: dict[str, str], what: str) -> Dataset:
    """Load ``path`` (a stage directory or a saved dataset) and check it has the ``schema`` columns."""
    path = Path(path)
    data = path / DATA_DIR if (path / DATA_DIR).is_dir() else path
    if not data.exists():
        raise DataError(f"{path}: no dataset here (expected {what}, written by the previous stage)")
    try:
        ds = load_from_disk(str(data))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{data}: not a saved Hugging Face dataset ({err})") from None
    require_columns(ds, schema, str(data), what)
    return ds


def save_stage_dataset(ds: Dataset, stage_dir: str | Path) -> Path:
    out = Path(stage_dir) / DATA_DIR
    ds.save_to_disk(str(out))
    return out


def check_training_data(path: str | Path, method: str) -> None:
    """Pairs for DPO; pairs or KTO examples for KTO. Raises :class:`DataError` naming what is missing."""
    data = load_stage_dataset(path, {}, "training data")
    unpaired = "label" in data.column_names and "chosen" not in data.column_names
    if unpaired and method != "kto":
        raise DataError(f"{path}: holds KTO examples (unpaired); training.method {method!r} needs pairs")
    require_columns(data, TRAIN_UNPAIRED if unpaired else TRAIN_PAIRS, str(path), "training data")
