"""Sweeps: a recipe's ``sweep:`` block expands into runs that share every cached stage they have in common.

    prefopt sweep RECIPE.yaml              # every run in turn, then the results table and plot
    prefopt sweep RECIPE.yaml --dry-run    # the runs and the stages they share; nothing is run
    prefopt sweep RECIPE.yaml --slurm      # Slurm jobs: shared stages once, then each run's pairs, train, eval; collect
    prefopt sweep RECIPE.yaml --slurm --dry-run   # print every script and the resources, write nothing
    prefopt sweep RECIPE.yaml --run 3      # run 3 only (under Slurm: what run 3's eval job does)
    prefopt sweep RECIPE.yaml --collect    # the table and plot of the runs finished so far

Runs are the base recipe with the swept fields set (``mode: product`` or ``zip``); they write into the same
``output_dir``, where stage keys hash each stage's inputs, so a stage that no swept field reaches (say, generating
and judging the candidates) runs once for the whole sweep. Results go to ``<output_dir>/sweeps/<name>/``:
``results.md``, ``results.csv``, ``results.json``, ``accuracy.png`` and each run's own report under ``runs/``.
With ``sweep.seeds`` every arm (a combination of swept values) runs once per seed, and ``results.md`` adds the
arms' table (intervals over problems and seeds, paired differences from the baseline arm) and ``intervals.png``.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.cache import is_complete
from prefopt.config_base import from_dict
from prefopt.errors import ConfigError
from prefopt.evaluation.accuracy import domain_means
from prefopt.evaluation.report import arm_intervals, arms_markdown, load_scores
from prefopt.pipeline import Pipeline
from prefopt.plots import plot_arms, plot_sweep
from prefopt.recipe import (
    Recipe,
    SweepConfig,
    check_trainer_configs,
    read_recipe_data,
    recipe_from_data,
    set_path,
)
from prefopt.slurm import Rendered, render_sweep, resources_table
from prefopt.tables import num, pct, pp

logger = logging.getLogger(__name__)


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
    arms = []
    for a, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        arm = (
            sweep.labels[a]
            if sweep.labels
            else ",".join(f"{k.split('.')[-1]}={_text(v)}" for k, v in values.items()) or "recipe"
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
            + " | ".join(_text(v) for v in run.values.values())
            + " | "
            + " | ".join(k[s] for s in ("generate", "judge", "pairs", "train"))
            + " |"
        )
    shared = ", ".join(f"{stage}: {len({k[stage] for k in keys})}" for stage in ("generate", "judge", "pairs", "train"))
    lines += ["", f"Distinct stage outputs: {shared} (for {len(runs)} runs)."]
    lines += ["", "Resources of each job under Slurm (`--slurm`; the recipe's resources section):", ""]
    lines.append(resources_table(runs[0].recipe).rstrip("\n"))
    return "\n".join(lines) + "\n"


def run_one(sweep: SweepConfig, runs: list[SweepRun], index: int) -> Path:
    """Run one run of the sweep (every stage, cached ones skipped); its report goes under the sweep's runs/."""
    run = runs[index]
    logger.info("[sweep %s] run %d of %d: %s", sweep.name, index + 1, len(runs), run.label)
    return Pipeline(run.recipe).run(report_dir=sweep_dir(sweep, runs) / "runs" / run.slug)


def prepare(runs: list[SweepRun]) -> None:
    """What every run reads besides its own pairs and training, done once here so that parallel runs find it done:
    generation and judging, the policy's model, and the evaluations of the generators and of the untrained policy
    (each run's table needs them; cached by model, so runs that share a model share its evaluation)."""
    for run in runs:
        pipeline = Pipeline(run.recipe)
        if run.recipe.training.dataset is None:
            pipeline.generate()
            pipeline.judge()
        pipeline.model_path(run.recipe.training.model)
        for label, (ref, policy) in pipeline.evaluated_models().items():
            pipeline.evaluate_model(label, pipeline.model_path(ref), pipeline.model_key(ref), policy=policy)


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
    key = sweep.x or next(iter(sweep.parameters), None)
    if sweep.x_values:
        arms = list(dict.fromkeys(run.arm for run in runs))
        return "x", {run.index: sweep.x_values[arms.index(run.arm)] for run in runs}
    if key is None:  # seeds only: one arm
        return "arm", {run.index: run.arm for run in runs}
    values = {run.index: run.values[key] for run in runs}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        return key, values
    if key == "pairing.generator_pairs" and rows and all("generator_gap_in_domain" in r for r in rows.values()):
        return "generator gap, in-domain (pp)", {
            i: round(100 * r["generator_gap_in_domain"], 1) for i, r in rows.items()
        }
    return key, {run.index: run.arm or run.label for run in runs}


def series_of(sweep: SweepConfig, run: SweepRun) -> str:
    """The values of the swept fields other than the x one: runs sharing them form one line of the plot."""
    key = sweep.x or next(iter(sweep.parameters), None)
    others = [f"{k.split('.')[-1]}={_text(v)}" for k, v in run.values.items() if k != key]
    return ", ".join(others) if sweep.mode == "product" and others else "runs"


