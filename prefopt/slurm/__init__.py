"""Slurm scripts for a recipe: a job per stage, each asking for what its stage needs, chained with ``afterok``.

    prefopt run RECIPE.yaml --slurm              # write <output_dir>/slurm/<name>/: a script per stage, submit.sh
    prefopt run RECIPE.yaml --slurm --dry-run    # print them instead (and write nothing)
    prefopt sweep RECIPE.yaml --slurm [--dry-run]

One run is ``generate`` (an array of ``resources.generate.shards`` tasks; the shard count is written into the
script, so ``sbatch --array=3,7 generate.sh`` redoes two shards alone), ``generate_merge`` (after the array,
successful or not: it finishes any unit a task left and merges), ``judge``, ``pairs``, ``train`` (``accelerate
launch`` on every node of the allocation, the first node of ``SLURM_JOB_NODELIST`` the main one, ``SLURM_NODEID``
the machine rank) and ``eval``. GPUs per job come from the recipe (``tensor_parallel_size`` x
``data_parallel_size`` for vLLM generation, the accelerate config's ``num_processes`` for training) unless its
``resources:`` section sets them; time, memory, partition, CPUs and extra sbatch options come from that section.

Every job runs a recipe file written beside the scripts: the recipe with its ``--set`` overrides applied (and,
for a sweep run, its swept values), so that ``accelerate launch -m prefopt.training.dpo --config RECIPE`` trains
exactly that run's train stage. A sweep shares its generate and judge jobs between the runs that share those
stages, then a ``prepare`` job evaluates the generators and the untrained policy once, then each run has its own
pairs, train and eval jobs, and ``collect`` writes the table after all of them.

``scripts/generate_slurm.sh`` and ``scripts/train_slurm.sh`` are generated from the same bodies
(:func:`generic_scripts`; ``python -m prefopt.slurm`` rewrites them), for launching by hand.

``resources.py`` (what each job asks for), ``scripts.py`` (the text of the scripts), ``jobs.py`` (the jobs of a
run and of a sweep), ``bodies.py`` (the shell bodies and ``scripts/*_slurm.sh``).
"""

from prefopt.slurm.bodies import generic_scripts
from prefopt.slurm.jobs import render_run, render_sweep
from prefopt.slurm.resources import derived_gpus, resources_table
from prefopt.slurm.scripts import Rendered

__all__ = ["Rendered", "derived_gpus", "generic_scripts", "render_run", "render_sweep", "resources_table"]
