"""Running a sweep: one run, all of them, the stages they all read (once, before parallel runs), and its Slurm
jobs."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from prefopt.pipeline import Pipeline
from prefopt.recipe import SweepConfig
from prefopt.slurm import Rendered, render_sweep
from prefopt.sweep.results import collect
from prefopt.sweep.runs import SweepRun, sweep_dir

logger = logging.getLogger(__name__)


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
