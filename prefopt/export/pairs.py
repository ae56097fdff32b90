"""``prefopt export pairs``: a pairs stage's output in TRL's preference (or unpaired) format, with a dataset card
and a histogram of the judged gaps (of the scores, for KTO examples)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from datasets import Dataset

from prefopt.errors import ConfigError
from prefopt.export.common import Source, empty_output, read_json, stage_input
from prefopt.schemas import TRAIN_PAIRS, TRAIN_UNPAIRED, load_stage_dataset, prompt_conversation, require_columns
from prefopt.tables import num, pct

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")


def to_trl_format(data: Dataset, source: str) -> tuple[Dataset, bool]:
    """Pairs (or KTO examples) in TRL's preference (unpaired) format, every other column kept; and whether the
    rows are conversational (they are when a ``system`` column holds a message, or a ``prompt_messages`` column a
    conversation of more than the user's turn: then the prompt is that conversation)."""
    unpaired = "label" in data.column_names and "chosen" not in data.column_names
    answers = ["completion"] if unpaired else ["chosen", "rejected"]
    require_columns(data, TRAIN_UNPAIRED if unpaired else TRAIN_PAIRS, source, "exported pairs")
    context = [c for c in ("system", "prompt_messages") if c in data.column_names]
    if not context:
        return data, False
    systems = "system" in context and any(data["system"])
    chats = "prompt_messages" in context and any(m is not None and len(m) > 1 for m in data["prompt_messages"])
    if not systems and not chats:
        return data.remove_columns(context), False

    def convert(row: dict) -> dict:
        return {
            "prompt": prompt_conversation(row["prompt"], row.get("prompt_messages"), row.get("system")),
            **{a: [{"role": "assistant", "content": row[a]}] for a in answers},
        }

    return data.map(convert, remove_columns=context, desc="conversational"), True


def text_histogram(values: pd.Series, bins: int = 10) -> list[str]:
    """A Markdown table of counts per value range."""
    counts, edges = np.histogram(values.dropna(), bins=bins)
    return ["| range | rows |", "| --- | --- |"] + [
        f"| [{lo:.3g}, {hi:.3g}{']' if i == bins - 1 else ')'} | {n} |"
        for i, (lo, hi, n) in enumerate(zip(edges, edges[1:], counts))
    ]


def pairs_card(
    title: str,
    data: Dataset,
    conversational: bool,
    data_file: str,
    stats: dict | None,
    judge: str | None,
    generators: dict[str, str | None],
    image: str,
) -> str:
    """The dataset card (README.md) of exported pairs."""
    frame = data.select_columns([c for c in ("label", "score", "margin") if c in data.column_names]).to_pandas()
    unpaired = "label" in frame.columns
    kind = "KTO examples (unpaired)" if unpaired else "preference pairs"
    header = {
        "tags": ["prefopt", "trl", "kto" if unpaired else "dpo"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
    }
    columns = ["prompt", "completion", "label"] if unpaired else ["prompt", "chosen", "rejected"]
    shape = (
        "conversational: lists of chat messages, the system message first" if conversational else "standard: plain text"
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {title}",
        "",
        f"{len(data)} {kind} built by prefopt from judged generations, in TRL's "
        f"{'unpaired ' if unpaired else ''}preference format ({', '.join(f'`{c}`' for c in columns)}; {shape}). "
        f"The other columns are prefopt's own (`margin`: the judged gap chosen - rejected; `*_score(s)`: the "
        f"judge's scores).",
        "",
        "| | |",
        "| --- | --- |",
        f"| strategy | `{(stats or {}).get('strategy', 'unknown (no stats.json)')}` |",
        f"| judge | `{judge or 'unknown (no judge output recorded)'}` |",
        "| generators | "
        + (", ".join(f"`{g}`" + (f" ({m})" if m else "") for g, m in generators.items()) or "unknown")
        + " |",
        f"| rows | {len(data)} |",
        "",
        "```python",
        "from datasets import load_dataset",
        f'data = load_dataset("{"json" if data_file.endswith(".jsonl") else "parquet"}", '
        f'data_files="{data_file}", split="train")',
        "```",
        "",
    ]
    if stats:
        lines += [
            "## Counts (`stats.json` of the pairs stage)",
            "",
            "What was built, and what was dropped on the way (`unjudged_candidates`, "
            "`prompts_too_few_candidates`, `ties_dropped`, `dropped_by_*`):",
            "",
            "| count | value |",
            "| --- | --- |",
        ]
        lines += [
            f"| {k} | {num(v) if isinstance(v, float) else v} |"
            for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        lines.append("")
    if unpaired:
        lines += [
            "## Judged scores",
            "",
            f"Desirable: {int(frame['label'].sum())}, undesirable: {int((~frame['label']).sum())}.",
            "",
            f"![scores by label]({image})",
            "",
        ]
        lines += text_histogram(frame["score"]) if "score" in frame.columns else []
    elif "margin" in frame.columns:
        lines += [
            "## Judged gap (chosen - rejected)",
            "",
            f"Mean {num(float(frame['margin'].mean()))}, judge agrees "
            f"(gap > 0) on {pct(float((frame['margin'] > 0).mean()))}.",
            "",
            f"![gap histogram]({image})",
            "",
        ]
        lines += text_histogram(frame["margin"])
    return "\n".join(lines) + "\n"


def pairs_generators(source: Source, data: Dataset) -> dict[str, str | None]:
    """Generator name -> model: from the recipe, else from the judgments, else the names in the data."""
    if source.recipe is not None:
        return {g.name: g.model for g in source.recipe.generation.generators}
    judge_dir = stage_input(source.path)
    if judge_dir is not None and judge_dir.is_dir():
        frame = load_stage_dataset(judge_dir, {}, "judgments").select_columns(["generator", "model"]).to_pandas()
        return dict(frame.drop_duplicates("generator").itertuples(index=False, name=None))
    names = [c for c in ("generator", "chosen_generator", "rejected_generator") if c in data.column_names]
    return {g: None for c in names for g in dict.fromkeys(data[c])}


def export_pairs(source: Source, fmt: str, output: str | Path) -> Path:
    """Write the pairs of ``source`` as ``train.<fmt>``, its card and histogram into ``output``; returns it."""
    from prefopt import plots

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {list(FORMATS)}")
    data = load_stage_dataset(source.path, {}, "pairs")
    exported, conversational = to_trl_format(data, str(source.path))
    out = empty_output(output)
    data_file = f"train.{fmt}"
    if fmt == "jsonl":  # json.dumps writes every float exactly (pandas' to_json rounds to 10 digits)
        with open(out / data_file, "w", encoding="utf-8") as f:
            for batch in exported.iter(batch_size=1000):
                for row in (dict(zip(batch, values)) for values in zip(*batch.values())):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        exported.to_parquet(str(out / data_file))
    flat = data.flatten().to_pandas()
    if "label" in flat.columns:
        image = plots.plot_label_scores(flat, out / "score_histogram.png").name
    else:
        image = plots.plot_margins(flat, out / "gap_histogram.png").name
    stats = read_json(source.path / "stats.json")
    judge_dir = stage_input(source.path)
    quality = read_json(judge_dir / "quality.json") if judge_dir else None
    judge = quality["judge"] if quality else source.recipe.judging.judge if source.recipe else None
    title = f"{source.recipe.name}: pairs" if source.recipe else f"prefopt pairs ({source.path.name})"
    (out / "README.md").write_text(
        pairs_card(title, data, conversational, data_file, stats, judge, pairs_generators(source, data), image)
    )
    logger.info("Exported %d rows (%s) to %s", len(exported), "conversational" if conversational else "standard", out)
    return out
