"""The judge registry: every judge kind, registered once with its capabilities, its implementation imported lazily.

``JUDGES.get(name)`` answers what callers ask (does it need the prompt's reference, does it run a model, which
``judging`` section configures it, its dimensions and score range where they are fixed); its ``target``
makes the judge from the ``judging`` config and a model-path resolver. This module imports nothing heavy (no
torch, no math-verify, no prefopt.recipe), so the judging config validates ``judging.judge`` against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prefopt.registry import Registry

if TYPE_CHECKING:
    from prefopt.judging.base import Judge
    from prefopt.judging.config import JudgingConfig

ModelPath = Callable[[str], str]

JUDGES: Registry[Callable[[JudgingConfig, ModelPath], Judge]] = Registry(
    "judge",
    needs_reference=False,  # scores need the prompt's reference answer
    is_verifier=False,  # a rule-based checker: usable as judging.reference_judge
    is_model=False,  # runs a model (named in its config section)
    config_section=None,  # the judging.<section> that configures it
    supports_pairwise=False,  # can compare two responses (judging.pairwise)
    dimensions=None,  # fixed dimension names; None when the config sets them (rubric, reward_model.dimension)
    score_range=None,  # fixed (low, high) of every score; None when the config sets it
)


@JUDGES.register(
    "tiny_world_verifier",
    help="The tiny world's step checker.",
    is_verifier=True,
    dimensions=("correctness", "step_accuracy", "format"),
    score_range=(0.0, 1.0),
)
def _tiny_world_verifier(cfg: JudgingConfig, model_path: ModelPath) -> Judge:
    from prefopt.judging.base import FunctionJudge
    from prefopt.judging.verifier import score_trace

    return FunctionJudge("tiny_world_verifier", JUDGES.get("tiny_world_verifier").dimensions, score_trace)


@JUDGES.register(
    "math_verifier",
    help="The final answer against the prompt's reference, with math-verify.",
    is_verifier=True,
    needs_reference=True,
    dimensions=("correctness", "answer_found"),
    score_range=(0.0, 1.0),
)
def _math_verifier(cfg: JudgingConfig, model_path: ModelPath) -> Judge:
    from prefopt.judging.base import FunctionJudge
    from prefopt.judging.math_verifier import score_math

    return FunctionJudge("math_verifier", JUDGES.get("math_verifier").dimensions, score_math)


@JUDGES.register(
    "llm", help="An LLM judge on a rubric (judging.llm).", is_model=True, config_section="llm", supports_pairwise=True
)
def _llm(cfg: JudgingConfig, model_path: ModelPath) -> Judge:
    from prefopt.generation.engines import make_engine
    from prefopt.judging.llm_judge import LLMJudge

    engine = make_engine(cfg.llm.engine, model_path(cfg.llm.model), **cfg.llm.engine_options)
    return LLMJudge(cfg.llm, engine, owns_engine=True)


@JUDGES.register(
    "reward_model",
    help="A sequence-classification reward model (judging.reward_model).",
    is_model=True,
    config_section="reward_model",
)
def _reward_model(cfg: JudgingConfig, model_path: ModelPath) -> Judge:
    from prefopt.judging.reward_model import RewardModelJudge

    return RewardModelJudge(model_path(cfg.reward_model.model), cfg.reward_model)
