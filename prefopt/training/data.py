"""Training data in TRL's dataset formats, so that TRL's own code applies each model's chat template.

Data is read with :func:`prefopt.user_data.load_user_dataset` and checked row by row with
:func:`prefopt.schemas.check_training_data`. Then:

- lists of messages (TRL's conversational format, explicit or implicit prompt) go to TRL as they are;
- text with a ``prompt`` column (TRL's standard format, and prefopt's own pairs and KTO examples) is read as a chat:
  the prompt is the user's message (after a ``system`` column's system message), or the whole conversation of a
  ``prompt_messages`` column where it has one (prefopt's pairs of chat prompts), and each reply the assistant's, in
  TRL's conversational format;
- text without a ``prompt`` column (TRL's standard implicit-prompt format) goes to TRL as text: TRL splits off the
  shared start and trains on it with no chat template.

DPO gets ``prompt``/``chosen``/``rejected`` plus the judged gap (``pref_gap``) where the data has one; KTO gets
``prompt``/``completion``/``label`` plus the judged score (``pref_score``) where the data has one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset

from prefopt.cache import atomic_write, remove_stale_temporaries, temporary_path
from prefopt.engines.base import messages
from prefopt.schemas import TrainingData, check_training_data, prompt_conversation, split_implicit_prompt
from prefopt.training.dpo_trainer import PrefDPOConfig
from prefopt.training.kto_trainer import SCORE_KEY, PrefKTOConfig
from prefopt.training.losses import PAIR_LOSSES
from prefopt.training.trainer_base import GAP_KEY
from prefopt.user_data import DatasetSpec, load_user_dataset

if TYPE_CHECKING:
    from prefopt.training.config import TrainingConfig

logger = logging.getLogger(__name__)

TRAIN_DATA_DIR = "train_data"  # in the train stage: the checked rows of a training.dataset, which the ranks read
DATA_REPORT = "data_report.json"  # in the train stage: what the checks found
TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion", "system")


def prompt_messages(
    prompts: list[str], systems: list[str | None] | None = None, conversations: list[list[dict] | None] | None = None
) -> list[list[dict]]:
    """Chat messages of each text prompt: its conversation where one is given (a ``prompt_messages`` value), else
    the user turn; after the system message where one is given (:func:`prefopt.schemas.prompt_conversation`)."""
    n = len(prompts)
    return [
        messages(p, s) if m is None else prompt_conversation(p, m, s)
        for p, s, m in zip(prompts, systems or [None] * n, conversations or [None] * n)
    ]


def _assistant(texts: list[str]) -> list[list[dict]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


def _role_and_content(conversations: list[list[dict]]) -> list[list[dict]]:
    """Messages as checked: role and content (Arrow gives every message each key of its column, as null)."""
    return [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]


def to_conversational(pairs: Dataset, gap_column: str | None = "margin") -> Dataset:
    """Text pairs (prefopt's own, or TRL's standard format with a prompt) in TRL's conversational format, plus each
    pair's gap from ``gap_column`` as ``pref_gap`` (None: no gap)."""
    flat = pairs.flatten()
    if gap_column is not None and gap_column not in flat.column_names:
        raise ValueError(
            f"gap_column {gap_column!r} is not a column of the pairs; numeric columns: "
            f"{[c for c in flat.column_names if c == 'margin' or c.startswith('margins.')]}"
        )
    systems = pairs["system"] if "system" in pairs.column_names else None
    conversations = pairs["prompt_messages"] if "prompt_messages" in pairs.column_names else None
    columns = {
        "prompt": prompt_messages(pairs["prompt"], systems, conversations),
        "chosen": _assistant(pairs["chosen"]),
        "rejected": _assistant(pairs["rejected"]),
    }
    if gap_column is not None:
        columns[GAP_KEY] = [float(g) for g in flat[gap_column]]
    return Dataset.from_dict(columns)


def trl_pairs(data: TrainingData, gap_column: str) -> Dataset:
    """Checked pairs in TRL's preference format, plus ``pref_gap`` where the data has ``gap_column``."""
    pairs = data.dataset
    gap = gap_column if gap_column in pairs.flatten().column_names else None
    if not data.conversational and not data.implicit_prompt:
        return to_conversational(pairs, gap)
    columns = {
        c: _role_and_content(pairs[c]) if data.conversational else list(pairs[c])
        for c in ("prompt", "chosen", "rejected")
        if c in pairs.column_names
    }
    if gap is not None:
        columns[GAP_KEY] = [float(g) for g in pairs.flatten()[gap]]
    return Dataset.from_dict(columns)


