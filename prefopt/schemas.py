"""The on-disk datasets through which stages talk, and checks that an input has what a stage needs.

Each stage writes a Hugging Face dataset with ``save_to_disk`` into its output directory, under
``data/``. The required columns are below (``docs/schemas.md`` explains each one); extra columns are kept.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_from_disk

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

JUDGMENTS = {
    **CANDIDATES,
    "judge": "name of the judge",
    "scores": "struct: one score per rubric dimension (null where the judge failed)",
    "aggregate": "the recipe's aggregate of the dimension scores (null where the judge failed)",
    "raw_judgment": "the judge's raw output",
    "parse_status": "'ok' or the reason the judgment could not be used",
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

# What training needs: any preference dataset with these columns (plus the loss's gap column, if it uses one).
TRAIN_PAIRS = {column: PAIRS[column] for column in ("prompt", "chosen", "rejected")}

EVAL_PREDICTIONS = {
    "split": "'in_domain' or 'out_of_domain'",
    "problem": "the problem",
    "answer": "gold answer",
    "completion": "the model's greedy completion",
    "correct": "final answer matches",
}


class DataError(ValueError):
    """An input dataset that a stage cannot use; the message names the path and the column."""


def require_columns(ds: Dataset, schema: dict[str, str], source: str, what: str) -> None:
    missing = [c for c in schema if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: dataset is missing column(s) {missing} needed as {what} "
            f"({'; '.join(f'{c}: {schema[c]}' for c in missing)}); it has {ds.column_names}"
        )


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
