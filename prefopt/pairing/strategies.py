"""Pair-construction rules as pure, vectorised functions over pandas frames (no per-row Python loops).

Input frames are flattened judgments: one row per candidate, per-dimension scores in ``scores.<dim>``
columns, the aggregate in ``aggregate``. Candidates without an aggregate (the judge failed on them) are never
paired. Output frames are flat pairs: per-dimension values in ``chosen_scores.<dim>``, ``rejected_scores.<dim>``
and ``margins.<dim>``; :func:`prefopt.pairing.build.to_dataset` nests them into struct columns.

Every choice between equal candidates is broken by a seeded hash of the candidate id, so results depend on
the seed and on nothing else (not on row order, not on how the data was sharded).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prefopt.configs import ConfigError
from prefopt.schemas import DataError

TIE_TOLERANCE = 1e-9  # judged gaps this small are ties
TEXT_COLUMNS = ["prompt", "completion"]
KEY_COLUMNS = ["candidate_id", "prompt_id", "generator", "sample_index", "aggregate"]
CANDIDATE_COLUMNS = KEY_COLUMNS + TEXT_COLUMNS  # what pairing reads of the judgments


@dataclass(frozen=True)
class Built:
    """Pairs (or unpaired examples) made by a strategy, and the prompts it could not use."""

    frame: pd.DataFrame
    short_prompts: list[str]  # prompts with too few judged candidates for the strategy


def score_dimensions(frame: pd.DataFrame) -> list[str]:
    return [c[len("scores."):] for c in frame.columns if c.startswith("scores.")]


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


def _take(column: pd.Series, positions: np.ndarray) -> pd.Series:
    return column.take(positions).reset_index(drop=True)


def assemble_pairs(judged: pd.DataFrame, cands: pd.DataFrame, chosen: np.ndarray, rejected: np.ndarray,
                   strategy: str) -> pd.DataFrame:
    """Flat pairs from positional indices of chosen and rejected candidates in ``cands`` (texts from ``judged``)."""
    c, r = cands.take(chosen).reset_index(drop=True), cands.take(rejected).reset_index(drop=True)
    c_rows, r_rows = c["row"].to_numpy(), r["row"].to_numpy()
    pairs = pd.DataFrame({
        "pair_id": c["candidate_id"].astype("str") + "|" + r["candidate_id"].astype("str"),
        "prompt_id": c["prompt_id"],
        "prompt": _take(judged["prompt"], c_rows),
        "chosen": _take(judged["completion"], c_rows),
        "rejected": _take(judged["completion"], r_rows),
        "chosen_id": c["candidate_id"],
        "rejected_id": r["candidate_id"],
        "chosen_generator": c["generator"],
        "rejected_generator": r["generator"],
        "chosen_score": c["aggregate"].astype(float),
        "rejected_score": r["aggregate"].astype(float),
    })
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


# -- generator-level delta -----------------------------------------------------------------------------------

def generator_delta(judged: pd.DataFrame, generator_pairs: list[tuple[str, str]]) -> Built:
    """For each (chosen, rejected) generator pairing, pair sample i of the chosen generator with sample i of
    the rejected one, on every prompt both answered. A prompt lacking a judged candidate of either generator
    is reported."""
    cands = usable_candidates(judged)
    duplicated = cands.duplicated(["prompt_id", "generator", "sample_index"], keep=False)
    if duplicated.any():
        first = cands[duplicated].iloc[0]
        raise DataError(f"judgments: {int(duplicated.sum())} candidates share a (prompt_id, generator, sample_index), "
                         f"e.g. ({first['prompt_id']!r}, {first['generator']!r}, {first['sample_index']}); "
                         "generator_delta pairs sample i with sample i, so each must be unique")
    position = pd.Series(np.arange(len(cands)), name="position")
    frames, short = [], set()
    all_prompts = pd.Index(judged["prompt_id"].unique())
    for chosen_gen, rejected_gen in generator_pairs:
        keys = cands[["prompt_id", "sample_index"]].assign(position=position)
        c = keys[cands["generator"] == chosen_gen]
        r = keys[cands["generator"] == rejected_gen]
        m = c.merge(r, on=["prompt_id", "sample_index"], suffixes=("_c", "_r"), validate="one_to_one")
        frames.append(assemble_pairs(judged, cands, m["position_c"].to_numpy(), m["position_r"].to_numpy(),
                                     f"generator_delta({chosen_gen}>{rejected_gen})"))
        short.update(all_prompts.difference(pd.Index(c["prompt_id"]).intersection(pd.Index(r["prompt_id"]))))
    return Built(sort_pairs(pd.concat(frames, ignore_index=True)), sorted(short))


# -- within-prompt strategies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Groups:
    """Each candidate's prompt as an integer code, and the prompts' sizes."""

    codes: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, cands: pd.DataFrame) -> "_Groups":
        codes, _ = pd.factorize(cands["prompt_id"])
        return cls(codes, np.bincount(codes, minlength=codes.max() + 1 if len(codes) else 0))

    def first_per_group(self, *keys: np.ndarray) -> np.ndarray:
        """Per group, the position of the row that sorts first by ``keys`` (most significant first)."""
        order = np.lexsort((*reversed(keys), self.codes))
        sorted_codes = self.codes[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
        return order[starts]


def _within_prompt(judged: pd.DataFrame, generators: list[str] | None) -> tuple[pd.DataFrame, _Groups, list[str]]:
    """Pooled candidates of prompts with at least two judged candidates, and the prompts with fewer."""
    cands = usable_candidates(judged, generators)
    groups = _Groups.of(cands)
    enough = groups.sizes[groups.codes] >= 2
    pool = judged if not generators else judged[judged["generator"].isin(generators)]
    short = sorted(set(pool["prompt_id"].unique()) - set(cands.loc[enough, "prompt_id"].unique()))
    cands = cands[enough].reset_index(drop=True)
    return cands, _Groups.of(cands), short


def _pick_best(cands: pd.DataFrame, groups: _Groups, seed: int) -> np.ndarray:
    """Per prompt, the highest-scored candidate (equal scores: a seeded random one)."""
    return groups.first_per_group(-cands["aggregate"].to_numpy(float), tiebreak_keys(cands["candidate_id"], seed))


def _taken(positions: np.ndarray, n: int) -> np.ndarray:
    """A mask of ``n`` rows, true at ``positions``."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def max_min(judged: pd.DataFrame, generators: list[str] | None = None, seed: int = 0) -> Built:
    """Per prompt: the best candidate against the worst other one."""
    cands, groups, short = _within_prompt(judged, generators)
    chosen = _pick_best(cands, groups, seed)
    score = cands["aggregate"].to_numpy(float)
    taken = _taken(chosen, len(cands))
    rejected = groups.first_per_group(taken, score, tiebreak_keys(cands["candidate_id"], seed, "min"))
    return _within_prompt_pairs(judged, cands, groups, chosen, rejected, "max_min", short)


