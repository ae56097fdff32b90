"""The generate stage as a unit (:mod:`prefopt.stage`): prompts and generators in, candidates out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefopt.stage import Stage, StageContext, StageOutcome
from prefopt.tasks.registry import task


@dataclass(frozen=True)
class Generate(Stage):
    """In place, unit by unit, so that a killed run resumes where it stopped. With ``num_shards > 1`` this process is
    one worker of many; with ``generation.data_parallel_size > 1`` it starts that many workers itself. Either way, the
    run that finds every unit done merges them."""

    name = "generate"
    version = 2  # candidates keep the conversation (prompt_messages)
    schema = "CANDIDATES"
    resumable = True
    makes_training_data = True
    shard: int = 0
    num_shards: int = 1

    def config(self, ctx: StageContext):
        return ctx.recipe.generation

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        g = ctx.recipe.generation
        models = {gen.name: ctx.model_key(gen.model) for gen in g.generators}
        p = g.prompts  # the task's identity of its prompts: an edited prompt file is new input, a Hub dataset its id,
        # config, split and revision; the tiny world's splits
        source = ctx.once(("prompts", repr(p)), lambda: task(p.source).prompts_key(p, ctx.settings(p.source)))
        return g, models, source

    def manifest(self, ctx: StageContext, source) -> dict:
        return {"config": self.config(ctx)}

    def run(self, ctx: StageContext, source, out: Path) -> bool:
        from prefopt.generation.generate import load_prompts, run_generation
        from prefopt.generation.parallel import run_data_parallel

        g = ctx.recipe.generation
        if self.num_shards == 1 and g.data_parallel_size > 1:
            run_data_parallel(ctx, out)
        prompts = load_prompts(g.prompts, ctx.settings(g.prompts.source))
        merged = run_generation(g, prompts, ctx.model_path, out, self.shard, self.num_shards)
        if not merged:
            ctx.outcomes.append(StageOutcome(f"generate shard {self.shard}/{self.num_shards}", out, "ran"))
        return merged
