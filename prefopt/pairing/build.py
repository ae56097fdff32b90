"""The pairs stage: the recipe's strategy, then its gates and selections in order, accounting for every drop.

    strategy -> drop ties -> judge-agreement gate -> sample-delta filter -> margin_bayes -> reward augmentation

Output: the pairs dataset (``prefopt.schemas.PAIRS``; ``UNPAIRED`` for ``kto_unpaired``) and the stats of
the build (counts, tie and judge-agreement rates, mean margins, prompts with too few candidates).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset

from prefopt.pairing.calibration import correlation, margin_bayes_scores
from prefopt.pairing.candidates import CANDIDATE_COLUMNS, TIE_TOLERANCE, Built, gap_column, score_dimensions, sort_pairs
from prefopt.pairing.config import PairingConfig
from prefopt.pairing.registry import strategy_function
from prefopt.pairing.reward_augment import reward_augment
from prefopt.pairing.selection import keep_top_fraction, sample_delta_filter
from prefopt.schemas import DataError, arrow_dataset
from prefopt.tables import mean

logger = logging.getLogger(__name__)

STRUCT_COLUMNS = ("chosen_scores", "rejected_scores", "margins", "scores")


@dataclass(frozen=True)
class PairingResult:
    dataset: Dataset  # what the stage writes
    stats: dict  # how it was built
    built: pd.DataFrame  # every pair the strategy made (before ties and selections); empty for unpaired
    kept: pd.DataFrame  # the flat frame behind ``dataset``
    scored: pd.DataFrame | None = None  # margin_bayes: every pair it scored, with its margins and fused score


def to_dataset(frame: pd.DataFrame) -> Dataset:
    """Nest the flat ``<struct>.<dim>`` columns of a pairs (or unpaired) frame into struct columns."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for struct in STRUCT_COLUMNS:
        names = [c for c in table.column_names if c.startswith(f"{struct}.")]
        if not names:
            continue
        arrays = [table.column(c).combine_chunks() for c in names]
        nested = pa.StructArray.from_arrays(arrays, names=[c[len(struct) + 1 :] for c in names])
        table = table.drop_columns(names).append_column(struct, nested)
    return arrow_dataset(table)


def _conversations(judgments: Dataset | pd.DataFrame) -> dict[str, list[dict]] | None:
    """Each prompt's conversation (``prompt_messages``, role and content only) by prompt_id; None where the judgments
    do not have them (the conversation is then the prompt alone)."""
    columns = judgments.columns if isinstance(judgments, pd.DataFrame) else judgments.column_names
    if "prompt_messages" not in columns:
        return None
    ids, conversations = judgments["prompt_id"], judgments["prompt_messages"]
    out: dict[str, list[dict]] = {}
    for prompt_id, conversation in zip(ids, conversations):
        if conversation is not None and prompt_id not in out:
            out[prompt_id] = [{"role": m["role"], "content": m["content"]} for m in conversation]
    return out


def with_conversations(frame: pd.DataFrame, conversations: dict[str, list[dict]] | None) -> pd.DataFrame:
    """``frame`` (pairs or KTO examples) with each prompt's conversation as ``prompt_messages``, after ``prompt``."""
    if conversations is None or "prompt_messages" in frame.columns:
        return frame
    frame = frame.copy()
    values = [conversations.get(p) for p in frame["prompt_id"]]
    frame.insert(
        frame.columns.get_loc("prompt") + 1, "prompt_messages", pd.Series(values, index=frame.index, dtype=object)
    )
    return frame


def _flat(judgments: Dataset | pd.DataFrame, max_samples: int | None = None) -> pd.DataFrame:
    """Judgments as a flat frame of the columns pairing reads (raw judge outputs and the like stay on disk),
    limited to each generator's first ``max_samples`` samples per prompt."""
    if not isinstance(judgments, pd.DataFrame):
        judgments = judgments.select_columns(CANDIDATE_COLUMNS + ["scores"]).flatten().to_pandas()
    if max_samples is not None:
        judgments = judgments[judgments["sample_index"] < max_samples].reset_index(drop=True)
    return judgments


def describe(cfg: PairingConfig) -> str:
    """The strategy and every selection after it, as recorded in stats."""
    parts = [cfg.strategy]
    section = cfg.strategy_entry.settings
    if section is not None:
        settings = getattr(cfg, section)
        parts[0] += "(" + ", ".join(f"{f.name}={getattr(settings, f.name)}" for f in dataclasses.fields(settings)) + ")"
    if cfg.require_judge_agreement:
        parts.append("judge_agreement")
    if cfg.filter.active:
        parts.append(f"sample_delta({_filter_rule(cfg)})")
    if cfg.margin_bayes:
        parts.append(f"margin_bayes({cfg.margin_bayes.fusion}, top {cfg.margin_bayes.top_fraction:g})")
    if cfg.reward_augmented:
        parts.append("reward_augmented")
    return " + ".join(parts)


