"""The tiny world's recipe section: its splits and the models built in it."""

from __future__ import annotations

from dataclasses import dataclass

from prefopt.config_base import described
from prefopt.world.specs import TinyModelSpec
from prefopt.world.tasks import Difficulty


@dataclass(frozen=True)
class WorldConfig:
    """The tiny arithmetic world: its splits and the models built in it."""

    in_domain: Difficulty = described("Problems of the in-domain split.", default_factory=Difficulty)
    out_of_domain: Difficulty = described(
        "Problems of the out-of-domain split; by default chains with operands never seen in training (0, 10-12).",
        default_factory=lambda: Difficulty(min_ops=1, max_ops=3, min_operand=0, max_operand=12),
    )
    models: dict[str, TinyModelSpec] = described(
        "Tiny models to build by name; refer to one elsewhere as 'world:<name>'.", default_factory=dict
    )
