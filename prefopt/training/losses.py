"""Preference losses that use the judged gap of each pair: pure tensor functions, one per idea.

Notation: ``h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))`` per pair, ``gap`` the judged
score gap of the pair (``margin`` in the pairs dataset). Every function returns per-pair losses; the trainer
averages them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GapTransform = Literal["none", "linear", "clipped", "tanh"]


def transform_gap(gap: torch.Tensor, kind: GapTransform, scale: float = 1.0, clip_min: float = 0.0,
                  clip_max: float = 1.0) -> torch.Tensor:
    """``g(gap)``: ``none`` gives 1, ``linear`` scale*gap, ``clipped`` clamp(scale*gap), ``tanh`` tanh(scale*gap)."""
    if kind == "none":
        return torch.ones_like(gap)
    if kind == "linear":
        return scale * gap
    if kind == "clipped":
        return (scale * gap).clamp(clip_min, clip_max)
    if kind == "tanh":
        return torch.tanh(scale * gap)
    raise ValueError(f"unknown gap transform {kind!r}")


def normalize_per_batch(weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rescale weights to mean 1 within the batch, so the loss scale (and learning rate) stays comparable."""
    return weights / weights.mean().clamp_min(eps)


def dpo_sigmoid(h: torch.Tensor, beta: float) -> torch.Tensor:
    """Standard DPO: ``-log sigmoid(beta * h)``."""
    return -F.logsigmoid(beta * h)


def gap_weighted_dpo(h: torch.Tensor, beta: float, weights: torch.Tensor) -> torch.Tensor:
    """DPO scaled per pair by a weight derived from its judged gap."""
    return weights * dpo_sigmoid(h, beta)


def gap_offset_dpo(h: torch.Tensor, beta: float, offset: torch.Tensor) -> torch.Tensor:
    """ODPO-style: the policy must beat the reference by an offset that grows with the gap,
    ``-log sigmoid(beta * h - offset)`` with ``offset = alpha * g(gap)``."""
    return -F.logsigmoid(beta * h - offset)


def soft_label_dpo(h: torch.Tensor, beta: float, target: torch.Tensor) -> torch.Tensor:
    """DPO against a target preference probability ``q`` (e.g. ``sigmoid(gap / tau)``):
    ``-[q log sigmoid(beta h) + (1 - q) log sigmoid(-beta h)]``."""
    return -(target * F.logsigmoid(beta * h) + (1 - target) * F.logsigmoid(-beta * h))


def length_normalized_nll(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of the chosen response: ``-log pi(y_w) / |y_w|``."""
    return -chosen_logps / chosen_lengths.clamp_min(1)


def hybrid_dpo_sft(dpo_losses: torch.Tensor, nll: torch.Tensor, to_sft: torch.Tensor) -> torch.Tensor:
    """Small-margin pairs (``to_sft``) get the SFT loss on their chosen response; the rest get DPO."""
    return torch.where(to_sft, nll, dpo_losses)


def kto_losses(logratios: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor, beta: float) -> torch.Tensor:
    """KTO per example: ``1 - sigmoid(beta (r - z0))`` if desirable, ``1 - sigmoid(beta (z0 - r))`` if not."""
    return torch.where(desirable, 1 - torch.sigmoid(beta * (logratios - kl)), 1 - torch.sigmoid(beta * (kl - logratios)))


def class_balance_weights(num_desirable: int, num_undesirable: int) -> tuple[float, float]:
    """KTO desirable/undesirable weights under which both classes contribute equally to the loss."""
    if num_desirable == 0 or num_undesirable == 0:
        raise ValueError(f"KTO needs both classes; got {num_desirable} desirable and {num_undesirable} undesirable")
    total = num_desirable + num_undesirable
    return total / (2 * num_desirable), total / (2 * num_undesirable)
