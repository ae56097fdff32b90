"""The judged candidates pair rules start from, and the building blocks every rule shares: pure, vectorised
functions over pandas frames (no per-row Python loops). The rules themselves are :mod:`prefopt.pairing.strategies`.

Input frames are flattened judgments: one row per candidate, per-dimension scores in ``scores.<dim>``
columns, the aggregate in ``aggregate``. Candidates without an aggregate (the judge failed on them) are never
paired. Output frames are flat pairs: per-dimension values in ``chosen_scores.<dim>``, ``rejected_scores.<dim>``
and ``margins.<dim>``; :func:`prefopt.pairing.build.to_dataset` nests them into struct columns.

Every choice between equal candidates (or pairs) is broken by a seeded hash of the candidate (or pair) id, so
results depend on the seed and on nothing else (not on row order, not on how the data was sharded).
Degenerate inputs have defined results: an empty frame gives an empty frame; a prompt whose scores are all
equal has sigma exactly 0 and every z exactly 0, and its choices are seeded random ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIE_TOLERANCE = 1e-9  # judged gaps this small are ties
TEXT_COLUMNS = ["prompt", "completion"]
KEY_COLUMNS = ["candidate_id", "prompt_id", "generator", "sample_index", "aggregate"]
CANDIDATE_COLUMNS = KEY_COLUMNS + TEXT_COLUMNS  # what pairing reads of the judgments


@dataclass(frozen=True)
class Built:
    """Pairs (or unpaired examples) made by a strategy, and the prompts it could not use."""

    frame: pd.DataFrame
    short_prompts: list[str]  # prompts with too few judged candidates for the strategy
    unlabelled: int = 0  # kto_unpaired: candidates between the thresholds, given no label


def score_dimensions(frame: pd.DataFrame) -> list[str]:
    return [c[len("scores.") :] for c in frame.columns if c.startswith("scores.")]


def gap_column(dimension: str) -> str:
    return "margin" if dimension == "aggregate" else f"margins.{dimension}"


def tiebreak_keys(ids: pd.Series, seed: int, salt: str = "") -> np.ndarray:
    """A uniform pseudo-random uint64 per id, fixed by ``seed`` (and ``salt``), independent of row order."""
    key = hashlib.blake2b(f"{seed}:{salt}".encode(), digest_size=8).hexdigest()
    return pd.util.hash_pandas_object(ids.reset_index(drop=True), index=False, hash_key=key).to_numpy()


def usable_candidates(judged: pd.DataFrame, generators: list[str] | None = None) -> pd.DataFrame:
    """The judged candidates (of ``generators``, if given) without their texts, re-indexed 0..n-1; ``row`` is
    each one's position in ``judged``, where :func:`assemble_pairs` fetches the texts of those it pairs."""
    keep = judged["aggregate"].notna()
    if generators:
        keep &= judged["generator"].isin(generators)
    cands = judged.loc[keep, KEY_COLUMNS + [f"scores.{d}" for d in score_dimensions(judged)]].reset_index(drop=True)
    cands.insert(0, "row", np.flatnonzero(keep.to_numpy()))
    return cands


def take(column: pd.Series, positions: np.ndarray) -> pd.Series:
    return column.take(positions).reset_index(drop=True)


def assemble_pairs(
    judged: pd.DataFrame, cands: pd.DataFrame, chosen: np.ndarray, rejected: np.ndarray, strategy: str
) -> pd.DataFrame:
    """Flat pairs from positional indices of chosen and rejected candidates in ``cands`` (texts from ``judged``)."""
    c, r = cands.take(chosen).reset_index(drop=True), cands.take(rejected).reset_index(drop=True)
    c_rows, r_rows = c["row"].to_numpy(), r["row"].to_numpy()
    pairs = pd.DataFrame(
        {
            "pair_id": c["candidate_id"].astype("str") + "|" + r["candidate_id"].astype("str"),
            "prompt_id": c["prompt_id"],
            "prompt": take(judged["prompt"], c_rows),
            "chosen": take(judged["completion"], c_rows),
            "rejected": take(judged["completion"], r_rows),
            "chosen_id": c["candidate_id"],
            "rejected_id": r["candidate_id"],
            "chosen_generator": c["generator"],
            "rejected_generator": r["generator"],
            "chosen_score": c["aggregate"].astype(float),
            "rejected_score": r["aggregate"].astype(float),
        }
    )
    pairs["margin"] = pairs["chosen_score"] - pairs["rejected_score"]
    for d in score_dimensions(cands):
        pairs[f"chosen_scores.{d}"] = c[f"scores.{d}"].astype(float)
        pairs[f"rejected_scores.{d}"] = r[f"scores.{d}"].astype(float)
        pairs[f"margins.{d}"] = pairs[f"chosen_scores.{d}"] - pairs[f"rejected_scores.{d}"]
    pairs["judge_agrees"] = pairs["margin"] > TIE_TOLERANCE
    pairs["strategy"] = strategy
    return pairs


