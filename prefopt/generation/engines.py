"""Generation engines: one interface, implemented by transformers' ``generate`` (and by vLLM later).

An engine takes user messages, renders them with the model's chat template, and returns ``n``
completions per prompt. Seeds are per call, so the same prompts, parameters and seed give the same text.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"


class GenerationEngine(Protocol):
    """What the generate and eval stages need from an engine."""

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """``n`` completions for each user message in ``prompts``."""

    def close(self) -> None:
        """Release the model's memory."""


def render_prompts(tokenizer, prompts: list[str]) -> list[str]:
    """User messages rendered through the chat template, ready for the assistant's turn."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


class TransformersEngine:
    """``model.generate`` on batches of left-padded prompts; the portable fallback engine."""

    def __init__(self, model_path: str, dtype: torch.dtype = torch.float32, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        texts = render_prompts(self.tokenizer, prompts)
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
        )
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        eos = self.tokenizer.eos_token_id
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            group = []
            for row in new_tokens[i * params.n:(i + 1) * params.n]:
                ids = row.tolist()
                finished = eos in ids
                ids = ids[: ids.index(eos)] if finished else ids
                ids = [t for t in ids if t != self.tokenizer.pad_token_id]
                group.append(Completion(self.tokenizer.decode(ids, skip_special_tokens=True),
                                        "stop" if finished else "length"))
            results.append(group)
        return results

    def close(self) -> None:
        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_engine(kind: str, model_path: str) -> GenerationEngine:
    if kind == "transformers":
        return TransformersEngine(model_path)
    raise ValueError(f"unknown engine {kind!r}; available: ['transformers']")
