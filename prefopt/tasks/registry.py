"""The tasks: names and capabilities, without importing any of them.

A task is what a run is about: where its prompts come from, the verifier or judge that scores its answers, its own
evaluation sets and the models it builds, if any. The stages ask :data:`TASKS` instead of naming a task:
``generation.prompts.source`` names the task whose prompts are generated from, ``evaluation.tiny_world`` turns on
the tiny world's sets (:attr:`prefopt.evaluation.config.EvaluationConfig.tasks`), and a model reference
``<model_prefix><name>`` (``world:policy``) is built by the task that declares that prefix. Each task is a module of
:mod:`prefopt.tasks` that declares itself (``TASK = {"name": ..., <capabilities>}``) and defines ``class Task`` with
the methods of :class:`Task` its capabilities promise; the class is imported only when it is used.

This module is a leaf: it imports nothing of prefopt's stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prefopt.registry import Registry, load_target

TASKS: Registry[Any] = Registry(
    "task",
    plugins="prefopt.tasks",  # each module there declares its task (TASK = {...}) and defines its class Task
    declared="TASK",
    entry="Task",
    shared=("registry",),
    section=None,  # the recipe section holding its settings (the tiny world: 'world'); None: it has none
    prompts=False,  # supplies generation prompts (Task.prompts, Task.prompts_key)
    verifier=None,  # the JUDGES name of the verifier that scores its answers
    eval_sets=(),  # names of its own evaluation sets (Task.eval_sets, Task.eval_key)
    model_prefix=None,  # the models it builds are '<model_prefix><name>' (Task.model_names, model_key, build_model)
)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: its problems as the model is asked and as recorded, the gold answers, and how an answer is
    scored: ``judge(problem, completion, answer) -> (correct, extracted answer or None)``."""

    name: str
    domain: str  # "in_domain" or "out_of_domain": which mean the set counts towards
    prompts: list[str]
    problems: list[str]
    answers: list[str]
    judge: Callable[[str, str, str], tuple[bool, str | None]]


class Task(Protocol):
    """What a task's class defines; ``settings`` is its recipe section (None where it has none)."""

    def prompts(self, source: Any, settings: Any) -> list[dict]:
        """Generation prompts for ``source`` (the recipe's generation.prompts): rows ``{"prompt_id", "prompt",
        "prompt_messages", "reference"}``."""

    def prompts_key(self, source: Any, settings: Any) -> Any:
        """The identity of those prompts beyond ``source`` itself, for the generate stage's key."""

    def eval_sets(self, settings: Any, cfg: Any) -> list[EvalSet]:
        """Its evaluation sets, as ``cfg`` (the recipe's evaluation section) asks for them."""

    def eval_key(self, settings: Any) -> tuple:
        """The identity of its evaluation sets beyond ``cfg``, for the eval stage's key."""

    def model_names(self, settings: Any) -> list[str]:
        """The names of the models it builds."""

    def model_key(self, name: str, settings: Any) -> str:
        """The identity of model ``name``."""

    def build_model(self, name: str, settings: Any, cache_dir: Path, build: bool) -> tuple[Path, bool]:
        """Model ``name``'s directory and whether it was already built; it is built first unless it is, which
        without ``build`` is a FileNotFoundError."""


def task(name: str) -> Task:
    """Task ``name``'s class, instantiated (imported now, with what it needs)."""
    return load_target(TASKS.get(name))()


def task_settings(recipe: Any, name: str) -> Any:
    """Task ``name``'s settings: its section of ``recipe`` (None where it has none)."""
    section = TASKS.get(name).section
    return None if section is None else getattr(recipe, section)


def model_task(ref: str) -> str | None:
    """The name of the task that builds model ``ref`` (``world:policy``: the tiny world), or None."""
    for entry in TASKS:
        if entry.model_prefix is not None and ref.startswith(entry.model_prefix):
            return entry.name
    return None
