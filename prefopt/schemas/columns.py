"""The columns of every on-disk dataset through which stages talk (``docs/schemas.md`` explains each one; a test
keeps the two in step), and loading and saving a stage's dataset with its columns checked.

Each stage writes a Hugging Face dataset with ``save_to_disk`` into its output directory, under ``data/``; extra
columns are kept.
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
    "prompt": "the user message the generator answered (a conversation's last turn)",
    "reference": "gold answer if known, else null",
    "generator": "name of the generator that wrote the completion",
    "model": "model path or id of that generator",
    "sample_index": "0..n-1 within (prompt, generator)",
    "completion": "the generated text",
    "finish_reason": "'stop' (ended by itself) or 'length' (hit max_new_tokens)",
    "sampling": "struct: temperature, top_p, max_new_tokens, seed",
}

# Written by the generate stage (not required of candidates made elsewhere: without prompt_messages the conversation
# is the prompt alone, as the user's turn); the log-probabilities are null unless a generator sets `logprobs: true`.
CANDIDATES_OPTIONAL = {
    "prompt_messages": "the whole conversation the generator answered, as a list of {role, content} messages: "
    "the system turn (the row's own or generation.prompts.system_prompt), earlier turns, and the last user turn, "
    "whose text is prompt",
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
    "prompt_messages": "the conversation (as in candidates), where the judgments have it; training's prompt",
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

# Columns KTO examples carry where the judgments have them (not required).
UNPAIRED_OPTIONAL = {
    "prompt_messages": "the conversation (as in candidates), where the judgments have it; training's prompt",
}

# What training reads: TRL's preference format (prompt optional: without it the prompt is the shared start of
# chosen and rejected) or TRL's unpaired format, each as text or as lists of {role, content} messages; plus the
# loss's gap column where it uses one, and a 'system' column for text prompts (see check_training_data).
TRAIN_PAIRS = {
    "prompt": "the prompt: text (the user's message) or a list of messages ending with a user turn; optional",
    "chosen": "the preferred reply: text or a list of assistant messages (with no prompt: the whole conversation)",
    "rejected": "the dispreferred reply, like chosen",
}
TRAIN_UNPAIRED = {
    "prompt": "the prompt, as for pairs",
    "completion": "the reply: text or a list of assistant messages",
    "label": "true: desirable; false: undesirable",
}
TRAIN_OPTIONAL = {
    "system": "text prompts: a system message before the user's (null: none)",
    "prompt_messages": "text prompts: the whole conversation before the reply (a list of messages whose last, "
    "user turn is prompt), trained in place of prompt (null: the prompt alone)",
    "margin": "pairs: the judged gap the loss uses (training.gap_column names another column)",
    "score": "KTO examples: the judged score, for score_weighting (pairs given unpaired: chosen_score, rejected_score)",
}

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
