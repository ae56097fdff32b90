#!/usr/bin/env bash
# Generation across many machines as a Slurm array: each task is one shard; a dependent job merges.
#
#   sbatch --array=0-15 scripts/generate_slurm.sh recipes/my_recipe.yaml
#
# Every task writes its units into the same stage directory (on a shared file system), atomically, so a
# task that dies can simply be resubmitted: it redoes only its missing units. After the array, one more
# `prefopt generate` (submitted below with afterany) generates anything still missing and merges the
# shards into data/ in a fixed order; `prefopt run` then skips the generate stage.
#SBATCH --job-name=prefopt-generate
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
RECIPE=${1:?usage: sbatch --array=0-(K-1) scripts/generate_slurm.sh RECIPE.yaml [prefopt options]}
shift
: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array}"
NUM_SHARDS=${SLURM_ARRAY_TASK_COUNT:-$((SLURM_ARRAY_TASK_MAX + 1))}

prefopt generate "$RECIPE" --shard "$SLURM_ARRAY_TASK_ID" --num-shards "$NUM_SHARDS" "$@"

if [ "$SLURM_ARRAY_TASK_ID" = "$SLURM_ARRAY_TASK_MIN" ]; then
  # One merge job, after every task of this array has ended (successfully or not).
  # The merge job's command, every word quoted for the shell that runs it.
  merge=$(printf '%q ' prefopt generate "$RECIPE" "$@")
  sbatch --dependency="afterany:${SLURM_ARRAY_JOB_ID}" --job-name=prefopt-merge --gres=gpu:1 \
    --output="logs/%x-%j.out" --wrap "$merge"
fi
