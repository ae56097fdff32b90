"""A stage as one unit: its key from config and inputs, its run from an input to an output directory, and the
column set it writes; :func:`execute` runs any of them (a leaf module: no stage code, no torch).

Each stage package holds its unit in ``stage.py`` (``prefopt/generation/stage.py``, ...), importing its heavy code
inside ``run``; :mod:`prefopt.stage_keys` orders the units and :class:`~prefopt.pipeline.Pipeline` resolves their
inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import prefopt
from prefopt.cache import atomic_output_dir, content_hash, is_complete, mark_complete

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOutcome:
    name: str
    path: Path
    status: str  # "ran" or "cached"


class StageContext(Protocol):
    """What a stage may ask of the run it is part of."""

    recipe: Any
    outcomes: list[StageOutcome]  # what ran or was found complete, in order

    def model_path(self, ref: str, build: bool = True) -> str: ...
    def model_key(self, ref: str) -> str: ...
    def settings(self, name: str) -> Any: ...
    def fingerprint(self, path: str | Path) -> str: ...
    def once(self, key: object, compute: Callable[[], str]) -> str: ...


@dataclass(frozen=True)
class Stage:
    """One stage. Its instance fields are the arguments of one call (a shard, the evaluated model's role)."""

    name: ClassVar[str]
    version: ClassVar[int]  # bump when what the stage writes changes for the same config: cached outputs are redone
    reads: ClassVar[str | None] = None  # the stage whose output it reads by default
    given_as: ClassVar[str | None] = None  # the stage whose --input it reads, when not its own name (proxy: pairs)
    schema: ClassVar[str | None] = None  # the column set of its output dataset in prefopt.schemas (None: no dataset)
    resumable: ClassVar[bool] = False  # works in its output directory, keeping partial progress for a rerun
    makes_training_data: ClassVar[bool] = False  # on the way to the pairs: not run when training.dataset is set

    def used(self, recipe: Any) -> bool:
        """Whether ``recipe`` runs this stage: one that makes the training data does not when training reads the
        recipe's own ``training.dataset``."""
        return not (self.makes_training_data and recipe.training.dataset is not None)

    def config(self, ctx: StageContext) -> Any:
        """Its section of the recipe."""
        raise NotImplementedError

    def output_schema(self, recipe: Any) -> str | None:
        """The column set of its output dataset for ``recipe`` (:attr:`schema` unless the recipe decides it)."""
        return self.schema

    def dataset(self, ctx: StageContext) -> Any:
        """Data the recipe names for this stage instead of the output of ``reads`` (a ``DatasetSpec``), or None."""
        return None

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        """The identity of its config, models and files, with ``upstream`` (the identity of what it reads)."""
        raise NotImplementedError

    def key(self, ctx: StageContext, upstream: str | None) -> str:
        return content_hash(self.name, prefopt.__version__, self.version, *self.key_parts(ctx, upstream))

    def manifest(self, ctx: StageContext, source: Any) -> dict:
        """What its finished output's manifest records besides the stage name."""
        return {"config": self.config(ctx), "input": source}

    def run(self, ctx: StageContext, source: Any, out: Path) -> bool:
        """Write the output of ``source`` into ``out``; True when it is complete (False: other workers still have
        their part to do)."""
        raise NotImplementedError


def execute(stage: Stage, ctx: StageContext, source: Any, out: Path, label: str | None = None) -> Path:
    """Run ``stage`` into ``out`` unless it is complete there, recording the outcome under ``label``. A resumable
    stage works in ``out`` and is marked complete when its run says so; any other writes a temporary directory that
    is renamed into place when complete."""
    name = label or stage.name
    if is_complete(out):
        logger.info("[%s] skipped: %s is complete for this configuration", name, out)
        ctx.outcomes.append(StageOutcome(name, out, "cached"))
        return out
    logger.info("[%s] writing %s", name, out)
    manifest = {"stage": name, **stage.manifest(ctx, source)}
    if not stage.resumable:
        with atomic_output_dir(out, manifest) as tmp:
            stage.run(ctx, source, tmp)
        ctx.outcomes.append(StageOutcome(name, out, "ran"))
        return out
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        finished = stage.run(ctx, source, out)
    except BaseException:
        if created and not any(out.iterdir()):  # failed before writing anything: leave no empty output
            out.rmdir()
        raise
    if finished:
        mark_complete(out, manifest)
        ctx.outcomes.append(StageOutcome(name, out, "ran"))
    return out
