"""Pair-construction rules as pure, vectorised functions over pandas frames (no per-row Python loops).

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

from prefopt.errors import ConfigError, DataError
from prefopt.pairing.selection import keep_count, top_positions

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


def _take(column: pd.Series, positions: np.ndarray) -> pd.Series:
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
            "prompt": _take(judged["prompt"], c_rows),
            "chosen": _take(judged["completion"], c_rows),
            "rejected": _take(judged["completion"], r_rows),
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


# -- generator-level delta -----------------------------------------------------------------------------------


def generator_delta(judged: pd.DataFrame, generator_pairs: list[tuple[str, str]]) -> Built:
    """For each (chosen, rejected) generator pairing, pair sample i of the chosen generator with sample i of
    the rejected one, on every prompt both answered. A prompt lacking a judged candidate of either generator
    is reported."""
    cands = usable_candidates(judged)
    duplicated = cands.duplicated(["prompt_id", "generator", "sample_index"], keep=False)
    if duplicated.any():
        first = cands[duplicated].iloc[0]
        raise DataError(
            f"judgments: {int(duplicated.sum())} candidates share a (prompt_id, generator, sample_index), "
            f"e.g. ({first['prompt_id']!r}, {first['generator']!r}, {first['sample_index']}); "
            "generator_delta pairs sample i with sample i, so each must be unique"
        )
    position = pd.Series(np.arange(len(cands)), name="position")
    frames, short = [], set()
    all_prompts = pd.Index(judged["prompt_id"].unique())
    for chosen_gen, rejected_gen in generator_pairs:
        keys = cands[["prompt_id", "sample_index"]].assign(position=position)
        c = keys[cands["generator"] == chosen_gen]
        r = keys[cands["generator"] == rejected_gen]
        m = c.merge(r, on=["prompt_id", "sample_index"], suffixes=("_c", "_r"), validate="one_to_one")
        frames.append(
            assemble_pairs(
                judged,
                cands,
                m["position_c"].to_numpy(),
                m["position_r"].to_numpy(),
                f"generator_delta({chosen_gen}>{rejected_gen})",
            )
        )
        short.update(all_prompts.difference(pd.Index(c["prompt_id"]).intersection(pd.Index(r["prompt_id"]))))
    return Built(sort_pairs(pd.concat(frames, ignore_index=True)), sorted(short))


# -- within-prompt strategies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    """Each candidate's prompt as an integer code, and the prompts' sizes."""

    codes: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, cands: pd.DataFrame) -> _Groups:
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
    """Per candidate: the mean and (population) standard deviation of its prompt's scores. Where all of a
    prompt's scores are equal (min == max, a single candidate included), mu is exactly that score and sigma
    exactly 0 (a summed mean would carry float noise, and a noisy sigma would decide positions)."""
    sizes = groups.sizes[groups.codes]
    low, high = groups.extremes(scores)
    mean = np.where(low == high, scores, np.bincount(groups.codes, weights=scores)[groups.codes] / sizes)
    var = np.bincount(groups.codes, weights=(scores - mean) ** 2, minlength=len(groups.sizes))[groups.codes] / sizes
    return mean, np.where(low == high, 0.0, np.sqrt(var))


def sweet_spot(
    judged: pd.DataFrame,
    chosen_k: float | None = None,
    rejected_k: float = -2.0,
    generators: list[str] | None = None,
    seed: int = 0,
) -> Built:
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
    rejected = groups.first_per_group(
        taken, np.abs(score - (mean + rejected_k * std)), score, tiebreak_keys(ids, seed, "rejected")
    )
    label = (
        f"sweet_spot(chosen={'max' if chosen_k is None else f'mu{chosen_k:+g}sigma'},rejected=mu{rejected_k:+g}sigma)"
    )
    return _within_prompt_pairs(judged, cands, groups, chosen, rejected, label, short)


def _within_prompt_pairs(
    judged: pd.DataFrame,
    cands: pd.DataFrame,
    groups: _Groups,
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


# -- unpaired (KTO) ------------------------------------------------------------------------------------------


def kto_unpaired(
    judged: pd.DataFrame,
    desirable_min: float,
    undesirable_max: float | None = None,
    generators: list[str] | None = None,
) -> Built:
    """Every judged candidate as a KTO example: desirable if its aggregate >= ``desirable_min``, undesirable if
    below ``undesirable_max`` (default: ``desirable_min``). Candidates in between are dropped; their count is
    ``unlabelled``. ``class_weight`` makes every class present count equally: n / (c n_class), with c the number
    of classes present (both: n / (2 n_class); one class: every weight 1; no examples: no weights)."""
    cands = usable_candidates(judged, generators)
    score = cands["aggregate"].to_numpy(float)
    low = desirable_min if undesirable_max is None else undesirable_max
    desirable, undesirable = score >= desirable_min, score < low
    keep = desirable | undesirable
    cands, label = cands[keep].reset_index(drop=True), desirable[keep]
    rows = cands["row"].to_numpy()
    counts = np.array([len(label) - label.sum(), label.sum()])  # undesirable, desirable
    weight = len(label) / (np.count_nonzero(counts) * counts[label.astype(int)])
    rule = f"kto_unpaired(desirable>={desirable_min:g},undesirable<{low:g})"
    frame = pd.DataFrame(
        {
            "example_id": cands["candidate_id"],
            "prompt_id": cands["prompt_id"],
            "prompt": _take(judged["prompt"], rows),
            "completion": _take(judged["completion"], rows),
            "generator": cands["generator"],
            "label": label,
            "score": score[keep],
            **{f"scores.{d}": cands[f"scores.{d}"] for d in score_dimensions(cands)},
            "class_weight": weight,
            "strategy": rule,
        }
    )
    return Built(frame.sort_values("example_id", kind="stable").reset_index(drop=True), [], int((~keep).sum()))


# -- selection after any strategy ----------------------------------------------------------------------------


def keep_top_fraction(pairs: pd.DataFrame, column: str, fraction: float, seed: int = 0) -> pd.DataFrame:
    """The ``keep_count(fraction, n)`` pairs with the largest ``column``; of pairs tied at the cut, those first
    in a seeded random order of pair_id (:mod:`prefopt.pairing.selection`)."""
    keys = tiebreak_keys(pairs["pair_id"], seed, f"top:{column}")
    return pairs.iloc[top_positions(pairs[column].to_numpy(float), keys, keep_count(fraction, len(pairs)))]


def sample_delta_filter(
    pairs: pd.DataFrame,
    dimension: str = "aggregate",
    top_fraction: float | None = None,
    min_gap: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Keep pairs with a large judged gap on ``dimension``.

    ``min_gap`` keeps pairs whose gap is at least the threshold; ``top_fraction`` then keeps exactly
    ``keep_count(top_fraction, n)`` of the remaining ``n`` pairs with the largest gaps (:func:`keep_top_fraction`).
    """
    column = gap_column(dimension)
    if column not in pairs.columns:
        raise ConfigError(
            f"pairing.filter.dimension {dimension!r}: no such gap; have "
            f"{['aggregate'] + [c[len('margins.') :] for c in pairs.columns if c.startswith('margins.')]}"
        )
    kept = pairs
    if min_gap is not None:
        kept = kept[kept[column] >= min_gap]
    if top_fraction is not None:
        kept = keep_top_fraction(kept, column, top_fraction, seed)
    return sort_pairs(kept)


