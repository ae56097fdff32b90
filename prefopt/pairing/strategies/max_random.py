"""Per prompt, the best candidate against a seeded random other one (the UltraFeedback baseline)."""

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
    "name": "max_random",
    "within_prompt": True,
    "help": "Per prompt: the best candidate against a seeded random other one.",
}


def max_random(judged: pd.DataFrame, generators: list[str] | None = None, seed: int = 0) -> Built:
    """Per prompt: the best candidate against a uniformly random other one (the UltraFeedback baseline)."""
    cands, groups, short = within_prompt(judged, generators)
    chosen = pick_best(cands, groups, seed)
    taken = taken_mask(chosen, len(cands))
    rejected = groups.first_per_group(taken, tiebreak_keys(cands["candidate_id"], seed, "random"))
    return within_prompt_pairs(judged, cands, groups, chosen, rejected, "max_random", short)


def run(cfg, judged: pd.DataFrame) -> Built:
    return max_random(judged, cfg.generators or None, cfg.seed)
