"""DPO against a soft target probability derived from the judged gap, ``sigmoid(gap / tau)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefopt.training.losses import PAIR_LOSSES


def soft_label_dpo(h: torch.Tensor, beta: float, target: torch.Tensor) -> torch.Tensor:
    """DPO against a target preference probability ``q`` (e.g. ``sigmoid(gap / tau)``):
    ``-[q log sigmoid(beta h) + (1 - q) log sigmoid(-beta h)]``."""
    return -(target * F.logsigmoid(beta * h) + (1 - target) * F.logsigmoid(-beta * h))


@PAIR_LOSSES.register(
    "soft_label", uses_gap=True, help="DPO against the target probability sigmoid(gap / soft_label_tau)."
)
def _soft_label(h, beta, gap, weights, cfg):
    return soft_label_dpo(h, beta, torch.sigmoid(gap / cfg.soft_label_tau))
