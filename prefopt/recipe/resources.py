"""The recipe's ``resources:`` section: what each stage's Slurm job asks for (:mod:`prefopt.slurm` renders it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prefopt.config_base import described

# A value written into an #SBATCH line as it is (sbatch reads those lines without a shell): one plain word.
_SBATCH_WORD = re.compile(r"[\w.:,=+%/@-]+")
_SLURM_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+")
_SLURM_MEM = re.compile(r"\d+[KMGT]?")


def _check_slurm(owner: Any) -> None:
    """The Slurm fields shared by the resources section and its stages: plain words, Slurm's formats."""
    if isinstance(owner.time, int) and not isinstance(owner.time, bool):
        raise ValueError(
            f'time: got the number {owner.time}: quote it (time: "12:00:00"); YAML reads 12:00:00 unquoted as seconds'
        )
    if owner.time is not None and (not isinstance(owner.time, str) or not _SLURM_TIME.fullmatch(owner.time)):
        raise ValueError(f"time: expected Slurm's minutes, MM:SS, HH:MM:SS or D-HH:MM:SS, got {owner.time!r}")
    if owner.mem is not None and not _SLURM_MEM.fullmatch(owner.mem):
        raise ValueError(f"mem: expected a size such as 200G or 64000M, got {owner.mem!r}")
    if owner.partition is not None and not _SBATCH_WORD.fullmatch(owner.partition):
        raise ValueError(f"partition: expected letters, digits and _ . , - only, got {owner.partition!r}")
    for name in ("gpus", "cpus_per_task"):
        value = getattr(owner, name)
        if value is not None and value < (0 if name == "gpus" else 1):
            raise ValueError(f"{name}: expected {'>= 0' if name == 'gpus' else '>= 1'}, got {value}")
    for arg in owner.sbatch_args:
        if not isinstance(arg, str) or not arg.startswith("-") or not _SBATCH_WORD.fullmatch(arg):
            raise ValueError(
                f"sbatch_args: each item is one option word such as --account=abc or --qos=high (no spaces, quotes "
                f"or $), got {arg!r}"
            )


@dataclass(frozen=True)
class StageResources:
    """What one stage's Slurm jobs ask for; a field left unset takes the resources section's own value."""

    gpus: int | None = described(
        "GPUs per task (per node for training). Unset: from the recipe: tensor_parallel_size x data_parallel_size "
        "of the engine for generation (per array task: tensor_parallel_size), the judge's engine (a reward model: "
        "1), for training and margin_bayes's proxy the accelerate config's num_processes (none given: 8, a whole "
        "node), 0 for CPU-only stages and tiny-world models.",
        default=None,
    )
    time: Any = described('Wall-clock limit, as Slurm takes it (quoted: "12:00:00", "2-00:00:00").', default=None)
    mem: str | None = described("Memory per node, e.g. 200G.", default=None)
    partition: str | None = described("Slurm partition.", default=None)
    cpus_per_task: int | None = described("CPU cores per task.", default=None)
    nodes: int | None = described("train only: nodes of the multi-node accelerate launch (default 1).", default=None)
    shards: int | None = described(
        "generate only: array tasks, each `prefopt generate --shard i --num-shards shards` (default 1). The count is "
        "written into the script, so any subset of the array can be resubmitted.",
        default=None,
    )
    sbatch_args: list[str] = described(
        "More sbatch options, one word each (--account=abc, --qos=high), after the section's own.",
        default_factory=list,
    )

    def __post_init__(self):
        _check_slurm(self)
        for name in ("nodes", "shards"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")


SLURM_STAGES = ("generate", "judge", "pairs", "train", "eval")


@dataclass(frozen=True)
class ResourcesConfig:
    """What the Slurm jobs of `prefopt run --slurm` and `prefopt sweep --slurm` ask for: defaults for every job,
    then per stage. Nothing here changes what a stage computes (no stage key hashes it)."""

    gpus: int | None = described("GPUs per job for every stage that sets none (unset: from the recipe).", default=None)
    time: Any = described('Wall-clock limit of every job (quoted: "24:00:00").', default=None)
    mem: str | None = described("Memory per node of every job, e.g. 200G.", default=None)
    partition: str | None = described("Slurm partition of every job.", default=None)
    cpus_per_task: int | None = described("CPU cores per task of every job.", default=None)
    sbatch_args: list[str] = described(
        "More sbatch options for every job, one word each (--account=abc).", default_factory=list
    )
    log_dir: str = described(
        "Where the jobs' logs go (relative: under the directory the scripts are written from); created on submit.",
        default="logs",
    )
    generate: StageResources = described("The generate array (and its merge job).", default_factory=StageResources)
    judge: StageResources = described("The judge job.", default_factory=StageResources)
    pairs: StageResources = described(
        "The pairs job (margin_bayes: with its proxy training).", default_factory=StageResources
    )
    train: StageResources = described("The (multi-node) training job.", default_factory=StageResources)
    eval: StageResources = described("The evaluation job.", default_factory=StageResources)

    def __post_init__(self):
        _check_slurm(self)
        if not self.log_dir or "\n" in self.log_dir:
            raise ValueError(f"log_dir: expected a directory, got {self.log_dir!r}")
        for stage in SLURM_STAGES:
            section = getattr(self, stage)
            if section.nodes is not None and stage != "train":
                raise ValueError(f"{stage}.nodes: only the train stage runs on several nodes")
            if section.shards is not None and stage != "generate":
                raise ValueError(f"{stage}.shards: only the generate stage is split into shards")

    def stage(self, name: str) -> dict[str, Any]:
        """One stage's request: its own values over the section's (``gpus`` None: the renderer derives it)."""
        own = getattr(self, name)
        merged = {
            key: getattr(own, key) if getattr(own, key) is not None else getattr(self, key)
            for key in ("gpus", "time", "mem", "partition", "cpus_per_task")
        }
        return {
            **merged,
            "nodes": own.nodes or 1,
            "shards": own.shards or 1,
            "sbatch_args": [*self.sbatch_args, *own.sbatch_args],
        }