def sort_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs.sort_values("pair_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Groups:
    """Each candidate's prompt as an integer code, and the prompts' sizes."""

    codes: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, cands: pd.DataFrame) -> Groups:
        codes, _ = pd.factorize(cands["prompt_id"])
        return cls(codes, np.bincount(codes, minlength=codes.max() + 1 if len(codes) else 0))

    def extremes(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the minimum and the maximum of ``values`` over the row's group."""
        if not len(values):
            return values, values
        order = np.argsort(self.codes, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.codes[order]) != 0])  # groups 0, 1, ... in order
        ordered = values[order]
        return (np.minimum.reduceat(ordered, starts)[self.codes], np.maximum.reduceat(ordered, starts)[self.codes])

    def first_per_group(self, *keys: np.ndarray) -> np.ndarray:
        """Per group, the position of the row that sorts first by ``keys`` (most significant first)."""
        order = np.lexsort((*reversed(keys), self.codes))
        sorted_codes = self.codes[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
        return order[starts]


def within_prompt(judged: pd.DataFrame, generators: list[str] | None) -> tuple[pd.DataFrame, Groups, list[str]]:
    """Pooled candidates of prompts with at least two judged candidates, and the prompts with fewer."""
    cands = usable_candidates(judged, generators)
    groups = Groups.of(cands)
    enough = groups.sizes[groups.codes] >= 2
    pool = judged if not generators else judged[judged["generator"].isin(generators)]
    short = sorted(set(pool["prompt_id"].unique()) - set(cands.loc[enough, "prompt_id"].unique()))
    cands = cands[enough].reset_index(drop=True)
    return cands, Groups.of(cands), short


def pick_best(cands: pd.DataFrame, groups: Groups, seed: int) -> np.ndarray:
    """Per prompt, the highest-scored candidate (equal scores: a seeded random one)."""
    return groups.first_per_group(-cands["aggregate"].to_numpy(float), tiebreak_keys(cands["candidate_id"], seed))


def taken_mask(positions: np.ndarray, n: int) -> np.ndarray:
    """A mask of ``n`` rows, true at ``positions``."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def prompt_moments(scores: np.ndarray, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the mean and (population) standard deviation of its prompt's scores. Where all of a
    prompt's scores are equal (min == max, a single candidate included), mu is exactly that score and sigma
    exactly 0 (a summed mean would carry float noise, and a noisy sigma would decide positions)."""
    sizes = groups.sizes[groups.codes]
    low, high = groups.extremes(scores)
    mean = np.where(low == high, scores, np.bincount(groups.codes, weights=scores)[groups.codes] / sizes)
    var = np.bincount(groups.codes, weights=(scores - mean) ** 2, minlength=len(groups.sizes))[groups.codes] / sizes
    return mean, np.where(low == high, 0.0, np.sqrt(var))


def within_prompt_pairs(
    judged: pd.DataFrame,
    cands: pd.DataFrame,
    groups: Groups,
    chosen: np.ndarray,
    rejected: np.ndarray,
    strategy: str,
    short: list[str],
) -> Built:
    """The pairs, with where chosen and rejected sit in their prompt's score distribution: z = (score - mu) /
    sigma, and z = 0 where all of a prompt's scores are equal (sigma = 0); and how many candidates the prompt had."""
    score = cands["aggregate"].to_numpy(float)
    mean, std = prompt_moments(score, groups)
    z = np.divide(score - mean, std, out=np.zeros_like(score), where=std > 0)
    pairs = assemble_pairs(judged, cands, chosen, rejected, strategy).assign(
        chosen_z=z[chosen], rejected_z=z[rejected], prompt_candidates=groups.sizes[groups.codes][chosen]
    )
    return Built(sort_pairs(pairs), short)