def _filter_rule(cfg: PairingConfig) -> str:
    f = cfg.filter
    rules = [f"min_gap={f.min_gap}"] * (f.min_gap is not None) + [f"top_fraction={f.top_fraction}"] * (
        f.top_fraction is not None
    )
    return f"{f.dimension}:{','.join(rules)}"


def run_strategy(cfg: PairingConfig, judged: pd.DataFrame) -> Built:
    """The recipe's strategy on the flattened judgments, through :data:`prefopt.pairing.registry.STRATEGIES`."""
    return strategy_function(cfg.strategy)(cfg, judged)


def base_pairs(cfg: PairingConfig, judgments: Dataset | pd.DataFrame) -> pd.DataFrame:
    """The pairs that margin_bayes selects from: the strategy's pairs after ties, the gate and the filter."""
    judged = _flat(judgments, cfg.max_samples)
    return _gated(cfg, with_conversations(run_strategy(cfg, judged).frame, _conversations(judgments)), {})


def _gated(cfg: PairingConfig, pairs: pd.DataFrame, stats: dict) -> pd.DataFrame:
    """Drop ties, apply the agreement gate and the sample-delta filter; count each step into ``stats``."""
    ties = pairs["margin"].abs() <= TIE_TOLERANCE
    stats["ties"] = int(ties.sum())
    stats["tie_rate"] = mean(ties.astype(float))
    stats["judge_disagreements"] = int((pairs["margin"] < -TIE_TOLERANCE).sum())
    stats["judge_agreement_rate"] = mean(pairs["judge_agrees"].astype(float))
    if cfg.drop_ties:
        pairs = pairs[~ties]
    stats["ties_dropped"] = stats["ties"] if cfg.drop_ties else 0
    before = len(pairs)
    if cfg.require_judge_agreement:
        pairs = pairs[pairs["judge_agrees"]]
    stats["dropped_by_agreement_gate"] = before - len(pairs)
    before = len(pairs)
    if cfg.filter.active:
        f = cfg.filter
        pairs = sample_delta_filter(pairs, f.dimension, f.top_fraction, f.min_gap, cfg.seed)
        pairs = pairs.assign(strategy=pairs["strategy"] + f"+sample_delta({_filter_rule(cfg)})")
    stats["dropped_by_filter"] = before - len(pairs)
    return pairs