def format_score(values: np.ndarray, decimals: int) -> pd.Series:
    """Scores as text: rounded to ``decimals``, integral values without a decimal point."""
    rounded = pd.Series(np.round(np.asarray(values, dtype=float), decimals) + 0.0)  # + 0.0: no "-0"
    text = rounded.astype(str)
    return text.str.replace(r"(\.\d*?)0+$", r"\1", regex=True).str.replace(r"\.$", "", regex=True)


def printed_scores(
    scores: np.ndarray, score_range: list[float] | None, target_range: list[float], decimals: int
) -> tuple[np.ndarray, int]:
    """Scores on the printed scale ``target_range`` = [a, b], rounded to ``decimals``, and how many were clipped.

    With ``score_range`` = [lo, hi]: a + (clip(s, lo, hi) - lo) / (hi - lo) (b - a), scores outside [lo, hi]
    clipped (counted). Without it the scores print unchanged, so every one must lie in [a, b] (else a
    ConfigError). The rounded value is clipped to [a, b] too, so a printed score never leaves the stated scale.
    """
    scores = np.asarray(scores, dtype=float)
    low, high = target_range
    if score_range is None:
        outside = (scores < low) | (scores > high)
        if outside.any():
            raise ConfigError(
                f"pairing.reward_augmented.score_range: null prints the scores unchanged, but {int(outside.sum())} "
                f"of {len(scores)} (range {scores.min():g} to {scores.max():g}) lie outside target_range "
                f"[{low:g}, {high:g}]; set score_range to the judge's scale"
            )
        mapped, clipped = scores, 0
    else:
        lo, hi = score_range
        clipped = int(((scores < lo) | (scores > hi)).sum())
        mapped = low + (np.clip(scores, lo, hi) - lo) / (hi - lo) * (high - low)
    return np.clip(np.round(mapped, decimals), low, high), clipped


