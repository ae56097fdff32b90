"""Where things lie inside a run's output directory: names only, no I/O beyond paths (a leaf module)."""

from __future__ import annotations

from pathlib import Path

FINAL_MODEL_DIR = "model"  # the trained policy inside the train stage's directory
STAGES = ("generate", "judge", "pairs", "proxy", "train", "eval")


def stage_dir(root: str | Path, stage: str, key: str) -> Path:
    """``<root>/<stage>/<key>``: one stage's output for one key."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {list(STAGES)}")
    return Path(root) / stage / key
