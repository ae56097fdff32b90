"""The tiny world's step checker as a judge (:func:`prefopt.judging.verifier.score_trace`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.judging.base import FunctionJudge
from prefopt.judging.verifier import score_trace

if TYPE_CHECKING:
    from prefopt.judging.config import JudgingConfig
    from prefopt.judging.registry import ModelPath

JUDGE = {
    "name": "tiny_world_verifier",
    "is_verifier": True,
    "dimensions": ("correctness", "step_accuracy", "format"),
    "score_range": (0.0, 1.0),
    "help": "The tiny world's step checker.",
}


def make(cfg: JudgingConfig, model_path: ModelPath) -> FunctionJudge:
    return FunctionJudge(JUDGE["name"], JUDGE["dimensions"], score_trace)
