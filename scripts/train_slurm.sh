#!/usr/bin/env bash
# Multi-node DPO or KTO training by hand (METHOD=dpo|kto): one accelerate launcher per node, all ranks rendezvousing
# on the first node (`prefopt run RECIPE --slurm` writes the same job for a recipe, with its resources). Generated
# by `python -m prefopt.slurm` from prefopt/slurm/bodies.py: edit it there.
#
#   sbatch --nodes=4 scripts/train_slurm.sh accelerate_configs/deepspeed_zero3.yaml CONFIG [--flag value ...]
#
# CONFIG is a recipe (its train stage is trained and marked complete), the file the train stage writes
# (runs/<name>/train/<hash>/train_config.yaml) or one written by hand (pairs_path, model_name_or_path, output_dir
# and PrefDPOConfig fields). Resubmitting the same job resumes from the last checkpoint in output_dir (set
# save_strategy: steps and save_steps). Logs go to logs/ under the submission directory: mkdir -p logs first.
#SBATCH --job-name=prefopt-train
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
USAGE="usage: [METHOD=dpo|kto] sbatch --nodes=N scripts/train_slurm.sh ACCELERATE_CONFIG CONFIG [overrides]"
ACCELERATE_CONFIG=${1:?$USAGE}
CONFIG=${2:?$USAGE}
shift 2
METHOD=${METHOD:-dpo}
case "$METHOD" in dpo|kto) ;; *) echo "METHOD must be dpo or kto, got '$METHOD'" >&2; exit 2 ;; esac
# GPUs of this node's allocation (not of the whole node): Slurm's count, else what is visible.
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi --list-gpus | wc -l)}}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # sed reads all: no SIGPIPE under pipefail
MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}  # two jobs on one node: two ports
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
# One launcher per node; every value travels as its own argument ("$@"), never spliced into a command string.
srun --kill-on-bad-exit=1 bash -c 'exec accelerate launch --config_file "$1" --num_machines "$2" \
  --num_processes "$3" --machine_rank "$SLURM_NODEID" --main_process_ip "$4" --main_process_port "$5" \
  --rdzv_backend c10d -m "prefopt.training.$6" --config "$7" "${@:8}"' \
  train "$ACCELERATE_CONFIG" "$SLURM_NNODES" "$NUM_PROCESSES" "$MASTER_ADDR" "$MASTER_PORT" "$METHOD" \
  "$CONFIG" "$@"