def max_random(judged: pd.DataFrame, generators: list[str] | None = None, seed: int = 0) -> Built:
    """Per prompt: the best candidate against a uniformly random other one (the UltraFeedback baseline)."""
    cands, groups, short = _within_prompt(judged, generators)
    chosen = _pick_best(cands, groups, seed)
    taken = _taken(chosen, len(cands))
    rejected = groups.first_per_group(taken, tiebreak_keys(cands["candidate_id"], seed, "random"))
    return _within_prompt_pairs(judged, cands, groups, chosen, rejected, "max_random", short)


def prompt_moments(scores: np.ndarray, groups: _Groups) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the mean and (population) standard deviation of its prompt's scores."""
    sizes = groups.sizes[groups.codes]
    mean = np.bincount(groups.codes, weights=scores)[groups.codes] / sizes
    var = np.bincount(groups.codes, weights=(scores - mean) ** 2)[groups.codes] / sizes
    return mean, np.sqrt(var)


def sweet_spot(judged: pd.DataFrame, chosen_k: float | None = None, rejected_k: float = -2.0,
               generators: list[str] | None = None, seed: int = 0) -> Built:
    """Finding the Sweet Spot: fit each prompt's scores as N(mu, sigma^2); chosen is the maximum (or the
    candidate nearest mu + chosen_k sigma), rejected the other candidate nearest mu + rejected_k sigma.
    Equally near candidates: chosen prefers the higher score, rejected the lower, then a seeded random one."""
    cands, groups, short = _within_prompt(judged, generators)
    score = cands["aggregate"].to_numpy(float)
    mean, std = prompt_moments(score, groups)
    ids = cands["candidate_id"]
    if chosen_k is None:
        chosen = _pick_best(cands, groups, seed)
    else:
        chosen = groups.first_per_group(np.abs(score - (mean + chosen_k * std)), -score, tiebreak_keys(ids, seed))
    taken = _taken(chosen, len(cands))
    rejected = groups.first_per_group(taken, np.abs(score - (mean + rejected_k * std)), score,
                                      tiebreak_keys(ids, seed, "rejected"))
    label = f"sweet_spot(chosen={'max' if chosen_k is None else f'mu{chosen_k:+g}sigma'},rejected=mu{rejected_k:+g}sigma)"
    return _within_prompt_pairs(judged, cands, groups, chosen, rejected, label, short)


