"""Finding the Sweet Spot: chosen and rejected at positions mu + k sigma of each prompt's score distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefopt.pairing.candidates import (
    Built,
    pick_best,
    prompt_moments,
    taken_mask,
    tiebreak_keys,
    within_prompt,
    within_prompt_pairs,
)

STRATEGY = {
    "name": "sweet_spot",
    "within_prompt": True,
    "settings": "sweet_spot",
    "help": "Per prompt: the candidates nearest mu + k sigma of its scores (Finding the Sweet Spot).",
}


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
    cands, groups, short = within_prompt(judged, generators)
    score = cands["aggregate"].to_numpy(float)
    mean, std = prompt_moments(score, groups)
    ids = cands["candidate_id"]
    if chosen_k is None:
        chosen = pick_best(cands, groups, seed)
    else:
        chosen = groups.first_per_group(np.abs(score - (mean + chosen_k * std)), -score, tiebreak_keys(ids, seed))
    taken = taken_mask(chosen, len(cands))
    rejected = groups.first_per_group(
        taken, np.abs(score - (mean + rejected_k * std)), score, tiebreak_keys(ids, seed, "rejected")
    )
    label = (
        f"sweet_spot(chosen={'max' if chosen_k is None else f'mu{chosen_k:+g}sigma'},rejected=mu{rejected_k:+g}sigma)"
    )
    return within_prompt_pairs(judged, cands, groups, chosen, rejected, label, short)


def run(cfg, judged: pd.DataFrame) -> Built:
    return sweet_spot(judged, cfg.sweet_spot.chosen_k, cfg.sweet_spot.rejected_k, cfg.generators or None, cfg.seed)
