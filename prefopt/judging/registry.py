"""The judge registry: every judge kind with its capabilities, its implementation imported only when a judge is made.

``JUDGES.get(name)`` answers what callers ask (does it need the prompt's reference, does it run a model, which
``judging`` section configures it, its dimensions and score range where they are fixed). Each judge is a module of
:mod:`prefopt.judging.judges` that declares itself (``JUDGE = {"name": ..., <capabilities>}``) and defines
``make(cfg, model_path) -> Judge``; the registry reads the declarations without importing the modules, so the
judging config validates ``judging.judge`` with no torch, no math-verify, no prefopt.recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prefopt.registry import Registry, load_target

if TYPE_CHECKING:
    from prefopt.judging.base import Judge
    from prefopt.judging.config import JudgingConfig

ModelPath = Callable[[str], str]

JUDGES: Registry[str] = Registry(
    "judge",
    plugins="prefopt.judging.judges",  # each module there declares its judge (JUDGE = {...}) and its make
    declared="JUDGE",
    entry="make",
    needs_reference=False,  # scores need the prompt's reference answer
    is_verifier=False,  # a rule-based checker: usable as judging.reference_judge
    is_model=False,  # runs a model (named in its config section)
    config_section=None,  # the judging.<section> that configures it
    supports_pairwise=False,  # can compare two responses (judging.pairwise)
    dimensions=None,  # fixed dimension names; None when the config sets them (rubric, reward_model.dimension)
    score_range=None,  # fixed (low, high) of every score; None when the config sets it
)


def judge_factory(name: str) -> Callable[[JudgingConfig, ModelPath], Judge]:
    """The ``make(cfg, model_path) -> Judge`` of judge ``name`` (imported now, with what it needs)."""
    return load_target(JUDGES.get(name))