def _within_prompt_pairs(judged: pd.DataFrame, cands: pd.DataFrame, groups: _Groups, chosen: np.ndarray,
                         rejected: np.ndarray, strategy: str, short: list[str]) -> Built:
    """The pairs, with where chosen and rejected sit in their prompt's score distribution: z = (score - mu) /
    sigma (NaN where all of a prompt's scores are equal), and how many candidates the prompt had."""
    score = cands["aggregate"].to_numpy(float)
    mean, std = prompt_moments(score, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (score - mean) / std, np.nan)
    pairs = assemble_pairs(judged, cands, chosen, rejected, strategy).assign(
        chosen_z=z[chosen], rejected_z=z[rejected], prompt_candidates=groups.sizes[groups.codes][chosen])
    return Built(sort_pairs(pairs), short)


# -- unpaired (KTO) ------------------------------------------------------------------------------------------

def kto_unpaired(judged: pd.DataFrame, desirable_min: float, undesirable_max: float | None = None,
                 generators: list[str] | None = None) -> tuple[Built, int]:
    """Every judged candidate as a KTO example: desirable if its aggregate >= ``desirable_min``, undesirable if
    below ``undesirable_max`` (default: ``desirable_min``). Candidates in between are dropped; their count is
    returned. ``class_weight`` makes both classes count equally (n / (2 n_class))."""
    cands = usable_candidates(judged, generators)
    score = cands["aggregate"].to_numpy(float)
    low = desirable_min if undesirable_max is None else undesirable_max
    desirable, undesirable = score >= desirable_min, score < low
    keep = desirable | undesirable
    cands, label = cands[keep].reset_index(drop=True), desirable[keep]
    rows = cands["row"].to_numpy()
    n, n_good = len(label), int(label.sum())
    weight = np.where(label, n / (2 * max(n_good, 1)), n / (2 * max(n - n_good, 1)))
    rule = f"kto_unpaired(desirable>={desirable_min:g},undesirable<{low:g})"
    frame = pd.DataFrame({
        "example_id": cands["candidate_id"], "prompt_id": cands["prompt_id"], "prompt": _take(judged["prompt"], rows),
        "completion": _take(judged["completion"], rows), "generator": cands["generator"], "label": label,
        "score": score[keep],
        **{f"scores.{d}": cands[f"scores.{d}"] for d in score_dimensions(cands)},
        "class_weight": weight, "strategy": rule,
    })
    return Built(frame.sort_values("example_id", kind="stable").reset_index(drop=True), []), int((~keep).sum())


# -- selection after any strategy ----------------------------------------------------------------------------

def keep_top_fraction(pairs: pd.DataFrame, column: str, fraction: float) -> pd.DataFrame:
    """Exactly ``ceil(fraction * n)`` pairs with the largest ``column`` (equal values: by pair_id)."""
    k = math.ceil(fraction * len(pairs))
    return pairs.sort_values([column, "pair_id"], ascending=[False, True], kind="stable").head(k)


