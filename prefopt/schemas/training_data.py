"""Training data in TRL's formats (pairs or KTO's unpaired examples; text or lists of messages) checked row by row
before any model loads (:func:`check_training_data`), and the message rules it applies: a valid prompt, the
conversation a reply answers, TRL's implicit prompt."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import datasets
from datasets import Dataset

from prefopt.errors import DataError
from prefopt.schemas.columns import TRAIN_UNPAIRED

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
EXPECTED_VALUE = "expected text or a list of messages"


@dataclass
class TrainingData:
    """Training data after :func:`check_training_data`: the rows kept (columns as given) and its format."""

    dataset: Dataset
    source: str
    paired: bool  # TRL's preference format (else: unpaired prompt/completion/label)
    conversational: bool  # lists of messages (else: text)
    implicit_prompt: bool  # pairs without a prompt column: the prompt is the shared start of chosen and rejected
    rows: int  # rows read
    dropped: dict[str, list[int]] = field(default_factory=dict)  # reason -> rows left out of training
    noted: dict[str, list[int]] = field(default_factory=dict)  # oddity -> rows trained on as they are

    def report(self) -> dict:
        return {
            "source": self.source,
            "format": "pairs" if self.paired else "unpaired examples",
            "conversational": self.conversational,
            "implicit_prompt": self.implicit_prompt,
            "rows": self.rows,
            "rows_trained": len(self.dataset),
            "dropped": {k: len(v) for k, v in self.dropped.items()},
            "noted": {k: len(v) for k, v in self.noted.items()},
            "rows_of": {k: v[:20] for k, v in {**self.dropped, **self.noted}.items()},
        }


def _format_columns(columns: list[str]) -> tuple[bool, list[str]]:
    """Whether the columns are pairs (else unpaired examples), and the required columns they lack."""
    have = set(columns)
    if have & {"chosen", "rejected"} or not have & {"completion", "label"}:
        return True, [c for c in ("chosen", "rejected") if c not in have]
    return False, [c for c in TRAIN_UNPAIRED if c not in have]


def _value_problem(value, column: str, implicit: bool) -> str | None:
    """What is wrong with one value of a text column (None: nothing). An empty reply is allowed (it is counted):
    an empty prompt, an empty whole conversation (implicit prompt) or an empty non-assistant turn is not."""
    if value is None:
        return f"null ({EXPECTED_VALUE})"
    if isinstance(value, str):
        return "empty text" if (column == "prompt" or implicit) and not value.strip() else None
    if not isinstance(value, list):
        return f"type {type(value).__name__} ({EXPECTED_VALUE})"
    if not value:
        return "an empty list of messages (expected at least one message)"
    for j, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message:
            return f"message {j} is not a mapping with role and content"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"message {j} has role {role!r} (expected one of {list(ROLES)})"
        extra = [k for k, v in message.items() if k not in ("role", "content") and v is not None]
        if extra:
            return f"message {j} ({role}) has {extra[0]!r} (expected role and content only)"
        if content is None:
            return f"message {j} ({role}) has null content (expected text)"
        if not isinstance(content, str):
            return f"message {j} ({role}) has content of type {type(content).__name__} (expected text)"
        if not content.strip() and (column == "prompt" or role != "assistant"):
            return f"message {j} ({role}) has empty content"
    return None


def _is_empty_reply(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return any(m["role"] == "assistant" and not m["content"].strip() for m in value)


def _prompt_problem(roles: list[str]) -> str | None:
    """Roles of a prompt: optional system turns, then user and assistant taking turns, ending with user."""
    first = next((i for i, r in enumerate(roles) if r != "system"), len(roles))
    for j, role in enumerate(roles[first:]):
        expected = "user" if j % 2 == 0 else "assistant"
        if role != expected:
            return (
                f"roles {roles} out of order: turn {first + j} is {role} (expected optional system turns, then "
                "user and assistant turns taking turns, starting with user)"
            )
    if first == len(roles):
        return f"roles {roles} (expected a user turn after the system turns)"
    if roles[-1] != "user":
        return f"roles {roles}: the prompt ends with an assistant turn (expected it to end with a user turn)"
    return None


def _reply_problem(roles: list[str]) -> str | None:
    """Roles of a reply to a prompt: assistant and user turns taking turns, starting and ending with assistant."""
    if roles != ["assistant" if j % 2 == 0 else "user" for j in range(len(roles))] or roles[-1] != "assistant":
        return f"roles {roles} (expected the assistant's reply: assistant turns, ending with one)"
    return None


def _roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


def prompt_problem(value) -> str | None:
    """What is wrong with one prompt (None: nothing): text, or a list of messages of optional system turns, then user
    and assistant turns taking turns, ending with the user's."""
    problem = _value_problem(value, "prompt", False)
    if problem is None and isinstance(value, list):
        problem = _prompt_problem(_roles(value))
    return problem


