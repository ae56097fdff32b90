"""Gap-weighted DPO: each pair's loss scaled by its window-normalised, capped gap weight."""

from __future__ import annotations

import torch

from prefopt.training.losses import PAIR_LOSSES, dpo_sigmoid


def gap_weighted_dpo(h: torch.Tensor, beta: float, weights: torch.Tensor) -> torch.Tensor:
    """DPO scaled per pair by a weight derived from its judged gap."""
    return weights * dpo_sigmoid(h, beta)


@PAIR_LOSSES.register(
    "weighted",
    uses_gap=True,
    gap_weighted=True,
    help="w * -log sigmoid(beta h), w the pair's window-normalised, capped g(max(gap, 0)).",
)
def _weighted(h, beta, gap, weights, cfg):
    return gap_weighted_dpo(h, beta, weights)
