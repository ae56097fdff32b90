"""The judge stage: score every candidate per dimension, combine the scores into an aggregate, measure the judge.

Judges: the tiny world's step verifier, the math final-answer verifier, an LLM judge on a rubric, or a
reward model, each registered in :data:`prefopt.judging.registry.JUDGES` (:func:`make_judge`). The stage works
in place and resumes: candidates are judged in shards of ``judging.shard_size``, each written atomically to
``shards/<k>.parquet``; a killed run keeps every finished shard (one that does not read whole, with its row
count, is judged again, with one warning line). Then ``data/`` (every candidate column plus
``prefopt.schemas.JUDGMENTS``), ``scores.png``, ``quality.json`` / ``quality.md``
(:mod:`prefopt.judging.quality`) and, for a pairwise audit, ``pairwise/``. A candidate the judge cannot score
keeps its row with null scores and the reason in ``parse_status``; it never becomes a silent zero. A judge that
needs references refuses candidates that have none at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm

from prefopt.cache import atomic_write, sound_shard, write_parquet
from prefopt.errors import ConfigError
from prefopt.judging.base import Judge, JudgeItem, Judgment
from prefopt.judging.config import JudgingConfig
from prefopt.judging.quality import judge_quality, pairwise_quality, quality_markdown, reference_agreement
from prefopt.judging.registry import JUDGES, judge_factory
from prefopt.plots import plot_scores
from prefopt.schemas import DATA_DIR, DataError, arrow_dataset

logger = logging.getLogger(__name__)

SHARDS_DIR, PAIRWISE_DIR = "shards", "pairwise"


def aggregate_scores(scores: dict[str, float], rule: str, weights: dict[str, float]) -> float:
    """Combine per-dimension scores: ``mean``, ``weighted`` (by ``weights``), or one dimension by name."""
    if rule == "mean":
        return sum(scores.values()) / len(scores)
    if rule == "weighted":
        total = sum(weights.values())
        return sum(weights[d] * scores[d] for d in weights) / total
    return scores[rule]


def check_aggregate_rule(cfg: JudgingConfig, dimensions: tuple[str, ...], judge_name: str) -> None:
    if cfg.aggregate in ("mean", "weighted"):
        if cfg.aggregate == "weighted":
            unknown = sorted(set(cfg.weights) - set(dimensions))
            if not cfg.weights or unknown or sum(cfg.weights.values()) <= 0:
                raise ConfigError(
                    f"judging.weights must give positive weights to dimensions of {list(dimensions)}"
                    f" (unknown: {unknown})"
                )
    elif cfg.aggregate not in dimensions:
        raise ConfigError(
            f"judging.aggregate {cfg.aggregate!r} is not 'mean', 'weighted' or a dimension of "
            f"judge {judge_name!r} {list(dimensions)}"
        )


def make_judge(cfg: JudgingConfig, model_path: Callable[[str], str] = lambda ref: ref) -> Judge:
    """The recipe's judge, made by its registry entry; ``model_path`` resolves its model reference. Close it when
    done."""
    return judge_factory(cfg.judge)(cfg, model_path)


def check_references(cfg: JudgingConfig, candidates: Dataset) -> None:
    """A judge (or reference judge) that needs references cannot run on candidates that have none at all; a
    candidate without one is a recorded failure, counted in quality.md."""
    needing = [name for name in (cfg.judge, cfg.reference_judge) if name and JUDGES.get(name).needs_reference]
    has_any = "reference" in candidates.column_names and any(r is not None for r in candidates["reference"])
    if needing and len(candidates) and not has_any:
        raise DataError(
            f"judging: {needing} need the prompts' reference answers, and no candidate has one (set "
            "generation.prompts.reference_field)"
        )


def items_of(candidates: Dataset) -> list[JudgeItem]:
    """The items to judge: each candidate's prompt, completion, reference and conversation (``prompt_messages``)."""
    n = len(candidates)
    references = candidates["reference"] if "reference" in candidates.column_names else [None] * n
    conversations = candidates["prompt_messages"] if "prompt_messages" in candidates.column_names else [None] * n
    return [
        JudgeItem(p, c, r, m)
        for p, c, r, m in zip(candidates["prompt"], candidates["completion"], references, conversations)
    ]


