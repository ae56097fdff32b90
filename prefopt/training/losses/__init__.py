"""Preference losses that use the judged gap of each pair: pure tensor functions, one per idea, and the
registries that name them. Each pair loss (``pref_loss``) is a module of this package that registers itself in
:data:`PAIR_LOSSES`: adding one is a new file here and its test.

Notation: ``h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))`` per pair, ``gap`` the judged
score gap of the pair (``margin`` in the pairs dataset). Every loss function returns per-pair losses; the
trainer averages them.

Gap weights: ``g`` (a gap transform) is applied to ``max(gap, 0)``, so a pair the judge does not prefer weighs
``g(0)``. The weights of one window (a gradient-accumulation step over all ranks) are rescaled to mean 1 over
that window (:func:`normalize_weights`) and capped (:func:`gap_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from prefopt.registry import Registry


def _none(x: torch.Tensor, scale: float, clip_min: float, clip_max: float) -> torch.Tensor:
    return torch.ones_like(x)


def _linear(x: torch.Tensor, scale: float, clip_min: float, clip_max: float) -> torch.Tensor:
    return scale * x


def _clipped(x: torch.Tensor, scale: float, clip_min: float, clip_max: float) -> torch.Tensor:
    return (scale * x).clamp(clip_min, clip_max)


def _tanh(x: torch.Tensor, scale: float, clip_min: float, clip_max: float) -> torch.Tensor:
    return torch.tanh(scale * x)


GapFn = Callable[[torch.Tensor, float, float, float], torch.Tensor]
GAP_TRANSFORMS: Registry[GapFn] = Registry("gap transform")
GAP_TRANSFORMS.register("none", _none, help="1 for every pair: plain DPO.")
GAP_TRANSFORMS.register("linear", _linear, help="gap_scale * gap.")
GAP_TRANSFORMS.register("clipped", _clipped, help="clamp(gap_scale * gap, gap_clip_min, gap_clip_max).")
GAP_TRANSFORMS.register("tanh", _tanh, help="tanh(gap_scale * gap).")


def transform_gap(
    gap: torch.Tensor, kind: str, scale: float = 1.0, clip_min: float = 0.0, clip_max: float = 1.0
) -> torch.Tensor:
    """``g(gap)`` for the gap transform named ``kind`` (:data:`GAP_TRANSFORMS`)."""
    return GAP_TRANSFORMS.get(kind).target(gap, scale, clip_min, clip_max)


def raw_weights(
    gap: torch.Tensor, kind: str, scale: float = 1.0, clip_min: float = 0.0, clip_max: float = 1.0
) -> torch.Tensor:
    """Per-pair weights before normalisation: ``g(max(gap, 0))``, non-negative for a positive scale and
    ``clip_min >= 0``; a pair whose gap is 0 or negative weighs ``g(0)`` (0 for linear and tanh)."""
    return transform_gap(gap.clamp_min(0), kind, scale, clip_min, clip_max)


def normalize_weights(raw: torch.Tensor, total: torch.Tensor | float, count: torch.Tensor | float) -> torch.Tensor:
    """``raw * count / total``: mean 1 over the ``count`` weights summing to ``total`` (a whole window); all zero
    where ``total`` is 0 (no pair of the window has a positive weight). Never divides by a number near 0:
    each raw weight is at most ``total``, so a normalised weight is at most ``count``."""
    total = torch.as_tensor(total, dtype=raw.dtype, device=raw.device)
    positive = total > 0
    return torch.where(positive, raw / torch.where(positive, total, 1) * count, torch.zeros_like(raw))


def gap_weights(
    raw: torch.Tensor, total: torch.Tensor | float, count: torch.Tensor | float, max_weight: float
) -> torch.Tensor:
    """Window-normalised weights capped at ``max_weight``: ``min(raw * count / total, max_weight)``, 0 when the
    window's ``total`` is 0."""
    return normalize_weights(raw, total, count).clamp_max(max_weight)


def dpo_sigmoid(h: torch.Tensor, beta: float) -> torch.Tensor:
    """Standard DPO: ``-log sigmoid(beta * h)``."""
    return -F.logsigmoid(beta * h)


# Each pref_loss as ``f(h, beta, gap, weights, cfg)``: ``weights`` are the pair's window-normalised, capped gap
# weights (used by ``weighted`` only), ``cfg`` holds the knobs (gap_transform, gap_scale, offset_alpha, ...).
PairLossFn = Callable[[torch.Tensor, float, torch.Tensor, torch.Tensor, Any], torch.Tensor]


PAIR_LOSSES: Registry[PairLossFn] = Registry(
    "loss",
    plugins=__name__,  # each module of this package registers its loss
    uses_gap=False,  # needs each pair's judged gap (the pref_gap column)
    gap_weighted=False,  # scales each pair by its window-normalised, capped gap weight
    replaces_trl=True,  # prefopt computes the loss; False: TRL's own loss_type (prefopt's path only to route to SFT)
)


def length_normalized_nll(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of the chosen response: ``-log pi(y_w) / |y_w|``."""
    return -chosen_logps / chosen_lengths.clamp_min(1)


def hybrid_dpo_sft(dpo_losses: torch.Tensor, nll: torch.Tensor, to_sft: torch.Tensor) -> torch.Tensor:
    """Small-margin pairs (``to_sft``) get the SFT loss on their chosen response; the rest get DPO."""
    return torch.where(to_sft, nll, dpo_losses)


def kto_losses(logratios: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor, beta: float) -> torch.Tensor:
    """KTO per example: ``1 - sigmoid(beta (r - z0))`` if desirable, ``1 - sigmoid(beta (z0 - r))`` if not."""
    return torch.where(
        desirable, 1 - torch.sigmoid(beta * (logratios - kl)), 1 - torch.sigmoid(beta * (kl - logratios))
    )


def class_balance_weights(num_desirable: int, num_undesirable: int) -> tuple[float, float]:
    """KTO desirable/undesirable weights under which both classes contribute equally to the loss."""
    if num_desirable == 0 or num_undesirable == 0:
        raise ValueError(f"KTO needs both classes; got {num_desirable} desirable and {num_undesirable} undesirable")
    total = num_desirable + num_undesirable
    return total / (2 * num_desirable), total / (2 * num_undesirable)
