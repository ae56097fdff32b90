"""A reward model as a judge: ``AutoModelForSequenceClassification`` scores (prompt, response).

Each candidate is rendered with the model's chat template (user prompt, assistant response), batched by
length, and scored by the model's outputs: one (a reward, named ``dimension``) or several (a multi-objective
model: each output head a dimension named in ``dimensions``, chosen or combined by the judging section's
``aggregate`` and ``weights``). Longer inputs than ``max_length`` lose their start, so the end of the response,
where the answer is, is always read. A NaN or infinite output is a recorded failure
(``not_finite: <dimension>=nan``), never a score.

Batches of ``batch_size`` go to every visible GPU, one replica of the model on each, in turn (CPU: one); each
candidate's scores do not depend on the batch it shared. ``close()`` releases every replica.
"""

from __future__ import annotations

import copy
import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from prefopt.engines.base import release_memory
from prefopt.judging.base import JudgeItem, Judgment
from prefopt.judging.config import JudgingConfig, RewardModelConfig

if TYPE_CHECKING:
    from prefopt.judging.registry import ModelPath

JUDGE = {
    "name": "reward_model",
    "is_model": True,
    "config_section": "reward_model",
    "help": "A sequence-classification reward model (judging.reward_model).",
}


def scoring_devices(device: str | list[str] | None = None) -> list[str]:
    """``device`` (one, or a list: a replica on each) if given, else every visible CUDA device (``cuda:i``), else the
    CPU."""
    if device is not None:
        return [device] if isinstance(device, str) else list(device)
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]


class RewardModelJudge:
    def __init__(self, model_path: str, cfg: RewardModelConfig, device: str | list[str] | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg, self.name = cfg, f"reward_model({cfg.model})"
        self.batch_size = cfg.batch_size
        self.devices = scoring_devices(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.devices[0].startswith("cuda") else torch.float32
        model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=dtype).eval()
        self.dimensions = cfg.head_names(model.config.num_labels, model_path)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        # replicas copied on the CPU, so that no device holds two at once
        self.models = [copy.deepcopy(model).to(d) for d in self.devices[1:]] + [model.to(self.devices[0])]
        self.models.insert(0, self.models.pop())

    def text(self, item: JudgeItem) -> str:
        prompt = [dict(m) for m in item.messages] if item.messages else [{"role": "user", "content": item.prompt}]
        if self.tokenizer.chat_template:  # the whole conversation, system turn included, then the reply
            messages = prompt + [{"role": "assistant", "content": item.completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{item.context}\n{item.completion}"

    def _encode(self, texts: list[str]):
        return self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            add_special_tokens=False,
        )

    @torch.inference_mode()
    def _forward(self, replica: int, enc) -> list[list[float]]:
        return self.models[replica](**enc.to(self.devices[replica])).logits.float().cpu().tolist()

    def rewards(self, items: list[JudgeItem]) -> list[list[float]]:
        """Every item's outputs (one per dimension), in order."""
        texts = [self.text(item) for item in items]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        # tokenised here, in one thread: a fast tokenizer called from several threads at once can fail
        encoded = [self._encode([texts[i] for i in batch]) for batch in batches]
        rewards: list[list[float]] = [[] for _ in texts]
        progress = tqdm(total=len(batches), desc="reward model", unit="batch", disable=len(batches) <= 1)

        def run(replica: int) -> None:  # this replica's share of the batches: every len(devices)-th one
            for k in range(replica, len(batches), len(self.devices)):
                for i, values in zip(batches[k], self._forward(replica, encoded[k])):
                    rewards[i] = values
                progress.update()

        with progress:
            if len(self.devices) == 1:
                run(0)
            else:  # one thread per device: the forward passes release the GIL
                with ThreadPoolExecutor(len(self.devices)) as pool:
                    list(pool.map(run, range(len(self.devices))))
        return rewards

    def score(self, items: list[JudgeItem]) -> list[Judgment]:
        """One judgment per item; a NaN or infinite output is a failure of its dimension, not a score."""
        judgments = []
        for values in self.rewards(items):
            scores = dict(zip(self.dimensions, values))
            bad = [f"{d}={v}" for d, v in scores.items() if not math.isfinite(v)]
            raw = json.dumps(scores)
            judgments.append(
                Judgment(None, raw, f"not_finite: {', '.join(bad)}") if bad else Judgment(scores, raw, "ok")
            )
        return judgments

    def close(self) -> None:
        """Release every replica's memory (the judge cannot score afterwards)."""
        self.models.clear()
        release_memory()


def make(cfg: JudgingConfig, model_path: ModelPath) -> RewardModelJudge:
    return RewardModelJudge(model_path(cfg.reward_model.model), cfg.reward_model)