def collect(sweep: SweepConfig, runs: list[SweepRun], out: Path | None = None) -> Path:
    """The sweep's table (Markdown, CSV, JSON) and plots, from every run whose report exists, in ``out`` (default:
    the sweep's directory)."""
    out = out or sweep_dir(sweep, runs)
    done: dict[int, dict] = {}
    missing = []
    for run in runs:
        report = sweep_dir(sweep, runs) / "runs" / run.slug / "results.json"  # where run_one wrote it
        pipeline = Pipeline(run.recipe)
        if report.is_file() and is_complete(pipeline.stage_dir("train", pipeline.train_key())):
            done[run.index] = {**result_row(run, json.loads(report.read_text())), **train_numbers(pipeline)}
        else:
            missing.append(run.label)
    xlabel, xs = x_axis(sweep, runs, done)
    rows = [{**row, "x": xs[i], "series": series_of(sweep, runs[i])} for i, row in done.items()]
    arms = arm_rows(sweep, runs, done, xs)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    baseline = baseline_arm(sweep, runs)
    (out / "results.json").write_text(
        json.dumps(
            {"sweep": sweep.name, "runs": rows, "missing": missing, "baseline": baseline, "arms": arms}, indent=2
        )
    )
    table = sweep_markdown(sweep, rows, missing)
    if arms:
        table += "\n### Arms\n\n" + arms_markdown(arms, baseline)
    (out / "results.md").write_text(table)
    if rows:
        plot_sweep(rows, xlabel, out / "accuracy.png", f"Sweep {sweep.name}")
    if arms:
        plot_arms(arms, xlabel, out / "intervals.png", f"Sweep {sweep.name}: after training, 95% intervals", baseline)
    return out / "results.md"


def baseline_arm(sweep: SweepConfig, runs: list[SweepRun]) -> str:
    """The arm every other is compared with: ``sweep.baseline``, else the first."""
    return sweep.baseline or (runs[0].arm or runs[0].label)


def train_numbers(pipeline: Pipeline) -> dict:
    """A finished run's optimizer steps (trainer_state.json) and tokens trained: steps x effective batch x the mean
    tokens per example (training_plan.json), which a resumed run keeps (TRL's own running count, ``num_tokens`` in
    the log, restarts at a resume); None where the train stage predates them."""
    train = pipeline.stage_dir("train", pipeline.train_key())
    state, plan = train / "trainer_state.json", train / "training_plan.json"
    steps = json.loads(state.read_text())["global_step"] if state.is_file() else None
    plan_data = json.loads(plan.read_text()) if plan.is_file() else None
    tokens = (
        round(steps * plan_data["effective_batch_size"] * plan_data["mean_tokens_per_example"])
        if steps is not None and plan_data
        else None
    )
    return {"optimizer_steps": steps, "tokens_trained": tokens}


def arm_rows(sweep: SweepConfig, runs: list[SweepRun], done: dict[int, dict], xs: dict[int, Any]) -> list[dict]:
    """Per arm (runs that differ only in seed) of the finished runs: its seeds, means over them of pairs kept,
    steps and tokens trained, and the intervals of :func:`prefopt.evaluation.report.arm_intervals` from each run's
    per-problem scores (the trained policy's eval stage, read from disk)."""
    scores: dict[str, list] = {}
    before = None
    members: dict[str, list[int]] = {}
    for run in runs:
        if run.index not in done:
            continue
        pipeline = Pipeline(run.recipe)
        dirs = pipeline.eval_dirs()
        labels = pipeline.model_labels()
        if labels[1] not in dirs:
            continue
        arm = run.arm or run.label
        scores.setdefault(arm, []).append(load_scores(dirs[labels[1]]))
        members.setdefault(arm, []).append(run.index)
        if before is None and labels[0] in dirs:
            before = load_scores(dirs[labels[0]])
    if not scores:
        return []
    baseline = baseline_arm(sweep, runs)
    intervals = arm_intervals(scores, baseline if baseline in scores else next(iter(scores)), before)

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    rows = []
    for arm, indices in members.items():
        rows.append(
            {
                "arm": arm,
                "x": xs[indices[0]],
                "series": series_of(sweep, runs[indices[0]]),
                "seeds": [runs[i].seed for i in indices if runs[i].seed is not None],
                **{
                    key: mean([done[i].get(key) for i in indices])
                    for key in ("pairs_kept", "optimizer_steps", "tokens_trained")
                },
                **intervals[arm],
            }
        )
    return rows


def _count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def sweep_markdown(sweep: SweepConfig, rows: list[dict], missing: list[str]) -> str:
    gaps = [c for c in ("generator_gap_in_domain", "generator_gap_out_of_domain") if any(c in r for r in rows)]
    header = [
        "run",
        *(["generator gap (ID)", "generator gap (OOD)"][: len(gaps)] if gaps else []),
        "pairs kept",
        "optimizer steps",
        "tokens trained",
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
        cells = [r["run"], *[pp(r.get(g)) for g in gaps], str(r.get("pairs_kept"))]
        cells += [_count(r.get("optimizer_steps")), _count(r.get("tokens_trained")), num(r.get("mean_gap_kept"))]
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


def slurm_scripts(
    recipe_path: str | Path,
    sweep: SweepConfig,
    runs: list[SweepRun],
    sbatch_args: str = "",
    extra: list[str] | None = None,
) -> Rendered:
    """The sweep's Slurm jobs (:func:`prefopt.slurm.render_sweep`) in ``<sweep dir>/slurm/``: write them with
    ``.write()`` (it returns submit.sh) or print ``.text()``. ``sbatch_args`` go on every sbatch call."""
    return render_sweep(recipe_path, sweep, runs, sweep_dir(sweep, runs) / "slurm", extra, shlex.split(sbatch_args))
