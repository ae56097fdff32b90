"""Generator-level delta: traces of a stronger generator chosen over a weaker one's, sample i against sample i."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefopt.errors import DataError
from prefopt.pairing.candidates import (
    Built,
    assemble_pairs,
    sort_pairs,
    usable_candidates,
)

STRATEGY = {
    "name": "generator_delta",
    "needs_generator_labels": True,
    "help": "Chosen from the stronger generator of each generator_pairs entry, sample i against sample i.",
}


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


def run(cfg, judged: pd.DataFrame) -> Built:
    return generator_delta(judged, [(p.chosen, p.rejected) for p in cfg.generator_pairs])
