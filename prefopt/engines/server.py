"""An already-running OpenAI-compatible server (``vllm serve``, SGLang, TGI, a hosted API), through ``openai``."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from prefopt.engines.base import Completion, SamplingParams, messages

logger = logging.getLogger(__name__)

ENGINE = {
    "name": "server",
    "entry": "ServerEngine",
    "runs_local_weights": False,
    "structured_output": True,
    "per_request_seed": True,
    "help": "An OpenAI-compatible server (vllm serve, SGLang, TGI, hosted APIs) at engine_options.base_url.",
}

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
