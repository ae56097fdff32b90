"""A sweep's runs: the recipe's ``sweep:`` block expanded into validated recipes, their stage keys, and the dry
run's description of them (the stages they share, each job's resources)."""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.config_base import from_dict
from prefopt.errors import ConfigError
from prefopt.pipeline import Pipeline
from prefopt.recipe import (
    Recipe,
    SweepConfig,
    check_trainer_configs,
    read_recipe_data,
    recipe_from_data,
    set_path,
)
from prefopt.slurm import resources_table


@dataclass(frozen=True)
class SweepRun:
    index: int
    label: str
    values: dict[str, Any]  # swept field -> its value in this run
    recipe: Recipe
    data: dict = field(default_factory=dict, compare=False, repr=False)  # the run's raw recipe (no sweep section)
    arm: str = ""  # the label of its swept values (runs of one arm differ only in seed); "" before seeds existed
    seed: int | None = None  # sweep.seeds: training.trl.seed and pairing.seed

    @property
    def slug(self) -> str:
        """The run's directory name: its label with anything but ``\\w . = , + -`` as ``_``, never starting with a dot
        (a label ``..`` must not reach the sweep's own directory)."""
        slug = re.sub(r"[^\w.=,+-]+", "_", self.label)[:120]
        return f"_{slug}" if not slug or slug.startswith(".") else slug


def value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def expand(
    path: str | Path, overrides: list[str] | None = None, output_dir: str | None = None
) -> tuple[SweepConfig, list[SweepRun]]:
    """The sweep of a recipe file and its runs, each validated (an error names the run)."""
    data = read_recipe_data(path, overrides)
    if output_dir:
        data["output_dir"] = output_dir
    if "sweep" not in data:
        raise ConfigError(f"{path}: no sweep section; `prefopt run` runs a single recipe")
    try:
        sweep = from_dict(SweepConfig, data.pop("sweep"), "sweep")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    keys = list(sweep.parameters)
    lists = [sweep.parameters[k] for k in keys]
    combos = list(zip(*lists)) if sweep.mode == "zip" else list(itertools.product(*lists))
    runs = []
    arms = []
    for a, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        arm = (
            sweep.labels[a]
            if sweep.labels
            else ",".join(f"{k.split('.')[-1]}={value_text(v)}" for k, v in values.items()) or "recipe"
        )
        arms.append(arm)
        for seed in sweep.seeds or [None]:
            i = len(runs)
            label = arm if seed is None else (f"{arm},seed={seed}" if values or sweep.labels else f"seed={seed}")
            run = copy.deepcopy(data)
            run["name"] = f"{data.get('name', 'sweep')}/{label}"
            try:
                for key, value in values.items():
                    set_path(run, key, copy.deepcopy(value))
                if seed is not None:
                    set_path(run, "training.trl.seed", seed)
                    set_path(run, "pairing.seed", seed)
                recipe = recipe_from_data(run)
                check_trainer_configs(recipe)
            except ConfigError as err:
                raise ConfigError(f"{path}: sweep run {i} ({label}): {err}") from None
            runs.append(SweepRun(i, label, values, recipe, run, arm, seed))
    if sweep.baseline is not None and sweep.baseline not in arms:
        raise ConfigError(f"{path}: sweep.baseline: {sweep.baseline!r} is not one of the arms {arms}")
    slugs = [run.slug for run in runs]
    if len(set(slugs)) != len(slugs):
        twice = sorted({s for s in slugs if slugs.count(s) > 1})
        raise ConfigError(
            f"{path}: sweep: runs {[r.label for r in runs if r.slug in twice]} would share the directory "
            f"{twice[0]!r}; give them distinct sweep.labels"
        )
    return sweep, runs


def sweep_dir(sweep: SweepConfig, runs: list[SweepRun]) -> Path:
    return Path(runs[0].recipe.output_dir) / "sweeps" / sweep.name


def stage_keys(run: SweepRun) -> dict[str, str]:
    pipeline = Pipeline(run.recipe)
    return {stage: getattr(pipeline, f"{stage}_key")() for stage in ("generate", "judge", "pairs", "train")}


def describe(sweep: SweepConfig, runs: list[SweepRun]) -> str:
    """The runs, their fields, and how many distinct outputs each stage has (fewer than runs: shared)."""
    keys = [stage_keys(run) for run in runs]
    lines = [
        f"Sweep {sweep.name!r}: {len(runs)} runs ({sweep.mode} of {', '.join(sweep.parameters)})",
        "",
        "| # | run | " + " | ".join(sweep.parameters) + " | generate | judge | pairs | train |",
        "| --- " * (len(sweep.parameters) + 6) + "|",
    ]
    for run, k in zip(runs, keys):
        lines.append(
            f"| {run.index} | {run.label} | "
            + " | ".join(value_text(v) for v in run.values.values())
            + " | "
            + " | ".join(k[s] for s in ("generate", "judge", "pairs", "train"))
            + " |"
        )
    shared = ", ".join(f"{stage}: {len({k[stage] for k in keys})}" for stage in ("generate", "judge", "pairs", "train"))
    lines += ["", f"Distinct stage outputs: {shared} (for {len(runs)} runs)."]
    lines += ["", "Resources of each job under Slurm (`--slurm`; the recipe's resources section):", ""]
    lines.append(resources_table(runs[0].recipe).rstrip("\n"))
    return "\n".join(lines) + "\n"
