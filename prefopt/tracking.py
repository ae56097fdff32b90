"""Trackers: the judge's and the pairs' statistics in the same tracker run as the training metrics.

A recipe names its trackers where the Hugging Face Trainer reads them, ``training.trl.report_to`` (with
``project`` and ``run_name``): ``none``, ``tensorboard``, ``wandb``, ``trackio`` or a list of them. Each tracker
is an optional package (``pip install "prefopt[track]"``); :func:`prefopt.trackers.check_report_to` refuses, when
the recipe loads, a tracker that is not installed or that prefopt does not log its statistics to.

The Trainer's own callbacks open the run (TensorBoard's writer under the train stage's directory, ``wandb.init``,
``trackio.init``); :class:`StageStatisticsCallback`, added by the training entry point after them, then logs into
that run, at step 0: the judge stage's ``quality.json`` (parse failures, retries, generator ranking, position
bias, agreement with a reference verifier) and score histograms per dimension, and the pairs stage's
``stats.json`` counts, the kept fraction and the judged-gap histograms. The statistics are found from the pairs
directory being trained on: its ``stats.json``, and the judge directory its manifest names as input.

Tags: ``judge/...`` and ``pairs/...`` (scalars), ``judge/scores/<dimension>``, ``judge/aggregate/<generator>``,
``pairs/gap/<dimension>`` or, for KTO examples, ``pairs/score/<label>`` (histograms), and ``judge/quality``,
``pairs/summary`` (Markdown text; wandb and trackio get them in the run's config).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback, TrackioCallback, WandbCallback

from prefopt.cache import MANIFEST
from prefopt.trackers import check_report_to, requested_trackers

logger = logging.getLogger(__name__)


@dataclass
class StageStatistics:
    """What the tracker gets: scalars, value arrays to histogram, and Markdown texts, by tag."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scalars) + len(self.histograms) + len(self.texts)


def flatten_numbers(value: Any, prefix: str) -> dict[str, float]:
    """Every number in a JSON value, tagged by its path. Lists of generator matchups are keyed '<a>_vs_<b>';
    other lists (examples of ids), strings and nulls are no scalars."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten_numbers(item, f"{prefix}/{key}"))
    elif isinstance(value, list):
        for item in value:
            pair = ("first", "second") if isinstance(item, dict) and "first" in item else ("chosen", "rejected")
            if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in pair):
                rest = {k: v for k, v in item.items() if k not in pair}
                out.update(flatten_numbers(rest, f"{prefix}/{item[pair[0]]}_vs_{item[pair[1]]}"))
    return out


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _frame(stage_dir: Path, columns: list[str]):
    """The requested columns (those present) of a stage's saved dataset, flattened, as pandas."""
    from prefopt.schemas import load_stage_dataset

    data = load_stage_dataset(stage_dir, {}, "statistics")
    return data.select_columns([c for c in columns if c in data.column_names]).flatten().to_pandas()


def judge_statistics(judge_dir: Path) -> StageStatistics:
    """quality.json's numbers, score histograms per dimension and per generator, and quality.md."""
    stats = StageStatistics()
    quality = _read_json(judge_dir / "quality.json")
    if quality is None:
        return stats
    stats.scalars.update(flatten_numbers(quality, "judge"))
    stats.texts["judge/name"] = str(quality.get("judge"))
    if (judge_dir / "quality.md").is_file():
        stats.texts["judge/quality"] = (judge_dir / "quality.md").read_text()
    frame = _frame(judge_dir, ["generator", "aggregate", "scores"])
    for column in [c for c in frame.columns if c == "aggregate" or c.startswith("scores.")]:
        values = frame[column].dropna().to_numpy(dtype=float)
        if values.size:
            stats.histograms[f"judge/scores/{column.removeprefix('scores.')}"] = values
    for generator, group in frame.groupby("generator"):
        values = group["aggregate"].dropna().to_numpy(dtype=float)
        if values.size:
            stats.histograms[f"judge/aggregate/{generator}"] = values
    return stats


