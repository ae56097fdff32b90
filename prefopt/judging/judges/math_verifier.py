"""The final answer against the prompt's reference as a judge (:func:`prefopt.judging.math_verifier.score_math`,
which evaluation shares)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.judging.base import FunctionJudge
from prefopt.judging.math_verifier import score_math

if TYPE_CHECKING:
    from prefopt.judging.config import JudgingConfig
    from prefopt.judging.registry import ModelPath

JUDGE = {
    "name": "math_verifier",
    "is_verifier": True,
    "needs_reference": True,
    "dimensions": ("correctness", "answer_found"),
    "score_range": (0.0, 1.0),
    "help": "The final answer against the prompt's reference, with math-verify.",
}


def make(cfg: JudgingConfig, model_path: ModelPath) -> FunctionJudge:
    return FunctionJudge(JUDGE["name"], JUDGE["dimensions"], score_math)