def prompt_conversation(
    prompt: str, prompt_messages: list[dict] | None = None, system: str | None = None
) -> list[dict]:
    """The conversation a reply answers: ``prompt_messages`` where given (role and content only), else ``prompt`` as
    the user's turn; a ``system`` text (a pairs' system column) goes first: as the system turn, or, where the
    conversation has its own, before that turn's text (a blank line between)."""
    if prompt_messages is None:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    conversation = [{"role": m["role"], "content": m["content"]} for m in prompt_messages]
    if system and conversation[0]["role"] == "system":
        conversation[0]["content"] = f"{system}\n\n{conversation[0]['content']}"
    elif system:
        conversation.insert(0, {"role": "system", "content": system})
    return conversation


def split_implicit_prompt(row: dict) -> dict:
    """``row`` split into prompt, chosen and rejected by TRL's own extract_prompt, as its trainers will."""
    from trl.data_utils import extract_prompt

    return extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})


def _order_problem(row: dict, replies: tuple[str, ...]) -> tuple[str, str] | None:
    """(column, problem) of the first role-order problem of one row of messages, if any."""
    prompt_column, prefix = "prompt", ""
    if "prompt" not in row:  # implicit prompt: the turns chosen and rejected share
        for column in replies:
            roles = _roles(row[column])
            if roles[-1] != "assistant":
                return column, f"roles {roles}: the conversation ends with a {roles[-1]} turn (expected assistant)"
        row, prompt_column, prefix = split_implicit_prompt(row), "chosen", "the turns chosen and rejected share: "
        if not row["prompt"]:
            return "chosen", (
                "chosen and rejected share no first turns (with no prompt column the prompt is the "
                "turns they share; add a prompt column)"
            )
    problem = _prompt_problem(_roles(row["prompt"]))
    if problem:
        return prompt_column, prefix + problem
    for column in replies:
        problem = _reply_problem(_roles(row[column]))
        if problem:
            return column, problem
    return None


def _number_problem(value) -> str | None:
    if value is None:
        return "null (expected a number)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"type {type(value).__name__} (expected a number)"
    if not math.isfinite(value):
        return f"{value} (expected a finite number)"
    return None


def _row_key(row: dict, columns: list[str]) -> str:
    return json.dumps([row.get(c) for c in columns], sort_keys=True, ensure_ascii=False)


