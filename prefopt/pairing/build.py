"""The pairs stage: apply the recipe's strategy and sample-level delta filter, and account for every drop.

Output: the pairs dataset (``prefopt.schemas.PAIRS``) and ``stats.json`` (counts, tie and judge-agreement
rates, mean margins before and after the filter, prompts that lacked candidates) and ``margins.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
from datasets import Dataset

from prefopt.configs import PairingConfig
from prefopt.plots import plot_margins
from prefopt.pairing.strategies import generator_delta, sample_delta_filter, score_dimensions

logger = logging.getLogger(__name__)

STRUCT_COLUMNS = ("chosen_scores", "rejected_scores", "margins")


def pairs_to_dataset(pairs: pd.DataFrame) -> Dataset:
    """Nest the flat ``<struct>.<dim>`` columns of a pairs frame into struct columns."""
    table = pa.Table.from_pandas(pairs, preserve_index=False)
    for struct in STRUCT_COLUMNS:
        names = [c for c in table.column_names if c.startswith(f"{struct}.")]
        if not names:
            continue
        arrays = [table.column(c).combine_chunks() for c in names]
        nested = pa.StructArray.from_arrays(arrays, names=[c[len(struct) + 1:] for c in names])
        table = table.drop_columns(names).append_column(struct, nested)
    return Dataset(table)


def _mean(series: pd.Series) -> float | None:
    return None if series.empty else float(series.mean())


def build_pairs(cfg: PairingConfig, judgments: Dataset, plot_to: Path | None = None) -> tuple[Dataset, dict]:
    """Pairs and their stats; with ``plot_to``, also a PNG of the margins of the pairs built and kept."""
    judged = judgments.flatten().to_pandas()
    dims = score_dimensions(judged)
    by_prompt = judged.groupby("prompt_id")["generator"].agg(set)
    missing = {
        g: sorted(by_prompt.index[~by_prompt.map(lambda s, g=g: g in s)])
        for g in (cfg.chosen_generator, cfg.rejected_generator)
    }
    for g, prompts in missing.items():
        if prompts:
            logger.warning("%d prompts have no candidate from generator %r (e.g. %s)", len(prompts), g, prompts[:3])
    built = generator_delta(judged, cfg.chosen_generator, cfg.rejected_generator)
    kept = built[built["judge_agrees"]] if cfg.require_judge_agreement else built
    f = cfg.filter
    if f.top_fraction is not None or f.min_gap is not None:
        kept = sample_delta_filter(kept, f.dimension, f.top_fraction, f.min_gap)
        rule = f"top_fraction={f.top_fraction}" if f.min_gap is None else f"min_gap={f.min_gap}"
        if f.min_gap is not None and f.top_fraction is not None:
            rule += f",top_fraction={f.top_fraction}"
        kept = kept.assign(strategy=kept["strategy"] + f"+sample_delta({f.dimension}:{rule})")
    stats = {
        "strategy": cfg.strategy,
        "candidates": len(judged),
        "unjudged_candidates": int(judged["aggregate"].isna().sum()),
        "prompts": int(judged["prompt_id"].nunique()),
        "prompts_without_generator": {g: len(p) for g, p in missing.items()},
        "pairs_built": len(built),
        "ties": int((built["margin"] == 0).sum()),
        "judge_disagreements": int((built["margin"] < 0).sum()),
        "judge_agreement_rate": _mean(built["judge_agrees"].astype(float)),
        "dropped_by_agreement_gate": int(len(built) - built["judge_agrees"].sum()) if cfg.require_judge_agreement else 0,
        "pairs_kept": len(kept),
        "mean_margin_built": _mean(built["margin"]),
        "mean_margin_kept": _mean(kept["margin"]),
        "mean_margins_kept": {d: _mean(kept[f"margins.{d}"]) for d in dims},
    }
    logger.info("Pairs: %d built from %d prompts, %d kept (mean judged gap %.3f -> %.3f, judge agrees on %.0f%%)",
                stats["pairs_built"], stats["prompts"], stats["pairs_kept"], stats["mean_margin_built"] or 0,
                stats["mean_margin_kept"] or 0, 100 * (stats["judge_agreement_rate"] or 0))
    if kept.empty:
        raise ValueError("no pairs left after pairing and filtering; loosen pairing.filter or check the judge")
    if plot_to is not None:
        plot_margins(built, kept, plot_to)
    return pairs_to_dataset(kept), stats
