"""The engines: names and capabilities, without importing any of them.

Recipes name an engine (``generation.engine``, ``judging.llm.engine``, ``evaluation.engine``); recipe validation
asks :data:`ENGINES`, so it needs neither torch nor vLLM. Each engine is a module of :mod:`prefopt.engines` that
declares itself (``ENGINE = {"name": ..., "entry": <its class>, <capabilities>}``); :func:`make_engine` imports
the class only when an engine is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefopt.registry import Registry, load_target

if TYPE_CHECKING:
    from prefopt.engines.base import GenerationEngine

ENGINES: Registry[str] = Registry(
    "engine",
    plugins="prefopt.engines",  # each module there declares its engine (ENGINE = {...}) and defines its class
    declared="ENGINE",
    shared=("base", "registry"),  # what the engines share, not engines
    runs_local_weights=True,  # loads a model directory itself (a server engine talks to a model served elsewhere)
    structured_output=False,  # can constrain decoding to a JSON schema or a list of choices
    per_request_seed=False,  # a request's samples depend on its seed only, not on how requests are batched
)


def make_engine(kind: str, model_path: str, **options) -> GenerationEngine:
    """An engine by its registered name; ``options`` go to its constructor (for vLLM: ``vllm.LLM`` arguments)."""
    return load_target(ENGINES.get(kind))(model_path, **options)
