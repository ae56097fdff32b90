"""Sweeps: a recipe's ``sweep:`` block expands into runs that share every cached stage they have in common.

    prefopt sweep RECIPE.yaml              # every run in turn, then the results table and plot
    prefopt sweep RECIPE.yaml --dry-run    # the runs and the stages they share; nothing is run
    prefopt sweep RECIPE.yaml --slurm      # a Slurm script: prepare (shared stages), an array (a run each), collect
    prefopt sweep RECIPE.yaml --run 3      # run 3 only (what each array task does)
    prefopt sweep RECIPE.yaml --collect    # the table and plot of the runs finished so far

Runs are the base recipe with the swept fields set (``mode: product`` or ``zip``); they write into the same
``output_dir``, where stage keys hash each stage's inputs, so a stage that no swept field reaches (say, generating
and judging the candidates) runs once for the whole sweep. Results go to ``<output_dir>/sweeps/<name>/``:
``results.md``, ``results.csv``, ``results.json``, ``accuracy.png`` and each run's own report under ``runs/``.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefopt.cache import is_complete
from prefopt.config_base import from_dict
from prefopt.errors import ConfigError
from prefopt.evaluation.accuracy import domain_means
from prefopt.pipeline import Pipeline
from prefopt.plots import plot_sweep
from prefopt.recipe import (
    Recipe,
    SweepConfig,
    check_trainer_configs,
    read_recipe_data,
    recipe_from_data,
    set_path,
)
from prefopt.tables import num, pct, pp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRun:
    index: int
    label: str
    values: dict[str, Any]  # swept field -> its value in this run
    recipe: Recipe

    @property
    def slug(self) -> str:
        """The run's directory name: its label with anything but ``\\w . = , + -`` as ``_``, never starting with a dot
        (a label ``..`` must not reach the sweep's own directory)."""
        slug = re.sub(r"[^\w.=,+-]+", "_", self.label)[:120]
        return f"_{slug}" if not slug or slug.startswith(".") else slug


def _text(value: Any) -> str:
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
    for i, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        label = (
            sweep.labels[i] if sweep.labels else ",".join(f"{k.split('.')[-1]}={_text(v)}" for k, v in values.items())
        )
        run = copy.deepcopy(data)
        run["name"] = f"{data.get('name', 'sweep')}/{label}"
        try:
            for key, value in values.items():
                set_path(run, key, copy.deepcopy(value))
            recipe = recipe_from_data(run)
            check_trainer_configs(recipe)
        except ConfigError as err:
            raise ConfigError(f"{path}: sweep run {i} ({label}): {err}") from None
        runs.append(SweepRun(i, label, values, recipe))
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
            + " | ".join(_text(v) for v in run.values.values())
            + " | "
            + " | ".join(k[s] for s in ("generate", "judge", "pairs", "train"))
            + " |"
        )
    shared = ", ".join(f"{stage}: {len({k[stage] for k in keys})}" for stage in ("generate", "judge", "pairs", "train"))
    lines += ["", f"Distinct stage outputs: {shared} (for {len(runs)} runs)."]
    return "\n".join(lines) + "\n"


def run_one(sweep: SweepConfig, runs: list[SweepRun], index: int) -> Path:
    """Run one run of the sweep (every stage, cached ones skipped); its report goes under the sweep's runs/."""
    run = runs[index]
    logger.info("[sweep %s] run %d of %d: %s", sweep.name, index + 1, len(runs), run.label)
    return Pipeline(run.recipe).run(report_dir=sweep_dir(sweep, runs) / "runs" / run.slug)


def prepare(runs: list[SweepRun]) -> None:
    """The stages every run reads before training: built once here so that parallel runs find them done."""
    for run in runs:
        pipeline = Pipeline(run.recipe)
        pipeline.generate()
        pipeline.judge()
        pipeline.model_path(run.recipe.training.model)


def run_all(sweep: SweepConfig, runs: list[SweepRun]) -> Path:
    for run in runs:
        run_one(sweep, runs, run.index)
    return collect(sweep, runs)


