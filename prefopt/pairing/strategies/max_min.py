"""Per prompt, the best candidate against the worst other one."""

from __future__ import annotations

import pandas as pd

from prefopt.pairing.candidates import (
    Built,
    pick_best,
    taken_mask,
    tiebreak_keys,
    within_prompt,
    within_prompt_pairs,
)

STRATEGY = {
    "name": "max_min",
    "within_prompt": True,
    "help": "Per prompt: the best candidate against the worst other one.",
}


def max_min(judged: pd.DataFrame, generators: list[str] | None = None, seed: int = 0) -> Built:
    """Per prompt: the best candidate against the worst other one."""
    cands, groups, short = within_prompt(judged, generators)
    chosen = pick_best(cands, groups, seed)
    score = cands["aggregate"].to_numpy(float)
    taken = taken_mask(chosen, len(cands))
    rejected = groups.first_per_group(taken, score, tiebreak_keys(cands["candidate_id"], seed, "min"))
    return within_prompt_pairs(judged, cands, groups, chosen, rejected, "max_min", short)


def run(cfg, judged: pd.DataFrame) -> Built:
    return max_min(judged, cfg.generators or None, cfg.seed)
