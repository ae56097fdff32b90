"""Pair-construction rules as pure, vectorised functions over pandas frames.

Input frames are flattened judgments: one row per candidate, per-dimension scores in ``scores.<dim>``
columns. Output frames are flat pairs (per-dimension values in ``chosen_scores.<dim>``,
``rejected_scores.<dim>`` and ``margins.<dim>``); :func:`prefopt.pairing.build.pairs_to_dataset` nests them.
"""

from __future__ import annotations

import math

import pandas as pd

_KEEP = ["candidate_id", "prompt_id", "prompt", "completion", "generator", "sample_index", "aggregate"]


def score_dimensions(frame: pd.DataFrame) -> list[str]:
    return [c[len("scores."):] for c in frame.columns if c.startswith("scores.")]


def generator_delta(judged: pd.DataFrame, chosen_generator: str, rejected_generator: str) -> pd.DataFrame:
    """Pair sample i of the chosen generator with sample i of the rejected one, for every prompt.

    Candidates without an aggregate score (the judge failed on them) are not paired.
    """
    dims = score_dimensions(judged)
    cols = _KEEP + [f"scores.{d}" for d in dims]
    usable = judged[judged["aggregate"].notna()]
    chosen = usable.loc[usable["generator"] == chosen_generator, cols]
    rejected = usable.loc[usable["generator"] == rejected_generator, cols]
    m = chosen.merge(rejected, on=["prompt_id", "sample_index"], suffixes=("_c", "_r"), validate="one_to_one")
    pairs = pd.DataFrame({
        "pair_id": m["candidate_id_c"] + "|" + m["candidate_id_r"],
        "prompt_id": m["prompt_id"],
        "prompt": m["prompt_c"],
        "chosen": m["completion_c"],
        "rejected": m["completion_r"],
        "chosen_id": m["candidate_id_c"],
        "rejected_id": m["candidate_id_r"],
        "chosen_generator": m["generator_c"],
        "rejected_generator": m["generator_r"],
        "chosen_score": m["aggregate_c"].astype(float),
        "rejected_score": m["aggregate_r"].astype(float),
    })
    pairs["margin"] = pairs["chosen_score"] - pairs["rejected_score"]
    for d in dims:
        pairs[f"chosen_scores.{d}"] = m[f"scores.{d}_c"].to_numpy()
        pairs[f"rejected_scores.{d}"] = m[f"scores.{d}_r"].to_numpy()
        pairs[f"margins.{d}"] = pairs[f"chosen_scores.{d}"] - pairs[f"rejected_scores.{d}"]
    pairs["judge_agrees"] = pairs["margin"] > 0
    pairs["strategy"] = f"generator_delta({chosen_generator}>{rejected_generator})"
    return pairs.sort_values("pair_id", kind="stable").reset_index(drop=True)


def gap_column(dimension: str) -> str:
    return "margin" if dimension == "aggregate" else f"margins.{dimension}"


def sample_delta_filter(pairs: pd.DataFrame, dimension: str = "aggregate", top_fraction: float | None = None,
                        min_gap: float | None = None) -> pd.DataFrame:
    """Keep pairs with a large judged gap on ``dimension``.

    ``min_gap`` keeps pairs whose gap is at least the threshold; ``top_fraction`` then keeps exactly
    ``ceil(top_fraction * n)`` of the remaining ``n`` pairs with the largest gaps (ties broken by pair_id).
    """
    column = gap_column(dimension)
    if column not in pairs.columns:
        raise ValueError(f"pairing.filter.dimension {dimension!r}: no such gap; have "
                         f"{['aggregate'] + [c[len('margins.'):] for c in pairs.columns if c.startswith('margins.')]}")
    kept = pairs
    if min_gap is not None:
        kept = kept[kept[column] >= min_gap]
    if top_fraction is not None:
        k = math.ceil(top_fraction * len(kept))
        kept = kept.sort_values([column, "pair_id"], ascending=[False, True], kind="stable").head(k)
    return kept.sort_values("pair_id", kind="stable").reset_index(drop=True)