def _policy_labels(accuracy: dict) -> tuple[str, str] | None:
    before = next((k for k in accuracy if k.startswith("policy (before")), None)
    after = next((k for k in accuracy if k.startswith("policy (after")), None)
    return (before, after) if before and after else None


def result_row(run: SweepRun, results: dict) -> dict:
    """One run's line of the sweep table: its fields, pair counts and judged gaps, accuracy before and after."""
    row: dict[str, Any] = {"run": run.label, **{k: _text(v) for k, v in run.values.items()}}
    accuracy, stats = results["accuracy"], results.get("pairs") or {}
    pairing = run.recipe.pairing
    if pairing.strategy_entry.needs_generator_labels:
        pair = pairing.generator_pairs[0]
        if pair.chosen in accuracy and pair.rejected in accuracy:
            chosen, rejected = domain_means(accuracy[pair.chosen]), domain_means(accuracy[pair.rejected])
            for domain in chosen:
                if chosen[domain] is not None:
                    row[f"generator_gap_{domain}"] = chosen[domain] - rejected[domain]
    row["pairs_built"] = stats.get("pairs_built", stats.get("examples_kept"))
    row["pairs_kept"] = stats.get("pairs_kept", stats.get("examples_kept"))
    row["mean_gap_built"] = stats.get("mean_margin_built")
    row["mean_gap_kept"] = stats.get("mean_margin_kept")
    for dim, gap in (stats.get("mean_margins_kept") or {}).items():
        row[f"mean_gap_kept_{dim}"] = gap
    labels = _policy_labels(accuracy)
    if labels:
        before, after = (domain_means(accuracy[label]) for label in labels)
        for domain in before:
            if before[domain] is not None:
                row[f"{domain}_before"], row[f"{domain}_after"] = before[domain], after[domain]
                row[f"{domain}_gain"] = after[domain] - before[domain]
        for name, summary in accuracy[labels[1]].items():
            row[f"{name}_after"] = summary["accuracy"]
    return row


def x_axis(sweep: SweepConfig, runs: list[SweepRun], rows: dict[int, dict]) -> tuple[str, dict[int, Any]]:
    """The plot's x label and each run's x: ``x_values`` if given; a numeric swept value; for a sweep over
    generator pairings, the measured in-domain generator gap; else the run's label."""
    key = sweep.x or next(iter(sweep.parameters))
    if sweep.x_values:
        return "x", {run.index: sweep.x_values[run.index] for run in runs}
    values = {run.index: run.values[key] for run in runs}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        return key, values
    if key == "pairing.generator_pairs" and rows and all("generator_gap_in_domain" in r for r in rows.values()):
        return "generator gap, in-domain (pp)", {
            i: round(100 * r["generator_gap_in_domain"], 1) for i, r in rows.items()
        }
    return key, {run.index: run.label for run in runs}


def series_of(sweep: SweepConfig, run: SweepRun) -> str:
    """The values of the swept fields other than the x one: runs sharing them form one line of the plot."""
    key = sweep.x or next(iter(sweep.parameters))
    others = [f"{k.split('.')[-1]}={_text(v)}" for k, v in run.values.items() if k != key]
    return ", ".join(others) if sweep.mode == "product" and others else "runs"


def collect(sweep: SweepConfig, runs: list[SweepRun]) -> Path:
    """The sweep's table (Markdown, CSV, JSON) and plot, from every run whose report exists."""
    out = sweep_dir(sweep, runs)
    done: dict[int, dict] = {}
    missing = []
    for run in runs:
        report = out / "runs" / run.slug / "results.json"
        pipeline = Pipeline(run.recipe)
        if report.is_file() and is_complete(pipeline.stage_dir("train", pipeline.train_key())):
            done[run.index] = result_row(run, json.loads(report.read_text()))
        else:
            missing.append(run.label)
    xlabel, xs = x_axis(sweep, runs, done)
    rows = [{**row, "x": xs[i], "series": series_of(sweep, runs[i])} for i, row in done.items()]
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps({"sweep": sweep.name, "runs": rows, "missing": missing}, indent=2))
    (out / "results.md").write_text(sweep_markdown(sweep, rows, missing))
    if rows:
        plot_sweep(rows, xlabel, out / "accuracy.png", f"Sweep {sweep.name}")
    return out / "results.md"


