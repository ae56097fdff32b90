"""Checkpoints that are complete or absent: a run killed mid-save resumes from the newest complete checkpoint.

The Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG, trainer state), so a kill
during a save leaves a directory that looks like a checkpoint and is not one; ``get_last_checkpoint`` would resume
from it and fail, or worse, resume from half of it. :class:`MarkCompleteCheckpoints` writes a marker into each
checkpoint once the Trainer has saved it entirely (``on_save`` runs after the save and after old checkpoints are
rotated out): the files are flushed to disk first, and the marker records each file's size. :func:`resume_checkpoint`
takes the newest checkpoint that is marked and whose files are all there with their recorded sizes, and removes
newer unmarked or damaged ones, each with a warning line.

A kill after the last step's checkpoint and before the final model is saved leaves a complete checkpoint at
``max_steps``. The Trainer resumed from it takes one step before it checks ``max_steps`` whenever ``max_steps`` is
not a whole number of epochs, so the run would end one step past the uninterrupted one (with an extra checkpoint).
Resuming from the checkpoint before it retrains that last interval instead and ends exactly where an uninterrupted
run ends.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from prefopt.cache import atomic_write, fsync_tree

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "prefopt_checkpoint_complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class MarkCompleteCheckpoints(TrainerCallback):
    """Marks ``checkpoint-<step>/`` complete when the Trainer has finished saving it (main process only)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            mark_checkpoint(folder, state.global_step)
        return control


def mark_checkpoint(folder: Path, step: int) -> None:
    """Flush the checkpoint's files to disk, then write its marker (atomically) with every file's size."""
    fsync_tree(folder)
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}
    files.pop(COMPLETE_MARKER, None)
    text = json.dumps({"step": step, "files": files}, indent=1, sort_keys=True)
    atomic_write(folder / COMPLETE_MARKER, lambda tmp: tmp.write_text(text))


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None: it is): no marker, or a recorded file missing or of
    another size (a marker written by an older prefopt records no files and is trusted)."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return "not saved completely (a kill during the save?)"
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return "its completion marker is unreadable"
    for name, size in (recorded.get("files", {}) if isinstance(recorded, dict) else {}).items():
        file = folder / name
        if not file.is_file():
            return f"damaged ({name} is missing)"
        if file.stat().st_size != size:
            return f"damaged ({name}: {file.stat().st_size} bytes, {size} recorded)"
    return None


def finished_training(folder: Path, max_steps: int) -> bool:
    """Whether the checkpoint in ``folder`` was saved at (or past) ``max_steps`` (none when ``max_steps`` <= 0: the
    run ends with its epochs, where the Trainer resumed at the end takes no further step)."""
    try:
        return (
            max_steps > 0 and int(json.loads((folder / "trainer_state.json").read_text())["global_step"]) >= max_steps
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def resume_checkpoint(output_dir: str | Path, remove_torn: bool = True, max_steps: int = -1) -> str | None:
    """The newest complete checkpoint in ``output_dir`` before step ``max_steps`` (None: start from scratch).
    Checkpoints without the marker, torn by a kill during a save, are removed (``remove_torn``) so a later save to
    the same step starts clean; so is a checkpoint at the last step, which the resumed run saves again."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(
        ((int(m[1]), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True
    )
    for _step, path in found:
        problem = checkpoint_problem(path)
        if problem is None and not finished_training(path, max_steps):
            return str(path)  # older ones are left as they are
        if problem is None:
            problem = f"saved at max_steps ({max_steps}), but the final model was not (the Trainer would step past it)"
        logger.warning("%s was %s; %s", path, problem, "removing it" if remove_torn else "ignoring it")
        if remove_torn:
            shutil.rmtree(path, ignore_errors=True)
    return None
