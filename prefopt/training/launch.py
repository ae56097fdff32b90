"""The train stage: write a TRL-style config and run :mod:`prefopt.training.dpo` (or ``.kto``) under
``accelerate launch``.

The flat config carries the recipe's ``training.trl`` (PrefDPOConfig / PrefKTOConfig fields), its
``training.model_args`` (``trl.ModelConfig`` fields, at the top level as ``trl dpo`` takes them) and its
``chat_template`` (the template text). :func:`check_model_setup` checks the model block on this machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from pathlib import Path

import torch
import yaml

import prefopt
from prefopt.cache import atomic_write
from prefopt.errors import ConfigError
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.processes import run_child
from prefopt.training.config import TrainingConfig
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


def write_train_config(cfg: TrainingConfig, pairs_path: Path, model_path: str, output_dir: Path) -> Path:
    template = {} if cfg.chat_template is None else {"chat_template": cfg.chat_template}
    config = {
        **trl_defaults(),
        **cfg.trl,
        **cfg.model_args,
        **template,
        "pairs_path": str(pairs_path),
        "model_name_or_path": model_path,
        "output_dir": str(output_dir),
    }
    if cfg.method == "dpo":
        config["gap_column"] = cfg.gap_column
    text = yaml.safe_dump(config, sort_keys=True)  # several ranks may write it at once: atomically
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
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(resolve_accelerate_config(cfg.accelerate_config)),
        "-m",
        f"prefopt.training.{cfg.method}",
        "--config",
        str(train_config),
    ]
    logger.info("Launching: %s", " ".join(command))
    returncode = run_child(command)  # its own process group: a kill of prefopt stops every rank too
    if returncode != 0:
        raise RuntimeError(
            f"training failed (exit {returncode}); its config is {train_config}. "
            "Rerun `prefopt run` to resume from the last checkpoint, if any was saved."
        )
    return output_dir / FINAL_MODEL_DIR
