"""The train stage as a unit (:mod:`prefopt.stage`): pairs (or data given by hand) in, the trained policy out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefopt.stage import Stage, StageContext


@dataclass(frozen=True)
class Train(Stage):
    """In place (not in a temporary directory) so that a crashed run resumes from its checkpoints."""

    name = "train"
    version = 2  # bounded, step-normalised gap weights and one fp32 log-prob path
    reads = "pairs"
    resumable = True

    def config(self, ctx: StageContext):
        return ctx.recipe.training

    def dataset(self, ctx: StageContext):
        return ctx.recipe.training.dataset

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        t = ctx.recipe.training
        return t, upstream, ctx.model_key(t.model)

    def run(self, ctx: StageContext, source, out: Path) -> bool:
        from prefopt.training.data import prepare_training_data
        from prefopt.training.launch import launch_training

        t = ctx.recipe.training
        data = prepare_training_data(source, t, out)  # checked before any model or rank starts
        launch_training(t, data, ctx.model_path(t.model), out)
        return True

    def write_config(self, ctx: StageContext, source, out: Path) -> Path:
        """The flat train config of ``out``, for launching the entry point by hand: checks the training data, builds
        no model (many ranks call this)."""
        from prefopt.training.data import prepare_training_data
        from prefopt.training.launch import write_train_config

        t = ctx.recipe.training
        data = prepare_training_data(source, t, out)
        return write_train_config(t, data, ctx.model_path(t.model, build=False), out)