def to_kto_examples(
    prompts: list,
    completions: list,
    labels: list[bool],
    scores: list[float] | None = None,
    systems: list[str | None] | None = None,
    chat: bool = True,
    conversations: list[list[dict] | None] | None = None,
) -> Dataset:
    """TRL's unpaired format plus each example's judged score (where given), shuffled (KTO reads sequentially:
    the two classes must be mixed). ``chat``: text prompts (or their ``conversations``) and completions become user
    and assistant turns."""
    columns = {
        "prompt": prompt_messages(prompts, systems, conversations) if chat else list(prompts),
        "completion": _assistant(completions) if chat else list(completions),
        "label": [bool(x) for x in labels],
    }
    if scores is not None:
        columns[SCORE_KEY] = [float(x) for x in scores]
    return Dataset.from_dict(columns).shuffle(seed=0)


def _unpaired_rows(data: TrainingData) -> dict[str, list | None]:
    """Pairs given unpaired: every chosen reply desirable and every rejected one undesirable, each reply once (with
    the label of the first pair it appears in; a reply is its candidate id where the pairs have chosen_id and
    rejected_id, else its prompt and text)."""
    rows = data.dataset.to_dict()
    if data.implicit_prompt:
        split = [split_implicit_prompt({"chosen": c, "rejected": r}) for c, r in zip(rows["chosen"], rows["rejected"])]
        rows |= {column: [s[column] for s in split] for column in ("prompt", "chosen", "rejected")}
    ids, scored = {"chosen_id", "rejected_id"} <= set(rows), {"chosen_score", "rejected_score"} <= set(rows)
    systems = rows.get("system", [None] * len(rows["prompt"]))
    conversations = rows.get("prompt_messages", [None] * len(rows["prompt"]))
    out: dict[str, list] = {"prompt": [], "completion": [], "label": [], "score": [], "system": [], "conversation": []}
    seen: set[str] = set()
    for i, (prompt, system, conversation) in enumerate(zip(rows["prompt"], systems, conversations)):
        for side, label in (("chosen", True), ("rejected", False)):
            key = (
                rows[f"{side}_id"][i]
                if ids
                else json.dumps([prompt, system, conversation, rows[side][i]], sort_keys=True)
            )
            if key not in seen:
                seen.add(key)
                for column, value in (
                    ("prompt", prompt),
                    ("completion", rows[side][i]),
                    ("label", label),
                    ("score", rows[f"{side}_score"][i] if scored else None),
                    ("system", system),
                    ("conversation", conversation),
                ):
                    out[column].append(value)
    repeated = 2 * len(rows["prompt"]) - len(out["label"])
    if repeated:
        logger.info(
            "%s: %d replies appear in more than one pair: each is one KTO example, labelled by its first pair",
            data.source,
            repeated,
        )
    return {**out, "score": out["score"] if scored else None}


def trl_examples(data: TrainingData) -> Dataset:
    """Checked KTO examples, or pairs given unpaired, in TRL's unpaired format (plus ``pref_score`` where the data
    has scores)."""
    if data.paired:
        rows = _unpaired_rows(data)
    else:
        rows = data.dataset.to_dict()
        rows.setdefault("score", None)
        rows.setdefault("system", None)
        rows["conversation"] = rows.get("prompt_messages")
    chat = not data.conversational and not data.implicit_prompt
    if data.conversational:
        rows["prompt"], rows["completion"] = _role_and_content(rows["prompt"]), _role_and_content(rows["completion"])
    return to_kto_examples(
        rows["prompt"], rows["completion"], rows["label"], rows["score"], rows["system"], chat, rows["conversation"]
    )


def _uses_of_the_signal(method: str, trl: dict) -> list[str]:
    """What in ``training.trl`` needs each pair's judged gap (DPO) or each example's score (KTO)."""
    from prefopt.training.launch import trl_defaults

    if method == "kto":
        kto = PrefKTOConfig(output_dir="unused", **{**trl_defaults(), **trl})
        return ["score_weighting"] * kto.score_weighting
    args = PrefDPOConfig(output_dir="unused", **{**trl_defaults(), **trl})
    uses = [f"pref_loss {args.pref_loss!r}"] if PAIR_LOSSES.get(args.pref_loss).uses_gap else []
    return uses + ["SFT routing"] * args.routes_to_sft + ["curriculum"] * args.curriculum


