"""Every judged candidate a KTO example, desirable or not by its absolute score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefopt.pairing.candidates import (
    Built,
    score_dimensions,
    take,
    usable_candidates,
)

STRATEGY = {
    "name": "kto_unpaired",
    "unpaired": True,
    "settings": "kto",
    "help": "Every candidate a KTO example, desirable or not by its absolute score.",
}


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
            "prompt": take(judged["prompt"], rows),
            "completion": take(judged["completion"], rows),
            "generator": cands["generator"],
            "label": label,
            "score": score[keep],
            **{f"scores.{d}": cands[f"scores.{d}"] for d in score_dimensions(cands)},
            "class_weight": weight,
            "strategy": rule,
        }
    )
    return Built(frame.sort_values("example_id", kind="stable").reset_index(drop=True), [], int((~keep).sum()))


def run(cfg, judged: pd.DataFrame) -> Built:
    return kto_unpaired(judged, cfg.kto.desirable_min, cfg.kto.undesirable_max, cfg.generators or None)
