"""Reward-augmented data (Zhang et al.): each pair conditioned on its chosen score, plus a swapped copy conditioned
on its rejected score, the scores printed on the template's scale."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefopt.errors import ConfigError, DataError
from prefopt.pairing.candidates import TIE_TOLERANCE, sort_pairs


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
