"""Train tiny Llama models on the arithmetic world by plain SFT, cached on disk by config hash.

Solvers (``task: solver``) learn to write worked traces; strength is set by size and training steps: a
strong generator, a weak generator and the SFT policy to be aligned are three :class:`TinyModelSpec` values.
A judge (``task: judge``) learns from the rows of the ``judge_rows`` function its caller passes in: the
``tiny_world`` task's, which asks the rubric's prompts about traces and answers them with the step verifier's
scores, so that the world, the lowest layer, knows nothing of judging. It is an LLM judge that the real
LLM-judge machinery (prompts, structured output, parsing, quality figures) runs on. Training is deterministic
from the seed, streams fresh data every step (no epochs, no overfitting), and saves a standard
``save_pretrained`` directory that transformers, TRL and vLLM load like any hub model.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from prefopt.cache import atomic_output_dir, default_cache_dir, is_complete
from prefopt.world.specs import HEAD_DIM, WORLD_VERSION, TinyModelSpec
from prefopt.world.tasks import sample_problems
from prefopt.world.tokenizer import build_tokenizer

logger = logging.getLogger(__name__)

JudgeRows = Callable[[list[dict], random.Random], list[dict]]
"""``judge_rows(problems, rng) -> rows``: a judge's SFT rows ``{"problem", "solution"}`` for one step's sampled
problems, drawing its traces from ``rng`` (the same generator every step, so the data is the seed's)."""


def _require_judge_rows(spec: TinyModelSpec, judge_rows: JudgeRows | None) -> None:
    if spec.task == "judge" and judge_rows is None:
        raise ValueError(
            f"the tiny judge {spec.cache_key()} (task: judge) needs judge_rows=, the function that makes its "
            "training rows; the tiny_world task passes its own (build it as world:<name> through that task)"
        )


def llama_config(spec: TinyModelSpec, vocab_size: int, tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=4 * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.hidden_size // HEAD_DIM,
        num_key_value_heads=spec.hidden_size // HEAD_DIM,
        head_dim=HEAD_DIM,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def sft_batch(tokenizer, rows: list[dict]) -> dict[str, torch.Tensor]:
    """Tokenise ``prompt + solution + eos`` with the loss on the solution tokens only."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["problem"]}], tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]
    texts = [p + r["solution"] + tokenizer.eos_token for p, r in zip(prompts, rows)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    pad_lengths = (enc["attention_mask"] == 0).sum(dim=1)
    for i, prompt in enumerate(prompts):  # left padding: the prompt starts after the pads
        start = int(pad_lengths[i])
        labels[i, start : start + len(prompt)] = -100  # one token per character
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def train_tiny_model(
    spec: TinyModelSpec, output_dir: Path, desc: str = "tiny model", judge_rows: JudgeRows | None = None
) -> None:
    """Train ``spec`` into ``output_dir``; a judge's rows come from ``judge_rows`` (required for ``task: judge``)."""
    _require_judge_rows(spec, judge_rows)
    torch.manual_seed(spec.seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(llama_config(spec, len(tokenizer), tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.learning_rate, total_steps=spec.train_steps, pct_start=0.1
    )
    data_seed = random.Random(spec.seed).randrange(2**31)
    trace_rng = random.Random(data_seed)
    model.train()
    progress = tqdm(range(spec.train_steps), desc=f"SFT {desc}", unit="step")
    for step in progress:
        rows = sample_problems(spec.batch_size, spec.train_difficulty, seed=data_seed + step)
        if spec.task == "judge":
            rows = judge_rows(rows, trace_rng)
        loss = model(**sft_batch(tokenizer, rows)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == spec.train_steps - 1:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


def build_tiny_model(
    spec: TinyModelSpec,
    cache_dir: str | Path | None = None,
    desc: str = "tiny model",
    judge_rows: JudgeRows | None = None,
) -> Path:
    """Return the directory of the model for ``spec``, training it first unless it is cached; a judge that is not
    cached needs ``judge_rows`` (see :func:`train_tiny_model`)."""
    path = Path(cache_dir or default_cache_dir()) / "models" / spec.cache_key()
    if is_complete(path):
        logger.info("Using cached %s at %s", desc, path)
        return path
    _require_judge_rows(spec, judge_rows)
    logger.info(
        "Training %s (%s, %d layers, hidden %d, %d steps) into %s",
        desc,
        spec.task,
        spec.num_layers,
        spec.hidden_size,
        spec.train_steps,
        path,
    )
    with atomic_output_dir(path, {"spec": dataclasses.asdict(spec), "world_version": WORLD_VERSION}) as tmp:
        train_tiny_model(spec, tmp, desc, judge_rows)
    return path
