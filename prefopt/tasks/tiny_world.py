"""The tiny arithmetic world as a task (:mod:`prefopt.world`): prompts sampled from a split, the step verifier,
the in-domain and out-of-domain evaluation sets, and the tiny models of the recipe's ``world.models``, its judges
trained on the rows of :func:`judge_rows` (the rubric's prompts answered by the verifier)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from prefopt.tasks.registry import EvalSet

TASK = {
    "name": "tiny_world",
    "help": "Chained arithmetic problems sampled from the recipe's world section, scored by the step verifier.",
    "section": "world",
    "prompts": True,
    "verifier": "tiny_world_verifier",
    "eval_sets": ("in_domain", "out_of_domain"),
    "model_prefix": "world:",
}


def _judge(problem: str, completion: str, answer: str) -> tuple[bool, str | None]:
    """The step verifier's correctness and the trace's final ``. =<n>``."""
    from prefopt.judging.verifier import final_answer, score_trace

    return bool(score_trace(problem, completion).scores["correctness"]), final_answer(completion)


def judge_rows(problems: list[dict], rng: random.Random, pairwise_share: float = 0.3) -> list[dict]:
    """SFT rows for the tiny judge on the tiny_world rubric's prompts: for one trace, the verifier's scores on the
    rubric's scale as the compact JSON a constrained decoder writes; for two traces (``pairwise_share`` of the
    rows), "A" or "B", whichever the verifier scores higher on the mean of its dimensions. The world's model
    builder (:func:`prefopt.world.models.train_tiny_model`) calls it each step with that step's problems."""
    from prefopt.judging.rubrics import load_rubric
    from prefopt.judging.verifier import score_trace
    from prefopt.world.tasks import sample_trace

    rubric = load_rubric("tiny_world")

    def scores(problem: str, trace: str) -> dict[str, float]:
        return score_trace(problem, trace).scores

    rows = []
    for p in problems:
        problem, trace = p["problem"], sample_trace(rng, p["problem"])
        if rng.random() < pairwise_share:
            other = sample_trace(rng, problem)
            gap = sum(scores(problem, trace).values()) - sum(scores(problem, other).values())
            if gap:
                rows.append(
                    {"problem": rubric.pairwise_prompt(problem, trace, other), "solution": "A" if gap > 0 else "B"}
                )
                continue
        target = {d: round(rubric.low + (rubric.high - rubric.low) * v) for d, v in scores(problem, trace).items()}
        rows.append(
            {"problem": rubric.pointwise_prompt(problem, trace), "solution": json.dumps(target, separators=(",", ":"))}
        )
    return rows


class Task:
    def prompts(self, source, world) -> list[dict]:
        """``source.num_prompts`` problems of ``source.split``, seeded by ``source.seed``, each one user turn."""
        from prefopt.generation.generate import with_system_prompt
        from prefopt.world.tasks import sample_problems

        rows = sample_problems(source.num_prompts, getattr(world, source.split), seed=source.seed)
        return [
            {
                "prompt_id": f"{source.split}-{i:06d}",
                "prompt": r["problem"],
                "prompt_messages": with_system_prompt(
                    [{"role": "user", "content": r["problem"]}], source.system_prompt
                ),
                "reference": r["answer"],
            }
            for i, r in enumerate(rows)
        ]

    def prompts_key(self, source, world) -> tuple:
        return world.in_domain, world.out_of_domain

    def eval_sets(self, world, cfg) -> list[EvalSet]:
        """``cfg.num_problems`` problems of each split, seeded by ``cfg.seed`` apart from the generation prompts."""
        from prefopt.world.tasks import sample_problems

        sets = []
        for i, split in enumerate(TASK["eval_sets"]):
            rows = sample_problems(cfg.num_problems, getattr(world, split), seed=cfg.seed + i)
            problems = [r["problem"] for r in rows]
            sets.append(EvalSet(split, split, problems, problems, [r["answer"] for r in rows], _judge))
        return sets

    def eval_key(self, world) -> tuple:
        return world.in_domain, world.out_of_domain

    def model_names(self, world) -> list[str]:
        return sorted(world.models)

    def model_key(self, name: str, world) -> str:
        return world.models[name].cache_key()

    def build_model(self, name: str, world, cache_dir: Path, build: bool) -> tuple[Path, bool]:
        from prefopt.cache import is_complete

        spec = world.models[name]
        cached = is_complete(Path(cache_dir) / "models" / spec.cache_key())
        if not cached and not build:
            raise FileNotFoundError(f"world:{name} is not built yet; `prefopt run` or `prefopt train` builds it")
        from prefopt.world.models import build_tiny_model  # torch

        return build_tiny_model(spec, cache_dir, desc=f"world:{name}", judge_rows=judge_rows), cached
