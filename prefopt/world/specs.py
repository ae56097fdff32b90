"""The tiny-world model specs: what a recipe's ``world.models`` entries hold (no torch, so recipes load fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prefopt.cache import content_hash
from prefopt.world.tasks import Difficulty

# Bump when the world's data format, tokenizer or training loop changes: it invalidates cached models.
WORLD_VERSION = 3
HEAD_DIM = 32  # vLLM's CPU attention needs head_dim 32 (16 fails).


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture and SFT budget of one tiny-world model."""

    num_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    hidden_size: int = field(default=128, metadata={"help": "Hidden size; a multiple of 32 (head_dim 32)."})
    train_steps: int = field(default=600, metadata={"help": "SFT optimizer steps on fresh problems."})
    batch_size: int = field(default=64, metadata={"help": "Problems per SFT step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate of the one-cycle schedule."})
    seed: int = field(default=0, metadata={"help": "Seed for weights and training data."})
    train_difficulty: Difficulty = field(
        default_factory=Difficulty, metadata={"help": "Problems the model is trained on."}
    )
    task: Literal["solver", "judge"] = field(
        default="solver",
        metadata={
            "help": "'solver' writes worked traces; 'judge' scores traces on the tiny_world rubric (an LLM judge)."
        },
    )

    def __post_init__(self):
        if self.hidden_size % HEAD_DIM:
            raise ValueError(f"hidden_size must be a multiple of {HEAD_DIM}, got {self.hidden_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("num_layers", "train_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def cache_key(self) -> str:
        return content_hash({"world_version": WORLD_VERSION, "spec": self})
