"""ODPO-style offset: the policy must beat the reference by a margin that grows with the judged gap."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefopt.training.losses import PAIR_LOSSES, raw_weights


def gap_offset_dpo(h: torch.Tensor, beta: float, offset: torch.Tensor) -> torch.Tensor:
    """ODPO-style: the policy must beat the reference by an offset that grows with the gap,
    ``-log sigmoid(beta * h - offset)`` with ``offset = alpha * g(max(gap, 0))``."""
    return -F.logsigmoid(beta * h - offset)


@PAIR_LOSSES.register("offset", uses_gap=True, help="-log sigmoid(beta h - offset_alpha g(max(gap, 0))) (ODPO).")
def _offset(h, beta, gap, weights, cfg):
    g = raw_weights(gap, cfg.gap_transform, cfg.gap_scale, cfg.gap_clip_min, cfg.gap_clip_max)
    return gap_offset_dpo(h, beta, cfg.offset_alpha * g)
