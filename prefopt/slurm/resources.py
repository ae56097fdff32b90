"""What each stage's Slurm job asks for: GPUs derived from the recipe unless its ``resources:`` section sets them,
and the rest from that section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prefopt.engines.registry import ENGINES
from prefopt.errors import ConfigError
from prefopt.recipe import Recipe
from prefopt.tasks.registry import model_task

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Request:
    """What one job asks Slurm for."""

    gpus: int  # per task (per node for training)
    nodes: int = 1
    shards: int = 1
    time: str | None = None
    mem: str | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    sbatch_args: tuple[str, ...] = ()


def _parallel(options: dict[str, Any]) -> int:
    return int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))


def _local(engine: str, models: list[str]) -> bool:
    """Whether an engine loads these models on this job's GPUs (not a server, not the tiny world on a CPU)."""
    return ENGINES.get(engine).runs_local_weights and not all(model_task(m) is not None for m in models)


GPUS_PER_NODE = 8  # a training node's GPUs when neither the recipe nor its accelerate config gives a count


def accelerate_processes(path: str) -> int:
    """GPUs a training job needs per node under an accelerate config: 0 for a CPU one, its ``num_processes`` per
    machine where it gives one, else a whole node (:data:`GPUS_PER_NODE`; the launch passes the count)."""
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            config = yaml.safe_load(candidate.read_text()) or {}
            if config.get("use_cpu"):
                return 0
            if "num_processes" not in config:
                return GPUS_PER_NODE
            return max(1, int(config["num_processes"]) // max(1, int(config.get("num_machines", 1))))
    raise ConfigError(f"{path}: accelerate config not found (looked in . and {REPO_ROOT})")


def accelerate_config_path(path: str) -> str:
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(f"training.accelerate_config: {path} not found (looked in . and {REPO_ROOT})")


def derived_gpus(recipe: Recipe, stage: str, shards: int = 1) -> int:
    """The GPUs a stage's job needs by the recipe (per array task for sharded generation, per node for training)."""
    if stage == "generate":
        g = recipe.generation
        if not g.generators or not _local(g.engine, [gen.model for gen in g.generators]):
            return 0
        tp = max(_parallel({**g.engine_options, **gen.engine_options}) for gen in g.generators)
        return tp * (g.data_parallel_size if shards == 1 else 1)  # a sharded task starts no workers of its own
    if stage == "judge":
        j = recipe.judging
        if not j.entry.is_model or all(model_task(ref) is not None for ref in j.model_refs):
            return 0
        if j.llm is not None and j.judge == "llm":
            return _parallel(j.llm.engine_options) if _local(j.llm.engine, j.model_refs) else 0
        return 1  # a reward model
    if stage == "pairs":
        mb = recipe.pairing.margin_bayes
        if mb is None or model_task(mb.proxy.model) is not None:
            return 0
        return accelerate_processes(mb.proxy.accelerate_config)  # the proxy's DPO run
    if stage == "train":
        return (
            0
            if model_task(recipe.training.model) is not None
            else accelerate_processes(recipe.training.accelerate_config)
        )
    if stage == "eval":
        models = [g.model for g in recipe.generation.generators] + [recipe.training.model]
        return _parallel(recipe.evaluation.engine_options) if _local(recipe.evaluation.engine, models) else 0
    raise ValueError(f"unknown stage {stage!r}")


def request(recipe: Recipe, stage: str) -> Request:
    values = recipe.resources.stage(stage)
    gpus = values["gpus"] if values["gpus"] is not None else derived_gpus(recipe, stage, values["shards"])
    return Request(
        gpus=gpus,
        nodes=values["nodes"],
        shards=values["shards"],
        time=values["time"],
        mem=values["mem"],
        partition=values["partition"],
        cpus_per_task=values["cpus_per_task"],
        sbatch_args=tuple(values["sbatch_args"]),
    )


def resources_table(recipe: Recipe, stages: tuple[str, ...] = ("generate", "judge", "pairs", "train", "eval")) -> str:
    """What each stage's jobs would take (the dry run's resources table)."""
    lines = [
        "| stage | jobs | nodes | GPUs per node | GPUs in all | time | mem | partition | cpus/task |",
        "| --- " * 9 + "|",
    ]
    for stage in stages:
        r = request(recipe, stage)
        jobs = f"{r.shards} (array) + merge" if stage == "generate" and r.shards > 1 else "1"
        total = r.gpus * r.nodes * r.shards
        lines.append(
            f"| {stage} | {jobs} | {r.nodes} | {r.gpus} | {total} | {r.time or '-'} | {r.mem or '-'} | "
            f"{r.partition or '-'} | {r.cpus_per_task or '-'} |"
        )
    return "\n".join(lines) + "\n"
