"""Checkpoints that are complete or absent: a run killed mid-save resumes from the newest complete checkpoint.

The Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG, trainer state), so a kill
during a save leaves a directory that looks like a checkpoint and is not one; ``get_last_checkpoint`` would resume
from it and fail, or worse, resume from half of it. :class:`MarkCompleteCheckpoints` writes a marker into each
checkpoint once the Trainer has saved it entirely (``on_save`` runs after the save and after old checkpoints are
rotated out); :func:`resume_checkpoint` takes the newest marked checkpoint and removes unmarked ones, each with a
warning line.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "prefopt_checkpoint_complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class MarkCompleteCheckpoints(TrainerCallback):
    """Marks ``checkpoint-<step>/`` complete when the Trainer has finished saving it (main process only)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / COMPLETE_MARKER).write_text(f"{state.global_step}\n")
        return control


def resume_checkpoint(output_dir: str | Path, remove_torn: bool = True) -> str | None:
    """The newest complete checkpoint in ``output_dir`` (None: start from scratch). Checkpoints without the marker,
    torn by a kill during a save, are removed (``remove_torn``) so a later save to the same step starts clean."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(
        ((int(m[1]), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True
    )
    newest = None
    for step, path in found:
        if (path / COMPLETE_MARKER).is_file():
            newest = newest or str(path)
        elif newest is None or step > int(Path(newest).name.split("-")[1]):
            logger.warning(
                "%s was not saved completely (a kill during the save?); %s",
                path,
                "removing it" if remove_torn else "ignoring it",
            )
            if remove_torn:
                shutil.rmtree(path, ignore_errors=True)
    return newest