def pair_statistics(pairs_dir: Path) -> StageStatistics:
    """stats.json's numbers, the kept fraction, gap (or, for KTO examples, score) histograms, and summary.md."""
    stats = StageStatistics()
    counts = _read_json(pairs_dir / "stats.json")
    if counts is None:
        return stats
    stats.scalars.update(flatten_numbers(counts, "pairs"))
    stats.texts["pairs/strategy"] = str(counts.get("strategy"))
    unpaired = "examples_kept" in counts
    kept, total = (
        (counts["examples_kept"], counts["candidates"]) if unpaired else (counts["pairs_kept"], counts["pairs_built"])
    )
    if total:
        stats.scalars["pairs/kept_fraction"] = kept / total
    if (pairs_dir / "report" / "summary.md").is_file():
        stats.texts["pairs/summary"] = (pairs_dir / "report" / "summary.md").read_text()
    if unpaired:
        frame = _frame(pairs_dir, ["label", "score"])
        for label, name in ((True, "desirable"), (False, "undesirable")):
            values = frame.loc[frame["label"] == label, "score"].dropna().to_numpy(dtype=float)
            if values.size:
                stats.histograms[f"pairs/score/{name}"] = values
        return stats
    frame = _frame(pairs_dir, ["margin", "margins"])
    for column in [c for c in frame.columns if c == "margin" or c.startswith("margins.")]:
        values = frame[column].dropna().to_numpy(dtype=float)
        if values.size:
            name = "aggregate" if column == "margin" else column.removeprefix("margins.")
            stats.histograms[f"pairs/gap/{name}"] = values
    return stats


def stage_statistics(pairs_dir: str | Path) -> StageStatistics:
    """The statistics of the pairs directory trained on and of the judge directory it was built from (none for
    data made elsewhere, which has no stats.json or manifest)."""
    pairs_dir = Path(pairs_dir)
    stats = pair_statistics(pairs_dir)
    manifest = _read_json(pairs_dir / MANIFEST) or {}
    if manifest.get("input"):
        judged = judge_statistics(Path(manifest["input"]))
        stats = StageStatistics(
            {**judged.scalars, **stats.scalars},
            {**judged.histograms, **stats.histograms},
            {**judged.texts, **stats.texts},
        )
    return stats


def log_tensorboard(writer, stats: StageStatistics, step: int) -> None:
    for tag, value in stats.scalars.items():
        writer.add_scalar(tag, value, step)
    for tag, values in stats.histograms.items():
        writer.add_histogram(tag, values, step)
    for tag, text in stats.texts.items():
        writer.add_text(tag, text, step)
    writer.flush()


def log_wandb(stats: StageStatistics, step: int) -> None:
    import wandb

    wandb.run.config.update(stats.texts, allow_val_change=True)
    wandb.run.log(
        {**stats.scalars, **{tag: wandb.Histogram(v) for tag, v in stats.histograms.items()}, "train/global_step": step}
    )


def log_trackio(stats: StageStatistics, step: int) -> None:
    import trackio

    trackio.config.update(stats.texts)
    trackio.log(
        {
            **stats.scalars,
            **{tag: trackio.Histogram(v) for tag, v in stats.histograms.items()},
            "train/global_step": step,
        }
    )


class StageStatisticsCallback(TrainerCallback):
    """Logs :class:`StageStatistics` into the run each tracker callback of ``callbacks`` has opened, when training
    begins (on the main process)."""

    def __init__(self, stats: StageStatistics, callbacks: list):
        self.stats = stats
        self.callbacks = callbacks

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for callback in self.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                log_tensorboard(callback.tb_writer, self.stats, state.global_step)
            elif isinstance(callback, WandbCallback):
                log_wandb(self.stats, state.global_step)
            elif isinstance(callback, TrackioCallback):
                log_trackio(self.stats, state.global_step)


def add_stage_statistics(trainer, pairs_path: str | Path) -> None:
    """Have ``trainer`` log the judge and pair statistics of ``pairs_path`` to its trackers (if it reports to
    any); ``training.trl.project`` also names the W&B project unless ``WANDB_PROJECT`` is set."""
    trackers = requested_trackers(trainer.args.report_to)
    if not trackers:
        return
    check_report_to(trackers, "report_to")
    if "wandb" in trackers and trainer.args.project:
        os.environ.setdefault("WANDB_PROJECT", trainer.args.project)
    stats = stage_statistics(pairs_path)
    if not stats:
        logger.warning(
            "%s has no stats.json (data made outside a pairs stage): %s get the training metrics only",
            pairs_path,
            ", ".join(trackers),
        )
        return
    logger.info("Logging %d judge and pair statistics to %s", len(stats), ", ".join(trackers))
    trainer.add_callback(StageStatisticsCallback(stats, trainer.callback_handler.callbacks))
