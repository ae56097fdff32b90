"""Plain DPO, ``-log sigmoid(beta h)``: prefopt's own (``sigmoid``) and TRL's unchanged (``stock``)."""

from __future__ import annotations

from prefopt.training.losses import PAIR_LOSSES, dpo_sigmoid


def _sigmoid(h, beta, gap, weights, cfg):
    return dpo_sigmoid(h, beta)


PAIR_LOSSES.register(
    "stock",
    _sigmoid,
    replaces_trl=False,
    help="TRL's loss_type unchanged (with SFT routing: prefopt's sigmoid DPO, TRL's default).",
)
PAIR_LOSSES.register("sigmoid", _sigmoid, help="-log sigmoid(beta h), equal to TRL's sigmoid loss.")