def required_columns(method: str, trl: dict, gap_column: str, columns: list[str]) -> dict[str, str]:
    """Columns the training config needs of data with ``columns`` -> why (for the error)."""
    uses = _uses_of_the_signal(method, trl)
    if not uses:
        return {}
    if method == "dpo":
        plain = PAIR_LOSSES.names(uses_gap=False)
        return {
            gap_column: f"{' and '.join(uses)} need{'s' * (len(uses) == 1)} each pair's judged gap (add a numeric "
            f"column {gap_column!r} or set training.gap_column to the column that holds it; or use "
            f"pref_loss {plain} without SFT routing or curriculum)"
        }
    paired = bool({"chosen", "rejected"} & set(columns))
    return {
        c: f"score_weighting needs each {'reply' if paired else 'example'}'s judged score (add a numeric "
        f"column {c!r}, or set score_weighting: false)"
        for c in (("chosen_score", "rejected_score") if paired else ("score",))
    }


def load_training_data(
    spec: DatasetSpec, method: str, gap_column: str = "margin", trl: dict | None = None
) -> TrainingData:
    """Read and check the training data ``spec`` names; with ``trl`` (training.trl), also that it holds the gap or
    score columns that config needs."""
    data = load_user_dataset(spec, TEXT_COLUMNS)
    required = required_columns(method, trl, gap_column, data.column_names) if trl is not None else None
    numeric = [gap_column] if method == "dpo" else ["score", "chosen_score", "rejected_score"]
    checked = check_training_data(data, spec.path, method, numeric, required)
    if method == "dpo" and gap_column not in data.flatten().column_names:
        logger.info("%s: no gap column %r: training without judged gaps", spec.path, gap_column)
    used = (
        *TEXT_COLUMNS,
        "prompt_messages",
        "label",
        *numeric,
        *(("chosen_id", "rejected_id") if method == "kto" else ()),
    )
    unused = [c for c in data.flatten().column_names if c not in used]
    if unused and checked.implicit_prompt:  # a misnamed prompt column would otherwise go unnoticed
        logger.warning(
            "%s: no prompt column: the prompt is the start chosen and rejected share (TRL's implicit "
            "prompt); columns %s are not used (rename the one holding the prompt with columns)",
            spec.path,
            unused,
        )
    elif unused:
        logger.info("%s: columns not used for training: %s", spec.path, unused)
    return checked


@dataclass(kw_only=True)
class DataArguments:
    """Where the entry points read their training data (:func:`load_training_data`)."""

    pairs_path: str = field(
        metadata={
            "help": "Training data: a .jsonl/.json, .parquet, .csv or .arrow file, a directory (a prefopt pairs stage, "
            "a save_to_disk dataset, a folder of data files) or a Hub dataset id; pairs or KTO examples in TRL's "
            "formats (docs/schemas.md)."
        }
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset: its config (subset)."})
    dataset_split: str = field(default="train", metadata={"help": "The split to read."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset: commit, tag or branch."})
    dataset_columns: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Renames {your column: expected column}, e.g. {question: prompt} (in the YAML config)."},
    )

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            self.pairs_path, self.dataset_config, self.dataset_split, self.dataset_revision, self.dataset_columns
        )


def _save_once(dataset: Dataset, path: Path) -> None:
    """Save ``dataset`` to ``path`` unless another process (a rank) got there first with the same rows."""
    remove_stale_temporaries(path)  # left by a killed run
    tmp = temporary_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not path.is_dir():
            raise


def prepare_training_data(source: Path | DatasetSpec, cfg: TrainingConfig, out: Path) -> Path:
    """Check the data the train stage ``out`` trains on (before any model or rank starts), write what the checks
    found to ``data_report.json``, and return the path the training ranks read: ``source`` itself, or, for a
    ``training.dataset``, its checked rows saved once in ``train_data/`` (a rerun resumes on those)."""
    user = isinstance(source, DatasetSpec)
    saved = out / TRAIN_DATA_DIR
    spec = DatasetSpec(str(saved)) if user and saved.is_dir() else source if user else DatasetSpec(str(source))
    checked = load_training_data(spec, cfg.method, cfg.gap_column, cfg.trl)
    report = json.dumps(checked.report(), indent=2)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / DATA_REPORT, lambda tmp: tmp.write_text(report))
    if not user:
        return Path(source)
    if not saved.is_dir():
        _save_once(checked.dataset, saved)
    return saved
