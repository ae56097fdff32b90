"""The judge stage: score every candidate per dimension and combine the scores into an aggregate.

Output: the judgments dataset (``prefopt.schemas.JUDGMENTS``): every candidate column plus ``judge``,
``scores``, ``aggregate``, ``raw_judgment`` and ``parse_status``. A candidate the judge cannot score keeps
its row with null scores and the reason in ``parse_status``; it never becomes a silent zero.
"""

from __future__ import annotations

import logging

from datasets import Dataset
from tqdm.auto import tqdm

from prefopt.configs import JudgingConfig
from prefopt.judging import verifier

logger = logging.getLogger(__name__)

JUDGES = {"tiny_world_verifier": (verifier.score_trace, verifier.DIMENSIONS)}


def aggregate_scores(scores: dict[str, float], rule: str, weights: dict[str, float]) -> float:
    """Combine per-dimension scores: ``mean``, ``weighted`` (by ``weights``), or one dimension by name."""
    if rule == "mean":
        return sum(scores.values()) / len(scores)
    if rule == "weighted":
        total = sum(weights.values())
        return sum(weights[d] * scores[d] for d in weights) / total
    return scores[rule]


def check_aggregate_rule(cfg: JudgingConfig, dimensions: tuple[str, ...]) -> None:
    if cfg.aggregate in ("mean", "weighted"):
        if cfg.aggregate == "weighted":
            unknown = sorted(set(cfg.weights) - set(dimensions))
            if not cfg.weights or unknown or sum(cfg.weights.values()) <= 0:
                raise ValueError(f"judging.weights must give positive weights to dimensions of {list(dimensions)}"
                                 f" (unknown: {unknown})")
    elif cfg.aggregate not in dimensions:
        raise ValueError(f"judging.aggregate {cfg.aggregate!r} is not 'mean', 'weighted' or a dimension of "
                         f"judge {cfg.judge!r} {list(dimensions)}")


def judge_candidates(cfg: JudgingConfig, candidates: Dataset) -> Dataset:
    score, dimensions = JUDGES[cfg.judge]
    check_aggregate_rule(cfg, dimensions)
    logger.info("Judging %d candidates with %s on %s (aggregate: %s)", len(candidates), cfg.judge,
                list(dimensions), cfg.aggregate)
    columns = {"judge": [], "scores": [], "aggregate": [], "raw_judgment": [], "parse_status": []}
    for prompt, completion in tqdm(zip(candidates["prompt"], candidates["completion"]), total=len(candidates),
                                   desc="judge", unit="cand", mininterval=2):
        j = score(prompt, completion)
        columns["judge"].append(cfg.judge)
        columns["scores"].append(j.scores or {d: None for d in dimensions})
        columns["aggregate"].append(aggregate_scores(j.scores, cfg.aggregate, cfg.weights) if j.scores else None)
        columns["raw_judgment"].append(j.raw)
        columns["parse_status"].append(j.status)
    failed = sum(s != "ok" for s in columns["parse_status"])
    if failed:
        logger.warning("%d of %d candidates could not be judged (kept with null scores)", failed, len(candidates))
    for name, values in columns.items():
        candidates = candidates.add_column(name, values)
    return candidates
