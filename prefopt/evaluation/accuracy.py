"""Greedy accuracy of a model on the tiny world, in-domain and out-of-domain.

Evaluation problems come from their own seed (``evaluation.seed``), apart from the generation prompts.
Output: per-problem predictions (``prefopt.schemas.EVAL_PREDICTIONS``) and accuracy per split.
"""

from __future__ import annotations

import logging

from datasets import Dataset
from tqdm.auto import tqdm

from prefopt.configs import EvaluationConfig, WorldConfig
from prefopt.generation.engines import SamplingParams, make_engine
from prefopt.judging.verifier import score_trace
from prefopt.world.tasks import sample_problems

logger = logging.getLogger(__name__)

SPLITS = ("in_domain", "out_of_domain")


def evaluate_model(model_path: str, world: WorldConfig, cfg: EvaluationConfig) -> tuple[Dataset, dict[str, dict]]:
    """Greedy-decode every evaluation problem; return predictions and ``{split: {accuracy, n}}``."""
    llm = make_engine(cfg.engine, model_path, **cfg.engine_options)
    rows = []
    try:
        for split in SPLITS:
            difficulty = getattr(world, split)
            problems = sample_problems(cfg.num_problems, difficulty, seed=cfg.seed + SPLITS.index(split))
            params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
            for start in tqdm(range(0, len(problems), cfg.batch_size), desc=f"eval {split}", unit="batch"):
                batch = problems[start:start + cfg.batch_size]
                outputs = llm.generate([p["problem"] for p in batch], params)
                for p, out in zip(batch, outputs):
                    scores = score_trace(p["problem"], out[0].text).scores
                    rows.append({"split": split, "problem": p["problem"], "answer": p["answer"],
                                 "completion": out[0].text, "correct": bool(scores["correctness"])})
    finally:
        llm.close()
    predictions = Dataset.from_list(rows)
    summary = {}
    for split in SPLITS:
        correct = [r["correct"] for r in rows if r["split"] == split]
        summary[split] = {"accuracy": sum(correct) / len(correct), "n": len(correct)}
    logger.info("%s: in-domain %.1f%%, out-of-domain %.1f%%", model_path,
                100 * summary["in_domain"]["accuracy"], 100 * summary["out_of_domain"]["accuracy"])
    return predictions, summary
