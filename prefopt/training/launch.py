"""The train stage: write a TRL-style config and run :mod:`prefopt.training.dpo` (or ``.kto``) under
``accelerate launch``.

The flat config carries the recipe's ``training.trl`` (PrefDPOConfig / PrefKTOConfig fields), its
``training.model_args`` (``trl.ModelConfig`` fields, at the top level as ``trl dpo`` takes them) and its
``chat_template`` (the template text). :func:`check_model_setup` checks the model block on this machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml

import prefopt
from prefopt.cache import atomic_write
from prefopt.errors import ConfigError
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.processes import ChildFailed, run_child
from prefopt.training.config import TrainingBudget, TrainingConfig
from prefopt.training.trl_fields import check_model_args

logger = logging.getLogger(__name__)

REPO_ROOT = Path(prefopt.__file__).resolve().parents[1]

# Defaults that differ from TRL's: TRL turns bf16 and gradient checkpointing on, which fail or only slow
# down on a CPU and on tiny models. A recipe's `training.trl` overrides them.
CPU_DEFAULTS = {"bf16": False, "gradient_checkpointing": False}
DEFAULTS = {"report_to": "none", "save_strategy": "no", "logging_steps": 1}


def resolve_accelerate_config(path: str) -> Path:
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"training.accelerate_config: {path} not found (looked in . and {REPO_ROOT})")


def _env_int(env: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = env.get(name, "").split("(")[0]  # SLURM_GPUS_ON_NODE can read "4(x2)" on some versions
        if value.strip().isdigit():
            return int(value)
    return None


def _first_slurm_host(nodelist: str) -> str | None:
    try:
        done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    hosts = done.stdout.split()
    return hosts[0] if done.returncode == 0 and hosts else None


def launch_flags(config_path: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """``accelerate launch`` flags for the processes of a multi-process config (none for a one-process one).

    The shipped multi-process configs name no process count (accelerate's own convention for clusters): it is
    machines x GPUs per machine, from Slurm (``SLURM_NNODES``, ``SLURM_GPUS_ON_NODE``, ``SLURM_NODEID``, the first
    host of ``SLURM_JOB_NODELIST``) or a launcher's ``NNODES``, ``GPUS_PER_NODE``, ``NODE_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``, else this machine's visible GPUs. A config that sets ``num_processes`` keeps it.
    """
    env = os.environ if env is None else env
    config = yaml.safe_load(config_path.read_text()) or {}
    if str(config.get("distributed_type", "NO")).upper() == "NO" or config.get("use_cpu"):
        return []
    machines = _env_int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES", "NNODES") or int(config.get("num_machines", 1))
    rank = _env_int(env, "SLURM_NODEID", "NODE_RANK")
    rank = int(config.get("machine_rank", 0)) if rank is None else rank
    per_machine = _env_int(env, "SLURM_GPUS_ON_NODE", "GPUS_PER_NODE")
    if per_machine is None:
        per_machine = torch.cuda.device_count() if torch.cuda.is_available() else 0
    processes = int(config.get("num_processes", -1))
    if processes < 1:
        processes = machines * per_machine
    if processes < 1:
        raise ConfigError(
            f"training.accelerate_config: {config_path.name} starts one process per GPU, and no GPU is visible "
            "(set GPUS_PER_NODE, pass --num_processes to accelerate launch, or use accelerate_configs/cpu.yaml)"
        )
    flags = ["--num_processes", str(processes), "--num_machines", str(machines), "--machine_rank", str(rank)]
    if machines > 1:
        address = env.get("MASTER_ADDR") or config.get("main_process_ip")
        if not address and env.get("SLURM_JOB_NODELIST"):
            address = _first_slurm_host(env["SLURM_JOB_NODELIST"])
        if not address:
            raise ConfigError(
                f"training.accelerate_config: {machines} machines need the main machine's address (set MASTER_ADDR)"
            )
        port = _env_int(env, "MASTER_PORT") or int(config.get("main_process_port") or 29500)
        flags += ["--main_process_ip", address, "--main_process_port", str(port)]
    return flags


def trl_defaults() -> dict:
    return {**DEFAULTS, **({} if torch.cuda.is_available() else CPU_DEFAULTS)}


def default_dtype() -> str:
    """The policy's weights when the recipe sets no dtype: bfloat16 on a CUDA GPU that has it, else float32."""
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def model_fields() -> dict[str, dataclasses.Field]:
    """``trl.ModelConfig``'s fields but model_name_or_path (the train config names the policy itself)."""
    from trl import ModelConfig

    return {f.name: f for f in dataclasses.fields(ModelConfig) if f.name != "model_name_or_path"}


def checked_model_args(model_args: dict, where: str) -> dict:
    """``trl.ModelConfig`` fields checked as TRL will use them: names, types and choices (see
    :func:`prefopt.training.trl_fields.check_model_args`), then :func:`check_model_setup`."""
    checked = check_model_args(model_args, where)
    check_model_setup(checked, where)
    return checked


def check_model_setup(checked: dict, where: str) -> None:
    """What needs transformers, TRL or this machine: the attention implementation, a CUDA GPU for flash
    attention and quantized loading, and the LoRA config as ``trl.get_peft_config`` builds it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from trl import ModelConfig, get_peft_config

    attn = checked.get("attn_implementation")
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.keys()]
    if attn is not None and attn not in known and "/" not in attn:  # "org/repo": a kernel from the Hub
        close = difflib.get_close_matches(attn, known, n=1)
        raise ConfigError(
            f"{where}.attn_implementation: unknown attention {attn!r} ("
            f"{f'did you mean {close[0]!r}? ' if close else ''}expected one of {known} or a Hub kernel)"
        )
    if attn is not None and attn.startswith("flash_attention") and not torch.cuda.is_available():
        raise ConfigError(
            f"{where}.attn_implementation: {attn} needs a CUDA GPU; this machine has none (use sdpa or eager)"
        )
    quantized = [k for k in ("load_in_4bit", "load_in_8bit") if checked.get(k)]
    if quantized and not torch.cuda.is_available():
        raise ConfigError(
            f"{where}.{quantized[0]}: quantized loading (bitsandbytes) needs a CUDA GPU; this "
            "machine has none (given true, expected false)"
        )
    try:
        get_peft_config(ModelConfig(**checked))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {' '.join(str(err).split())}") from None


TRAINING_PLAN = "training_plan.json"  # in the train stage: examples, tokens per example, batch, max_steps


def effective_batch_size(trl: dict, processes: int) -> int:
    """Examples per optimizer step: per-device batch (TRL's default 8) x gradient accumulation x processes."""
    return int(trl.get("per_device_train_batch_size", 8)) * int(trl.get("gradient_accumulation_steps", 1)) * processes


def budget_steps(budget: TrainingBudget, example_tokens: list[int], effective_batch: int) -> int:
    """TRL's ``max_steps`` for ``budget``: its steps, or its tokens over what one optimizer step processes
    (``effective_batch`` examples of the data's mean tokens), rounded up."""
    if budget.steps is not None:
        return budget.steps
    if not example_tokens or sum(example_tokens) == 0:
        raise ConfigError("training.budget.tokens: the training data has no tokens to count")
    per_step = effective_batch * sum(example_tokens) / len(example_tokens)
    return max(1, math.ceil(budget.tokens / per_step - 1e-9))


def _sequence_tokens(tokenizer, prompt, completion, max_length: int | None) -> int:
    """Tokens of one prompt + completion as the trainer sees it (a conversation through the chat template),
    truncated at ``max_length``."""
    if isinstance(completion, list):
        text = tokenizer.apply_chat_template(list(prompt or []) + list(completion), tokenize=False)
    else:
        text = (prompt or "") + completion
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return min(n, max_length) if max_length else n


def example_tokens(cfg: TrainingConfig, pairs_path: Path, tokenizer) -> list[int]:
    """Tokens of every training example's forward passes: a pair's prompt + chosen and prompt + rejected, a KTO
    example's prompt + completion (TRL's max_length, default 1024, caps each sequence)."""
    from prefopt.training.data import load_training_data, trl_examples, trl_pairs
    from prefopt.user_data import DatasetSpec

    data = load_training_data(DatasetSpec(str(pairs_path)), cfg.method, cfg.gap_column)
    limit = cfg.trl.get("max_length", 1024)
    if cfg.method == "dpo":
        rows = trl_pairs(data, cfg.gap_column)
        prompts = rows["prompt"] if "prompt" in rows.column_names else [None] * len(rows)
        return [
            _sequence_tokens(tokenizer, p, c, limit) + _sequence_tokens(tokenizer, p, r, limit)
            for p, c, r in zip(prompts, rows["chosen"], rows["rejected"])
        ]
    rows = trl_examples(data)
    return [_sequence_tokens(tokenizer, p, c, limit) for p, c in zip(rows["prompt"], rows["completion"])]


def training_plan(cfg: TrainingConfig, pairs_path: Path, model_path: str) -> dict:
    """What the train stage will do, for the tables and for ``training.budget``: examples, their mean tokens, the
    effective batch size and, with a budget, the ``max_steps`` it gives."""
    from prefopt.training.entry import load_policy_tokenizer

    tokenizer = load_policy_tokenizer(
        model_path,
        cfg.chat_template,
        "training.chat_template",
        revision=cfg.model_args.get("model_revision", "main"),
        trust_remote_code=cfg.trl.get("trust_remote_code", False),
    )
    tokens = example_tokens(cfg, pairs_path, tokenizer)
    flags = launch_flags(resolve_accelerate_config(cfg.accelerate_config))
    processes = int(flags[flags.index("--num_processes") + 1]) if "--num_processes" in flags else 1
    batch = effective_batch_size(cfg.trl, processes)
    plan = {
        "examples": len(tokens),
        "mean_tokens_per_example": sum(tokens) / len(tokens) if tokens else 0.0,
        "effective_batch_size": batch,
        "processes": processes,
        "budget": None if cfg.budget is None else dataclasses.asdict(cfg.budget),
    }
    if cfg.budget is not None:
        plan["max_steps"] = budget_steps(cfg.budget, tokens, batch)
    return plan


def write_train_config(cfg: TrainingConfig, pairs_path: Path, model_path: str, output_dir: Path) -> Path:
    template = {} if cfg.chat_template is None else {"chat_template": cfg.chat_template}
    plan = training_plan(cfg, pairs_path, model_path)
    budget = {"max_steps": plan["max_steps"]} if "max_steps" in plan else {}
    config = {
        **trl_defaults(),
        **cfg.trl,
        **cfg.model_args,
        **template,
        **budget,
        "pairs_path": str(pairs_path),
        "model_name_or_path": model_path,
        "output_dir": str(output_dir),
    }
    if cfg.method == "dpo":
        config["gap_column"] = cfg.gap_column
    text = yaml.safe_dump(config, sort_keys=True)  # several ranks may write it at once: atomically
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(output_dir / TRAINING_PLAN, lambda tmp: tmp.write_text(json.dumps(plan, indent=2)))
    return atomic_write(output_dir / "train_config.yaml", lambda tmp: tmp.write_text(text))


def launch_training(cfg: TrainingConfig, pairs_path: Path, model_path: str, output_dir: Path) -> Path:
    """Train and return the directory of the aligned model; raises if the training process fails."""
    from prefopt.training.entry import load_policy_tokenizer

    load_policy_tokenizer(
        model_path,
        cfg.chat_template,
        "training.chat_template",  # checked before any rank starts
        revision=cfg.model_args.get("model_revision", "main"),
        trust_remote_code=cfg.trl.get("trust_remote_code", False),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    train_config = write_train_config(cfg, pairs_path, model_path, output_dir)
    accelerate_config = resolve_accelerate_config(cfg.accelerate_config)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        *launch_flags(accelerate_config),
        "-m",
        f"prefopt.training.{cfg.method}",
        "--config",
        str(train_config),
    ]
    logger.info("Launching: %s", " ".join(command))
    returncode = run_child(command)  # its own process group: a kill of prefopt stops every rank too
    if returncode != 0:
        raise ChildFailed(
            f"training failed (exit {returncode}); its config is {train_config}. "
            "Rerun `prefopt run` to resume from the last checkpoint, if any was saved."
        )
    return output_dir / FINAL_MODEL_DIR
