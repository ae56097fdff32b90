"""The keywords ``vllm.LLM`` takes, read from the installed vLLM's source without importing it.

Importing vLLM takes seconds and a recipe loads without torch, so the names come from the source itself: the
keyword parameters of ``LLM.__init__`` (``vllm/entrypoints/llm.py``) and the fields of ``EngineArgs``
(``vllm/engine/arg_utils.py``), which take the rest (``**kwargs``). An engine option that is neither is refused
when the recipe loads, in one line, instead of as a traceback from the engine's start. Without vLLM installed (or
with sources laid out otherwise) nothing is checked here, and vLLM checks at engine start.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefopt.config_base import did_you_mean
from prefopt.errors import ConfigError

# Options prefopt's VLLMEngine takes itself, on top of vllm.LLM's.
ENGINE_OWN = frozenset({"chat_template"})
# vllm.LLM keywords prefopt sets from the recipe, never from engine_options.
SET_BY_PREFOPT = frozenset({"model"})


def _keyword_parameters(tree: ast.Module, cls: str, method: str) -> set[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    return {a.arg for a in item.args.args + item.args.kwonlyargs} - {"self"}
    return set()


def _dataclass_fields(tree: ast.Module, cls: str) -> set[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {i.target.id for i in node.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)}
    return set()


@functools.cache
def vllm_keywords() -> frozenset[str] | None:
    """Every keyword ``vllm.LLM`` accepts, or None when vLLM is not installed or its source cannot be read."""
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        own = _keyword_parameters(ast.parse((root / "entrypoints" / "llm.py").read_text()), "LLM", "__init__")
        engine_args = _dataclass_fields(ast.parse((root / "engine" / "arg_utils.py").read_text()), "EngineArgs")
    except (OSError, SyntaxError, ValueError):
        return None
    if not own or not engine_args:  # laid out otherwise: leave the check to vLLM
        return None
    return frozenset(own | engine_args)


def check_vllm_options(options: Mapping[str, Any], where: str = "engine_options") -> None:
    """A one-line ConfigError for an option ``vllm.LLM`` does not take (or one prefopt sets itself)."""
    for key in options:
        if key in SET_BY_PREFOPT:
            raise ConfigError(f"{where}.{key}: set by prefopt from the recipe's model field, not an engine option")
    known = vllm_keywords()
    if known is None:
        return
    for key in sorted(set(options) - known - ENGINE_OWN):
        raise ConfigError(
            f"{where}.{key}: not a vllm.LLM keyword (nor an EngineArgs field) of the installed vLLM"
            f"{did_you_mean(key, known | ENGINE_OWN)}"
        )
