"""A reward model as a judge: ``AutoModelForSequenceClassification`` with one label scores (prompt, response).

Each candidate is rendered with the model's chat template (user prompt, assistant response), batched by
length, and scored by the single logit. Longer inputs than ``max_length`` lose their start, so the end of
the response, where the answer is, is always read. A NaN or infinite reward is a recorded failure
(``not_finite: <dimension>=nan``), never a score.
"""

from __future__ import annotations

import json
import math

import torch
from tqdm.auto import tqdm

from prefopt.generation.engines import release_memory
from prefopt.judging.base import JudgeItem, Judgment
from prefopt.judging.config import RewardModelConfig


class RewardModelJudge:
    def __init__(self, model_path: str, cfg: RewardModelConfig, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg, self.name, self.dimensions = cfg, f"reward_model({cfg.model})", (cfg.dimension,)
        self.batch_size = cfg.batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_path}: a reward model has one label; this one has {self.model.config.num_labels}")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def text(self, item: JudgeItem) -> str:
        messages = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.completion}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{item.prompt}\n{item.completion}"

    @torch.inference_mode()
    def rewards(self, items: list[JudgeItem]) -> list[float]:
        texts = [self.text(item) for item in items]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        rewards = [0.0] * len(texts)
        for start in tqdm(
            range(0, len(order), self.cfg.batch_size),
            desc="reward model",
            unit="batch",
            disable=len(order) <= self.cfg.batch_size,
        ):
            batch = order[start : start + self.cfg.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.cfg.max_length,
                add_special_tokens=False,
            ).to(self.device)
            logits = self.model(**enc).logits[:, 0].float().tolist()
            for i, value in zip(batch, logits):
                rewards[i] = value
        return rewards

    def score(self, items: list[JudgeItem]) -> list[Judgment]:
        """One judgment per item; a NaN or infinite reward is a failure of the dimension, not a score."""
        dim = self.cfg.dimension
        return [
            Judgment({dim: r}, json.dumps({dim: r}), "ok")
            if math.isfinite(r)
            else Judgment(None, json.dumps({dim: r}), f"not_finite: {dim}={r}")
            for r in self.rewards(items)
        ]

    def close(self) -> None:
        del self.model
        release_memory()