def check_training_data(
    data: Dataset, source: str, method: str, numeric: list[str] | None = None, required: dict[str, str] | None = None
) -> TrainingData:
    """Check training data in TRL's formats, row by row, before any model loads.

    Invalid rows raise a one-line :class:`DataError` naming ``source``, the row (counted from 0) and the column: a
    null, an empty prompt, a value that is neither text nor a list of messages, a message without text content, an
    empty list of messages, roles out of order, text mixed with messages, a label that is not true/false.
    ``numeric`` columns (gap or score columns) must hold finite numbers where present; ``required`` columns must be
    there (column -> why, for the error). Pairs whose chosen equals rejected are dropped (they carry no preference);
    duplicate rows and empty replies are counted and kept. Both are logged.
    """
    paired, missing = _format_columns(data.column_names)
    if missing:
        raise DataError(
            f"{source}: column {missing[0]}: missing (the data has columns {data.column_names}; expected "
            "pairs: chosen, rejected and optionally prompt (TRL's preference format), or KTO examples: "
            "prompt, completion and label (TRL's unpaired format); rename columns with "
            "training.dataset.columns)"
        )
    if paired and {"completion", "label"} <= set(data.column_names):
        raise DataError(
            f"{source}: holds both pairs (chosen, rejected) and KTO examples (completion, label); keep one format"
        )
    if not paired and method != "kto":
        raise DataError(
            f"{source}: holds KTO examples (unpaired: prompt, completion, label); training.method "
            f"{method!r} needs pairs (chosen, rejected)"
        )
    flat = data.flatten()
    for column, why in (required or {}).items():
        if column not in flat.column_names:
            raise DataError(f"{source}: column {column}: missing; {why}")
    replies = ("chosen", "rejected") if paired else ("completion",)
    implicit = "prompt" not in data.column_names
    texts = replies if implicit else ("prompt", *replies)
    checked = [*texts, *(c for c in ("system", "prompt_messages", "label") if c in data.column_names)]
    numbers = [c for c in numeric or [] if c in flat.column_names]
    mixed = getattr(datasets, "Json", ())  # datasets >= 5 reads a JSON column of mixed types as Json, lossily
    for column in [*checked, *numbers]:
        if isinstance((data if column in checked else flat).features[column], mixed):
            raise DataError(
                f"{source}: column {column}: values of different types in different rows (expected "
                f"{'a number' if column in numbers else 'true or false' if column == 'label' else 'text'} "
                f"in every row{', or a list of messages in every row' if column in texts else ''})"
            )
    values = data.select_columns(checked).to_dict() | flat.select_columns(numbers).to_dict()
    conversational = False
    dropped: dict[str, list[int]] = {}
    noted: dict[str, list[int]] = {}
    seen: set[str] = set()
    for i in range(len(data)):
        row = {c: values[c][i] for c in checked}

        def fail(column: str, problem: str, i: int = i):
            raise DataError(f"{source}: row {i}, column {column}: {problem}")

        for column in texts:
            problem = _value_problem(row[column], column, implicit)
            if problem:
                fail(column, problem)
        lists = [c for c in texts if isinstance(row[c], list)]
        if lists and len(lists) < len(texts):
            fail(
                next(c for c in texts if c not in lists),
                f"text, but {lists[0]} is a list of messages (expected all text or all lists of messages)",
            )
        conversational = bool(lists)
        if row.get("system") is not None:
            if conversational or implicit:
                fail(
                    "system", "a system column goes with text prompts (put the system turn into the prompt's messages)"
                )
            if not isinstance(row["system"], str):
                fail("system", f"type {type(row['system']).__name__} (expected text or null)")
        if row.get("prompt_messages") is not None:
            if conversational or implicit:
                fail("prompt_messages", "a prompt_messages column goes with text prompts (a prompt column of text)")
            problem = prompt_problem(row["prompt_messages"])
            if problem:
                fail("prompt_messages", problem)
            if row["prompt_messages"][-1]["content"] != row["prompt"]:
                fail(
                    "prompt_messages",
                    "its last turn is not the text of the prompt column (expected the conversation "
                    "that ends with the prompt)",
                )
        if "label" in row and not isinstance(row["label"], bool):
            fail("label", f"{row['label']!r} (expected true or false)")
        for column in numbers:
            problem = _number_problem(values[column][i])
            if problem:
                fail(column, problem)
        if paired and row["chosen"] == row["rejected"]:
            dropped.setdefault("chosen identical to rejected", []).append(i)
            continue
        if conversational:
            problem = _order_problem(row, replies)
            if problem:
                fail(*problem)
        elif implicit:
            prompt = split_implicit_prompt(row)["prompt"]
            if not prompt or not (row["chosen"].startswith(prompt) and row["rejected"].startswith(prompt)):
                fail(
                    "chosen",
                    "chosen and rejected share no beginning (with no prompt column the prompt is the text "
                    "they start with; add a prompt column)",
                )
        if any(_is_empty_reply(row[c]) for c in replies):
            noted.setdefault("empty replies", []).append(i)
        key = _row_key(row, checked)
        if key in seen:
            noted.setdefault("duplicate rows", []).append(i)
        seen.add(key)
    drop = {i for rows in dropped.values() for i in rows}
    kept = data.select([i for i in range(len(data)) if i not in drop]) if drop else data
    for reason, rows in dropped.items():
        logger.warning(
            "%s: %d of %d rows dropped: %s (rows %s%s)",
            source,
            len(rows),
            len(data),
            reason,
            rows[:10],
            " ..." if len(rows) > 10 else "",
        )
    for oddity, rows in noted.items():
        logger.warning(
            "%s: %d of %d rows kept with %s (rows %s%s)",
            source,
            len(rows),
            len(data),
            oddity,
            rows[:10],
            " ..." if len(rows) > 10 else "",
        )
    if not len(kept):
        raise DataError(f"{source}: no rows to train on ({len(data)} read, {len(drop)} dropped)")
    if not paired and len(set(values["label"])) == 1:
        raise DataError(
            f"{source}: column label: {values['label'][0]} in all {len(data)} rows (expected desirable "
            "and undesirable examples: KTO needs both)"
        )
    return TrainingData(kept, source, paired, conversational, implicit, len(data), dropped, noted)
