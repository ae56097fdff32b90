"""The train stage: write a TRL-style config and run :mod:`prefopt.training.dpo` (or ``.kto``) under
``accelerate launch``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import torch
import yaml

import prefopt
from prefopt.cache import atomic_write
from prefopt.configs import ConfigError, TrainingConfig
from prefopt.layout import FINAL_MODEL_DIR

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


def write_train_config(cfg: TrainingConfig, pairs_path: Path, model_path: str, output_dir: Path) -> Path:
    config = {**trl_defaults(), **cfg.trl, "pairs_path": str(pairs_path), "model_name_or_path": model_path,
              "output_dir": str(output_dir)}
    if cfg.method == "dpo":
        config["gap_column"] = cfg.gap_column
    text = yaml.safe_dump(config, sort_keys=True)  # several ranks may write it at once: atomically
    return atomic_write(output_dir / "train_config.yaml", lambda tmp: tmp.write_text(text))


def launch_training(cfg: TrainingConfig, pairs_path: Path, model_path: str, output_dir: Path) -> Path:
    """Train and return the directory of the aligned model; raises if the training process fails."""
    output_dir.mkdir(parents=True, exist_ok=True)
    train_config = write_train_config(cfg, pairs_path, model_path, output_dir)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(resolve_accelerate_config(cfg.accelerate_config)),
        "-m", f"prefopt.training.{cfg.method}", "--config", str(train_config),
    ]
    logger.info("Launching: %s", " ".join(command))
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training failed (exit {result.returncode}); its config is {train_config}. "
                           "Rerun `prefopt run` to resume from the last checkpoint, if any was saved.")
    return output_dir / FINAL_MODEL_DIR