def judgment_table(judge: Judge, judgments: list[Judgment], cfg: JudgingConfig, candidate_ids: list[str]) -> pa.Table:
    """The judgment columns (``candidate_id`` first, to check alignment on merge)."""
    dims = judge.dimensions
    score_type = pa.struct([(d, pa.float64()) for d in dims])
    return pa.table(
        {
            "candidate_id": pa.array(candidate_ids, pa.string()),
            "judge": pa.array([judge.name] * len(judgments), pa.string()),
            "scores": pa.array([j.scores or {d: None for d in dims} for j in judgments], score_type),
            "aggregate": pa.array(
                [aggregate_scores(j.scores, cfg.aggregate, cfg.weights) if j.scores else None for j in judgments],
                pa.float64(),
            ),
            "raw_judgment": pa.array([j.raw for j in judgments], pa.string()),
            "parse_status": pa.array([j.status for j in judgments], pa.string()),
            "attempts": pa.array([j.attempts for j in judgments], pa.int64()),
            "sample_scores": pa.array([j.samples for j in judgments], pa.list_(score_type)),
        }
    )


def _with_judgments(candidates: Dataset, judgments: pa.Table) -> Dataset:
    table = candidates.with_format("arrow")[:]  # the rows as they are ordered (data.table ignores a selection)

    def ids(t: pa.Table) -> pa.Array:
        return t.column("candidate_id").combine_chunks().cast(pa.large_string())

    if not ids(judgments).equals(ids(table)):
        raise DataError("judgments do not line up with the candidates (were the candidates regenerated?)")
    for name in judgments.column_names[1:]:
        table = table.append_column(name, judgments.column(name))
    return arrow_dataset(table)


def judge_candidates(
    cfg: JudgingConfig,
    candidates: Dataset,
    judge: Judge | None = None,
    model_path: Callable[[str], str] = lambda ref: ref,
) -> Dataset:
    """Every candidate with its judgment columns, in memory (the stage does the same in resumable shards).
    Without ``judge``, the recipe's judge is made and closed again."""
    check_references(cfg, candidates)
    own = judge is None
    judge = make_judge(cfg, model_path) if own else judge
    try:
        check_aggregate_rule(cfg, judge.dimensions, judge.name)
        judgments = judge.score(items_of(candidates))
    finally:
        if own:
            judge.close()
    return _with_judgments(candidates, judgment_table(judge, judgments, cfg, candidates["candidate_id"]))


def _shard_path(stage_dir: Path, k: int) -> Path:
    return stage_dir / SHARDS_DIR / f"{k:05d}.parquet"


def pairwise_pairs(candidates: pd.DataFrame, generators: list[str], max_pairs: int, seed: int) -> pd.DataFrame:
    """Sample i of the first generator against sample i of the second, same prompt; a seeded random subset."""
    first, second = (candidates[candidates["generator"] == g] for g in generators)
    pairs = first.merge(second, on=["prompt_id", "sample_index"], suffixes=("_first", "_second"))
    if len(pairs) > max_pairs:
        pairs = pairs.sample(n=max_pairs, random_state=seed)
    return pairs.sort_values(["prompt_id", "sample_index"]).reset_index(drop=True)


def _conversation(row) -> list[dict] | None:
    """A pairwise row's conversation (pandas holds it as an array of messages), or None."""
    messages = getattr(row, "prompt_messages_first", None)
    return None if messages is None else [dict(m) for m in messages]


def run_pairwise(cfg: JudgingConfig, candidates: pd.DataFrame, judge, stage_dir: Path) -> None:
    pairs = pairwise_pairs(candidates, cfg.pairwise.generators, cfg.pairwise.max_pairs, cfg.llm.seed)
    logger.info("[judge] pairwise audit: %d pairs of %s, each in both orders", len(pairs), cfg.pairwise.generators)
    items = [
        (
            JudgeItem(r.prompt_first, r.completion_first, r.reference_first, _conversation(r)),
            JudgeItem(r.prompt_first, r.completion_second, r.reference_first, _conversation(r)),
        )
        for r in pairs.itertuples()
    ]
    verdicts = judge.compare(items)
    ds = Dataset.from_dict(
        {
            "prompt_id": pairs["prompt_id"].tolist(),
            "first_id": pairs["candidate_id_first"].tolist(),
            "second_id": pairs["candidate_id_second"].tolist(),
            "first_generator": [cfg.pairwise.generators[0]] * len(pairs),
            "second_generator": [cfg.pairwise.generators[1]] * len(pairs),
            "first_shown_first": [v.first_shown_first for v in verdicts],
            "first_shown_second": [v.first_shown_second for v in verdicts],
            "raw_judgments": [json.dumps(v.raws) for v in verdicts],
            "status": [v.status for v in verdicts],
        }
    )
    atomic_write(stage_dir / PAIRWISE_DIR, lambda tmp: ds.save_to_disk(str(tmp)))