def sweep_markdown(sweep: SweepConfig, rows: list[dict], missing: list[str]) -> str:
    gaps = [c for c in ("generator_gap_in_domain", "generator_gap_out_of_domain") if any(c in r for r in rows)]
    header = [
        "run",
        *(["generator gap (ID)", "generator gap (OOD)"][: len(gaps)] if gaps else []),
        "pairs kept",
        "mean judged gap (kept)",
        "ID before",
        "ID after",
        "ID gain",
        "OOD before",
        "OOD after",
        "OOD gain",
    ]
    lines = [f"## prefopt sweep: {sweep.name}", "", "| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    for r in rows:
        cells = [r["run"], *[pp(r.get(g)) for g in gaps], str(r.get("pairs_kept")), num(r.get("mean_gap_kept"))]
        for domain in ("in_domain", "out_of_domain"):
            cells += [pct(r.get(f"{domain}_before")), pct(r.get(f"{domain}_after")), pp(r.get(f"{domain}_gain"))]
        lines.append("| " + " | ".join(cells) + " |")
    dims = sorted({c[len("mean_gap_kept_") :] for r in rows for c in r if c.startswith("mean_gap_kept_")})
    if dims:
        lines += [
            "",
            "Mean judged gap of the kept pairs per dimension:",
            "",
            "| run | " + " | ".join(dims) + " |",
            "| --- " * (len(dims) + 1) + "|",
        ]
        lines += [
            "| " + r["run"] + " | " + " | ".join(num(r.get(f"mean_gap_kept_{d}")) for d in dims) + " |" for r in rows
        ]
    if missing:
        lines += ["", f"Not finished: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def slurm_script(
    recipe_path: str | Path,
    sweep: SweepConfig,
    runs: list[SweepRun],
    sbatch_args: str = "",
    extra: list[str] | None = None,
) -> Path:
    """Write ``<sweep dir>/slurm.sh``: a prepare job, an array job of the runs after it, and a collect job."""
    out = sweep_dir(sweep, runs)
    out.mkdir(parents=True, exist_ok=True)
    base = ["prefopt", "sweep", str(Path(recipe_path).resolve())]
    flags = list(extra or [])

    def wrap(*args: str) -> str:  # one shell word for --wrap; $SLURM_ARRAY_TASK_ID is left for the job's shell
        return shlex.quote(shlex.join([*base, *args, *flags]).replace("'$SLURM_ARRAY_TASK_ID'", "$SLURM_ARRAY_TASK_ID"))

    sbatch_args = shlex.join(shlex.split(sbatch_args))
    name = shlex.quote(sweep.name)
    script = out / "slurm.sh"
    script.write_text(f"""#!/usr/bin/env bash
# Sweep {sweep.name}: {len(runs)} runs. Submit with: bash {shlex.quote(str(script))}
# 1. prepare: the stages the runs share (generation, judging, tiny models), once;
# 2. an array of {len(runs)} tasks, one run each, after prepare succeeded;
# 3. collect: the results table and plot, after every task ended (a failed run is listed as not finished).
# Each run resumes where it stopped if resubmitted.
set -euo pipefail
mkdir -p logs
prepare=$(sbatch --parsable --job-name={name}-prepare --output=logs/%x-%j.out {sbatch_args} \\
  --wrap {wrap("--prepare")})
array=$(sbatch --parsable --dependency=afterok:$prepare --array=0-{len(runs) - 1} --job-name={name} \\
  --output=logs/%x-%A_%a.out {sbatch_args} --wrap {wrap("--run", "$SLURM_ARRAY_TASK_ID")})
sbatch --dependency=afterany:$array --job-name={name}-collect --output=logs/%x-%j.out {sbatch_args} \\
  --wrap {wrap("--collect")}
echo "submitted: prepare $prepare, array $array"
""")
    script.chmod(0o755)
    return script
