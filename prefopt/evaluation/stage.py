"""The eval stage as a unit (:mod:`prefopt.stage`): a model in, its predictions and accuracy on every evaluation
set out. What it reads is the model (its directory), and its upstream identity the model's key."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from prefopt.stage import Stage, StageContext
from prefopt.tasks.registry import TASKS, task
from prefopt.user_data import source_key


@dataclass(frozen=True)
class Evaluate(Stage):
    """One model's accuracy, written whole. ``trained``: the trained policy (it may get its own system message);
    ``policy``: the policy before training; both are asked with ``training.chat_template`` where one is set."""

    name = "eval"
    version = 2  # math-verify
    schema = "EVAL_PREDICTIONS"
    trained: bool = False
    policy: bool = False

    def config(self, ctx: StageContext):
        """The evaluation config as this model gets it, so that the policy before and after training is asked
        alike."""
        cfg, t = ctx.recipe.evaluation, ctx.recipe.training
        trained = self.trained
        system = cfg.trained_system_prompt if trained and cfg.trained_system_prompt is not None else cfg.system_prompt
        options = cfg.engine_options
        if (self.policy or trained) and t.chat_template is not None:
            options = {**options, "chat_template": t.chat_template}
        return dataclasses.replace(cfg, system_prompt=system, trained_system_prompt=None, engine_options=options)

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        """The evaluation settings, the identity of the own sets of every task the recipe holds a section for
        (evaluated or not, as it always was: the tiny world's splits), the benchmarks' data and the model
        (``upstream``)."""
        tasks = [e.name for e in TASKS if e.section is not None and e.eval_sets]
        own = [part for name in tasks for part in task(name).eval_key(ctx.settings(name))]
        specs = [b.dataset_spec() for b in ctx.recipe.evaluation.benchmarks]  # a file by its content, a Hub id by
        # its commit
        sources = [
            ctx.fingerprint(s.path) if s.is_local else ctx.once(("dataset", repr(s)), lambda s=s: source_key(s))
            for s in specs
        ]
        return self.config(ctx), *own, sources, upstream

    def manifest(self, ctx: StageContext, source) -> dict:
        return {"config": self.config(ctx), "model": source}

    def run(self, ctx: StageContext, source: str, out: Path) -> bool:
        from prefopt.evaluation import accuracy
        from prefopt.schemas import save_stage_dataset

        settings = self.config(ctx)
        tasks = {name: ctx.settings(name) for name in ctx.recipe.evaluation.tasks}
        predictions, summary = accuracy.evaluate_model(source, tasks, settings, system=settings.system_prompt)
        save_stage_dataset(predictions, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return True