def run_judging(
    cfg: JudgingConfig,
    candidates: Dataset,
    stage_dir: Path,
    model_path: Callable[[str], str] = lambda ref: ref,
    judge: Judge | None = None,
) -> None:
    """Judge ``candidates`` into ``stage_dir``, resuming from the shards already there.

    The judge is made (its model loaded) only if work is left; pass ``judge`` to use one already made.
    """
    check_references(cfg, candidates)
    n, size = len(candidates), cfg.shard_size
    shards = -(-n // size)

    def rows(k: int) -> int:
        return min((k + 1) * size, n) - k * size

    todo = [k for k in range(shards) if not sound_shard(_shard_path(stage_dir, k), rows(k), "judged shard")]
    needs_pairwise = cfg.pairwise is not None and not (stage_dir / PAIRWISE_DIR).exists()
    logger.info("[judge] %d candidates in %d shards, %d already judged", n, shards, shards - len(todo))
    owned = judge is None and (todo or needs_pairwise)
    if owned:
        judge = make_judge(cfg, model_path)
    try:
        if judge is not None:
            check_aggregate_rule(cfg, judge.dimensions, judge.name)
        for k in tqdm(todo, desc="judge", unit="shard", disable=not todo):
            part = candidates.select(range(k * size, min((k + 1) * size, n)))
            table = judgment_table(judge, judge.score(items_of(part)), cfg, part["candidate_id"])
            write_parquet(table, _shard_path(stage_dir, k))
        if needs_pairwise:
            columns = ["candidate_id", "prompt_id", "prompt", "reference", "generator", "sample_index", "completion"]
            columns += ["prompt_messages"] * ("prompt_messages" in candidates.column_names)
            flat = candidates.select_columns(columns).to_pandas()
            run_pairwise(cfg, flat, judge, stage_dir)
    finally:
        if owned:
            judge.close()
    judgments = pa.concat_tables(
        [pq.read_table(_shard_path(stage_dir, k), page_checksum_verification=True) for k in range(shards)]
    )
    judged = _with_judgments(candidates, judgments)
    atomic_write(stage_dir / DATA_DIR, lambda tmp: judged.save_to_disk(str(tmp)))
    write_quality(cfg, judged, stage_dir)


def write_quality(cfg: JudgingConfig, judged: Dataset, stage_dir: Path) -> dict:
    """quality.json, quality.md and scores.png of a judged dataset."""
    flat = judged.remove_columns(["raw_judgment"]).flatten().to_pandas()
    dims = tuple(c[len("scores.") :] for c in flat.columns if c.startswith("scores."))
    samples = getattr(cfg.section, "samples", 1)
    quality = {"judge": flat["judge"].iloc[0] if len(flat) else cfg.judge, **judge_quality(flat, dims, samples)}
    if cfg.pairwise is not None:
        verdicts = load_from_disk(str(stage_dir / PAIRWISE_DIR)).to_pandas()
        quality["pairwise"] = pairwise_quality(verdicts.replace({np.nan: None}), cfg.pairwise.generators[0])
    if cfg.reference_judge is not None:
        quality["reference_agreement"] = reference_agreement(flat, _reference_frame(cfg, judged))
    (stage_dir / "quality.json").write_text(json.dumps(quality, indent=2))
    (stage_dir / "quality.md").write_text(quality_markdown(quality))
    if len(flat):
        plot_scores(flat, stage_dir / "scores.png")
    logger.info(
        "[judge] parse failures %.1f%% of %d candidates; see %s",
        100 * (quality["parse_failure_rate"] or 0),
        len(flat),
        stage_dir / "quality.md",
    )
    return quality


def _reference_frame(cfg: JudgingConfig, candidates: Dataset) -> pd.DataFrame:
    """The reference verifier's scores and aggregate (same rule as the judge's where it applies, else mean)."""
    verifier = judge_factory(cfg.reference_judge)(cfg, lambda ref: ref)
    dims = verifier.dimensions
    rule = cfg.aggregate if cfg.aggregate == "mean" or cfg.aggregate in dims else "mean"
    rows = []
    for j in verifier.score(items_of(candidates)):
        rows.append(
            {
                "aggregate": aggregate_scores(j.scores, rule, cfg.weights) if j.scores else None,
                **{f"scores.{d}": (j.scores or {}).get(d) for d in dims},
            }
        )
    verifier.close()
    return pd.DataFrame(rows)
