"""The judge stage as a unit (:mod:`prefopt.stage`): candidates in, judgments out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefopt.stage import Stage, StageContext


@dataclass(frozen=True)
class Judge(Stage):
    """In place, shard by shard, so that a killed run resumes where it stopped."""

    name = "judge"
    version = 2  # strict judge parsing and math-verify
    reads = "generate"
    schema = "JUDGMENTS"
    resumable = True
    makes_training_data = True

    def config(self, ctx: StageContext):
        return ctx.recipe.judging

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        j = ctx.recipe.judging
        models = [ctx.model_key(ref) for ref in j.model_refs]
        rubric = ctx.fingerprint(j.llm.rubric) if j.llm is not None and Path(j.llm.rubric).is_file() else None
        return j, upstream, models, rubric

    def run(self, ctx: StageContext, source: Path, out: Path) -> bool:
        from prefopt.judging.judge import run_judging
        from prefopt.schemas import CANDIDATES, load_stage_dataset

        run_judging(ctx.recipe.judging, load_stage_dataset(source, CANDIDATES, "candidates"), out, ctx.model_path)
        return True