def sample_delta_filter(pairs: pd.DataFrame, dimension: str = "aggregate", top_fraction: float | None = None,
                        min_gap: float | None = None) -> pd.DataFrame:
    """Keep pairs with a large judged gap on ``dimension``.

    ``min_gap`` keeps pairs whose gap is at least the threshold; ``top_fraction`` then keeps exactly
    ``ceil(top_fraction * n)`` of the remaining ``n`` pairs with the largest gaps (ties broken by pair_id).
    """
    column = gap_column(dimension)
    if column not in pairs.columns:
        raise ConfigError(f"pairing.filter.dimension {dimension!r}: no such gap; have "
                         f"{['aggregate'] + [c[len('margins.'):] for c in pairs.columns if c.startswith('margins.')]}")
    kept = pairs
    if min_gap is not None:
        kept = kept[kept[column] >= min_gap]
    if top_fraction is not None:
        kept = keep_top_fraction(kept, column, top_fraction)
    return sort_pairs(kept)


def format_score(values: np.ndarray, decimals: int) -> pd.Series:
    """Scores as text: rounded to ``decimals``, integral values without a decimal point."""
    rounded = pd.Series(np.round(np.asarray(values, dtype=float), decimals) + 0.0)  # + 0.0: no "-0"
    text = rounded.astype(str)
    return text.str.replace(r"(\.\d*?)0+$", r"\1", regex=True).str.replace(r"\.$", "", regex=True)


def reward_augment(pairs: pd.DataFrame, template: str, placement: str = "system",
                   score_range: list[float] | None = None, target_range: list[float] = (1.0, 10.0),
                   decimals: int = 1) -> pd.DataFrame:
    """Reward-augmented data (Zhang et al.): each pair conditioned on its chosen score, plus a copy conditioned
    on its rejected score with chosen and rejected swapped. The conditioning text goes into a ``system``
    column or before the prompt (``placement``); ``condition_score`` records the score it states."""
    swap = {"chosen": "rejected", "chosen_id": "rejected_id", "chosen_generator": "rejected_generator",
            "chosen_score": "rejected_score", "chosen_z": "rejected_z"}
    swap.update({f"chosen_scores.{d}": f"rejected_scores.{d}"
                 for d in (c[len("chosen_scores."):] for c in pairs.columns if c.startswith("chosen_scores."))})
    swap = {a: b for a, b in swap.items() if a in pairs.columns}
    flipped = pairs.rename(columns={**swap, **{b: a for a, b in swap.items()}})
    flipped["pair_id"] = flipped["chosen_id"] + "|" + flipped["rejected_id"]
    for column in ["margin"] + [c for c in pairs.columns if c.startswith("margins.")]:
        flipped[column] = -pairs[column]
    flipped["judge_agrees"] = flipped["margin"] > TIE_TOLERANCE
    both = pd.concat([pairs.assign(strategy=pairs["strategy"] + "+reward_augmented(chosen score)"),
                      flipped.assign(strategy=pairs["strategy"] + "+reward_augmented(rejected score, swapped)")],
                     ignore_index=True)
    score = both["chosen_score"].to_numpy(float)
    if score_range is not None:
        (lo, hi), (t_lo, t_hi) = score_range, target_range
        score = t_lo + (np.clip(score, lo, hi) - lo) / (hi - lo) * (t_hi - t_lo)
    both["condition_score"] = score
    scores, parts = format_score(score, decimals), template.split("{score}")
    texts = pd.Series(parts[0], index=scores.index)
    for part in parts[1:]:
        texts = texts + scores + part
    if placement == "system":
        both["system"] = texts.to_numpy()
    else:
        both["prompt"] = (texts + "\n\n" + both["prompt"].astype("str")).to_numpy()
    if not both["pair_id"].is_unique:
        raise DataError("reward augmentation produced a pair twice: the pairs hold both (a, b) and (b, a)")
    return sort_pairs(both)
