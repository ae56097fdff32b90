"""What every engine shares: the sampling parameters, the completions, the interface and the chat rendering.

An engine takes user messages, renders them with the model's chat template, and returns ``n``
completions per prompt. Seeds are per call, so the same prompts, parameters and seed give the same text.
Stop strings end a completion (the stop string itself is not part of the text); token log-probabilities
(the model's raw distribution, before temperature) come back when asked for; a JSON schema or a list of
choices constrains decoding where the engine can (``structured_output``; an engine that cannot returns free
text, which callers must parse). The engines that load weights take ``chat_template`` (a Jinja string or a .jinja
file) in place of the tokenizer's own, and a LoRA adapter directory as the model.

This module imports nothing heavy (torch and transformers only inside the functions that use them), so recipe
validation reads chat templates with it.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prefopt.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    stop: tuple[str, ...] = ()  # strings that end a completion (excluded from its text)
    logprobs: bool = False  # return each generated token's log-probability
    json_schema: dict | None = None  # constrain the output to this JSON schema, where the engine can
    choices: tuple[str, ...] | None = None  # constrain the output to one of these strings, where the engine can
    reasoning_effort: str | None = None  # servers: the request's reasoning_effort; local engines: a template variable
    chat_template_kwargs: dict | None = None  # extra chat-template variables (servers: the request's)

    def template_kwargs(self) -> dict:
        """The chat template's extra variables, as a vLLM server sets them: ``chat_template_kwargs``, and with a
        ``reasoning_effort`` that variable (gpt-oss's template reads it) and ``enable_thinking`` (effort not "none";
        Qwen3's and Gemma's templates read it) unless chat_template_kwargs sets it."""
        kwargs = dict(self.chat_template_kwargs or {})
        if self.reasoning_effort:
            kwargs["reasoning_effort"] = self.reasoning_effort
            kwargs.setdefault("enable_thinking", self.reasoning_effort != "none")
        return kwargs


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    token_logprobs: tuple[float, ...] | None = None  # with SamplingParams.logprobs
    reasoning: str | None = None  # a server's separate reasoning text (reasoning_content), never part of text

    @property
    def cumulative_logprob(self) -> float | None:
        return None if self.token_logprobs is None else float(sum(self.token_logprobs))


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class GenerationEngine(Protocol):
    """What the generate, judge and eval stages need from an engine."""

    def generate(self, prompts: list[str], params: SamplingParams, system: str | None = None) -> list[list[Completion]]:
        """``n`` completions for each prompt: a user message (after the ``system`` message, if given) or a whole
        conversation (a list of {role, content} messages ending with the user's turn)."""

    def close(self) -> None:
        """Release the model's memory."""


def release_memory() -> None:
    """Return a just-deleted model's memory, so that the next engine can load."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_torch_dtype(device: str | torch.device) -> torch.dtype:
    """Weights when none is asked for: bfloat16 on a CUDA GPU that has it (as vLLM and training load them), else
    float32 (CPU)."""
    import torch

    on_cuda = torch.device(device).type == "cuda"
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def messages(prompt: str | list[dict], system: str | None = None) -> list[dict]:
    """The chat of one prompt: a user message after the ``system`` message (if given), or a whole conversation (a
    list of {role, content} messages ending with the user's turn) as it is, ``system`` unused."""
    if not isinstance(prompt, str):
        return list(prompt)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def chat_template_text(value: str, where: str = "chat_template") -> str:
    """The template's Jinja text: ``value`` itself, or the text of the .jinja file it names (read without importing
    transformers). Whether it compiles is checked by :func:`read_chat_template`."""
    if value.endswith(".jinja") and "{" not in value and "\n" not in value:
        if not Path(value).is_file():
            raise ConfigError(f"{where}: .jinja file not found (given {value!r})")
        return Path(value).read_text()
    if "{{" not in value and "{%" not in value:
        raise ConfigError(
            f"{where}: neither a Jinja template nor a .jinja file (given {value[:60]!r}, expected "
            "Jinja text with {{ }} / {% %} or a path ending in .jinja)"
        )
    return value


def read_chat_template(value: str, where: str = "chat_template") -> str:
    """A chat template given as Jinja text, or as the path of a .jinja file (read now); checked to compile."""
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    text = chat_template_text(value, where)
    try:
        _compile_jinja_template(text)
    except TemplateError as err:
        raise ConfigError(f"{where}: the chat template does not compile ({err}; given {value[:60]!r})") from None
    return text


def load_chat_tokenizer(model_path: str, chat_template: str | None = None, where: str = "chat_template", **kwargs):
    """``model_path``'s tokenizer with ``chat_template`` (Jinja text or a .jinja file) in place of its own; one
    that has no chat template and none given is an error."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, **kwargs)
    if chat_template is not None:
        tokenizer.chat_template = read_chat_template(chat_template, where)
    if not tokenizer.chat_template:
        raise ConfigError(
            f"{where}: {model_path}: its tokenizer has no chat template (given none; expected a Jinja "
            "string or a .jinja file)"
        )
    return tokenizer


def adapter_config(model_path: str) -> dict | None:
    """The PEFT adapter config of an adapter directory (``adapter_config.json``), or None for a full model."""
    path = Path(model_path) / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def render_prompts(tokenizer, prompts: list[str], system: str | None = None, **template_kwargs) -> list[str]:
    """User messages (after a system message, if given) rendered through the chat template, ready for the
    assistant's turn; ``template_kwargs`` are the template's extra variables (``reasoning_effort``, ...)."""
    return [
        tokenizer.apply_chat_template(
            messages(p, system), tokenize=False, add_generation_prompt=True, **template_kwargs
        )
        for p in prompts
    ]
