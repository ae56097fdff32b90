"""transformers' ``generate`` on the local model: the portable fallback engine (free text only)."""

from __future__ import annotations

import logging

import torch

from prefopt.engines.base import (
    Completion,
    SamplingParams,
    cut_at_stop,
    default_torch_dtype,
    load_chat_tokenizer,
    release_memory,
    render_prompts,
)

logger = logging.getLogger(__name__)

ENGINE = {
    "name": "transformers",
    "entry": "TransformersEngine",
    "help": "transformers' generate on the local model, batched; free text only.",
}


class TransformersEngine:
    """``model.generate`` on batches of left-padded prompts; the portable fallback engine. A LoRA adapter directory
    loads through peft over its base model."""

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