def select_margin_bayes(
    cfg: PairingConfig, pairs: pd.DataFrame, implicit: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Less is More's selection: the kept pairs, every scored pair, and the calibration used. ``implicit`` is
    each pair's implicit margin, indexed by pair_id."""
    mb = cfg.margin_bayes
    missing = pairs.loc[~pairs["pair_id"].isin(implicit.index), "pair_id"]
    if len(missing):
        raise ValueError(
            f"margin_bayes: {len(missing)} pairs have no implicit margin (e.g. {missing.iloc[0]!r}); "
            "the proxy scored a different set of pairs"
        )
    external = pairs[gap_column(mb.dimension)].to_numpy(float)
    implicit_margin = implicit.reindex(pairs["pair_id"]).to_numpy(float)
    for name, margins in (("external", external), ("implicit", implicit_margin)):
        bad = ~np.isfinite(margins)
        if bad.any():
            raise DataError(
                f"margin_bayes: {int(bad.sum())} of {len(margins)} {name} margins are not finite (e.g. "
                f"pair {pairs['pair_id'].iloc[int(np.argmax(bad))]!r}); the fused score needs numbers"
            )
    scores, bounds = margin_bayes_scores(
        external,
        implicit_margin,
        mb.fusion,
        mb.external_low,
        mb.external_high,
        mb.implicit_low,
        mb.implicit_high,
        mb.min_tail,
    )
    scored = pairs.assign(external_margin=external, implicit_margin=implicit_margin, fused_score=scores)
    kept = sort_pairs(keep_top_fraction(scored, "fused_score", mb.top_fraction, cfg.seed))
    kept = kept.assign(strategy=kept["strategy"] + f"+margin_bayes({mb.fusion},top={mb.top_fraction:g})")
    info = {
        **bounds,
        "fusion": mb.fusion,
        "external_implicit_correlation": correlation(external, implicit_margin),
        "mean_fused_score_all": mean(scored["fused_score"]),
        "mean_fused_score_kept": mean(kept["fused_score"]),
    }
    return kept, scored, info


def build_pairs(
    cfg: PairingConfig, judgments: Dataset | pd.DataFrame, implicit: pd.Series | None = None
) -> PairingResult:
    """Pairs (or KTO examples) and the stats of how they were built.

    ``judgments`` is a judgments dataset or its flattened frame. ``implicit`` (each pair's implicit margin,
    indexed by pair_id) is needed by ``margin_bayes``; `prefopt pairs` computes it with the proxy model.
    """
    judged = _flat(judgments, cfg.max_samples)
    dims = score_dimensions(judged)
    stats: dict = {
        "strategy": describe(cfg),
        "candidates": len(judged),
        "unjudged_candidates": int(judged["aggregate"].isna().sum()),
        "prompts": int(judged["prompt_id"].nunique()),
    }
    conversations = _conversations(judgments)
    if cfg.unpaired:
        return _build_unpaired(cfg, judged, dims, stats, conversations)
    built = run_strategy(cfg, judged)
    stats["prompts_too_few_candidates"] = len(built.short_prompts)
    stats["prompts_too_few_candidates_examples"] = built.short_prompts[:5]
    if built.short_prompts:
        logger.warning(
            "%d prompts have too few judged candidates for %s (e.g. %s)",
            len(built.short_prompts),
            cfg.strategy,
            built.short_prompts[:3],
        )
    pairs = with_conversations(built.frame, conversations)
    stats["pairs_built"] = len(pairs)
    stats["mean_margin_built"] = mean(pairs["margin"])
    if cfg.strategy_entry.needs_generator_labels:
        stats["generator_pairs"] = [
            {
                "chosen": p.chosen,
                "rejected": p.rejected,
                "pairs_built": int(len(group)),
                "judge_agreement_rate": mean(group["judge_agrees"].astype(float)),
                "judge_disagreement_rate": mean((group["margin"] < -TIE_TOLERANCE).astype(float)),
                "mean_margin": mean(group["margin"]),
            }
            for p in cfg.generator_pairs
            for group in [pairs[(pairs["chosen_generator"] == p.chosen) & (pairs["rejected_generator"] == p.rejected)]]
        ]
    pairs = _gated(cfg, pairs, stats)
    scored = None
    if cfg.margin_bayes is not None:
        if implicit is None:
            raise ValueError(
                "pairing.margin_bayes needs each pair's implicit margin: run `prefopt pairs` (it trains "
                "and scores the proxy model) or pass `implicit` to build_pairs"
            )
        before = len(pairs)
        pairs, scored, stats["margin_bayes"] = select_margin_bayes(cfg, pairs, implicit)
        stats["dropped_by_margin_bayes"] = before - len(pairs)
    if cfg.reward_augmented is not None:
        ra = cfg.reward_augmented
        selected = len(pairs)
        pairs, clipped = reward_augment(pairs, ra.template, ra.placement, ra.score_range, ra.target_range, ra.decimals)
        if ra.placement == "prefix" and "prompt_messages" in pairs.columns:  # the prefixed prompt is the last turn
            pairs["prompt_messages"] = [
                None if m is None else [*m[:-1], {"role": "user", "content": p}]
                for m, p in zip(pairs["prompt_messages"], pairs["prompt"])
            ]
        stats["reward_augmented_rows"] = len(pairs) - selected
        stats["reward_augmented_scores_clipped"] = clipped
        if clipped:
            logger.warning(
                "reward_augmented: %d of %d scores lie outside score_range %s and were clipped to it",
                clipped,
                len(pairs),
                ra.score_range,
            )
    stats.update(
        {
            "pairs_kept": len(pairs),
            "mean_margin_kept": mean(pairs["margin"]),
            "mean_margins_kept": {d: mean(pairs[f"margins.{d}"]) for d in dims},
        }
    )
    logger.info(
        "Pairs (%s): %d built from %d prompts, %d ties, %d kept (mean judged gap %.3f -> %.3f, judge agrees on %.0f%%)",
        stats["strategy"],
        stats["pairs_built"],
        stats["prompts"],
        stats["ties"],
        stats["pairs_kept"],
        stats["mean_margin_built"] or 0,
        stats["mean_margin_kept"] or 0,
        100 * (stats["judge_agreement_rate"] or 0),
    )
    if pairs.empty:
        raise DataError(
            "no pairs left after pairing and filtering; loosen the selection or check the judge "
            f"({stats['pairs_built']} built, {stats['ties']} ties)"
        )
    return PairingResult(to_dataset(pairs), stats, built.frame, pairs, scored)


def _build_unpaired(
    cfg: PairingConfig, judged: pd.DataFrame, dims: list[str], stats: dict, conversations: dict | None = None
) -> PairingResult:
    built = run_strategy(cfg, judged)
    frame, between = with_conversations(built.frame, conversations), built.unlabelled
    desirable = int(frame["label"].sum())
    stats.update(
        {
            "examples_kept": len(frame),
            "desirable": desirable,
            "undesirable": len(frame) - desirable,
            "dropped_between_thresholds": between,
            "class_weights": {
                "desirable": mean(frame.loc[frame["label"], "class_weight"]),
                "undesirable": mean(frame.loc[~frame["label"], "class_weight"]),
            },
            "mean_score": {
                "desirable": mean(frame.loc[frame["label"], "score"]),
                "undesirable": mean(frame.loc[~frame["label"], "score"]),
            },
        }
    )
    logger.info(
        "KTO examples: %d desirable, %d undesirable, %d between thresholds dropped",
        desirable,
        len(frame) - desirable,
        between,
    )
    if desirable == 0 or desirable == len(frame):
        raise DataError(
            f"{cfg.strategy} needs both classes; got {desirable} desirable of {len(frame)}: move "
            "pairing.kto.desirable_min"
        )
    return PairingResult(to_dataset(frame), stats, frame.iloc[:0], frame)
