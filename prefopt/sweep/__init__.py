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

from prefopt.sweep.results import collect
from prefopt.sweep.running import prepare, run_all, run_one, slurm_scripts
from prefopt.sweep.runs import SweepRun, describe, expand, stage_keys

__all__ = [
    "SweepRun",
    "collect",
    "describe",
    "expand",
    "prepare",
    "run_all",
    "run_one",
    "slurm_scripts",
    "stage_keys",
]