def reward_augment(
    pairs: pd.DataFrame,
    template: str,
    placement: str = "system",
    score_range: list[float] | None = None,
    target_range: list[float] = (1.0, 10.0),
    decimals: int = 1,
) -> tuple[pd.DataFrame, int]:
    """Reward-augmented data (Zhang et al.): each pair conditioned on its chosen score, plus a copy conditioned
    on its rejected score with chosen and rejected swapped. The conditioning text is ``template`` with
    ``{low}``/``{high}`` set to ``target_range`` and ``{score}`` to the score on that scale
    (:func:`printed_scores`); it goes into a ``system`` column or before the prompt (``placement``).
    ``condition_score`` records the printed score. Returns the rows and how many scores were clipped."""
    swap = {
        "chosen": "rejected",
        "chosen_id": "rejected_id",
        "chosen_generator": "rejected_generator",
        "chosen_score": "rejected_score",
        "chosen_z": "rejected_z",
    }
    swap.update(
        {
            f"chosen_scores.{d}": f"rejected_scores.{d}"
            for d in (c[len("chosen_scores.") :] for c in pairs.columns if c.startswith("chosen_scores."))
        }
    )
    swap = {a: b for a, b in swap.items() if a in pairs.columns}
    flipped = pairs.rename(columns={**swap, **{b: a for a, b in swap.items()}})
    flipped["pair_id"] = flipped["chosen_id"] + "|" + flipped["rejected_id"]
    for column in ["margin"] + [c for c in pairs.columns if c.startswith("margins.")]:
        flipped[column] = -pairs[column]
    flipped["judge_agrees"] = flipped["margin"] > TIE_TOLERANCE
    both = pd.concat(
        [
            pairs.assign(strategy=pairs["strategy"] + "+reward_augmented(chosen score)"),
            flipped.assign(strategy=pairs["strategy"] + "+reward_augmented(rejected score, swapped)"),
        ],
        ignore_index=True,
    )
    score, clipped = printed_scores(both["chosen_score"].to_numpy(float), score_range, target_range, decimals)
    both["condition_score"] = score
    low, high = format_score(np.asarray(target_range), decimals)
    parts = template.replace("{low}", low).replace("{high}", high).split("{score}")
    scores = format_score(score, decimals)
    texts = pd.Series(parts[0], index=scores.index, dtype="str")
    for part in parts[1:]:
        texts = texts + scores + part
    if placement == "system":
        both["system"] = texts.to_numpy()
    else:
        both["prompt"] = (texts + "\n\n" + both["prompt"].astype("str")).to_numpy()
    if not both["pair_id"].is_unique:
        raise DataError("reward augmentation produced a pair twice: the pairs hold both (a, b) and (b, a)")
    return sort_pairs(both), clipped
