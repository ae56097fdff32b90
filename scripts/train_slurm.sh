#!/usr/bin/env bash
# Multi-node DPO training: one accelerate launcher per node, all ranks rendezvousing on the first node.
#
#   sbatch --nodes=4 scripts/train_slurm.sh accelerate_configs/deepspeed_zero3.yaml train_config.yaml [--flag value ...]
#
# train_config.yaml is the file the train stage writes (runs/<name>/train/<hash>/train_config.yaml) or one
# written by hand (pairs_path, model_name_or_path, output_dir and PrefDPOConfig fields). Resubmitting the same
# job resumes from the last checkpoint in output_dir (set save_strategy: steps and save_steps).
#SBATCH --job-name=prefopt-train
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
ACCELERATE_CONFIG=${1:?usage: sbatch --nodes=N scripts/train_slurm.sh ACCELERATE_CONFIG TRAIN_CONFIG [overrides]}
TRAIN_CONFIG=${2:?usage: sbatch --nodes=N scripts/train_slurm.sh ACCELERATE_CONFIG TRAIN_CONFIG [overrides]}
shift 2
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi --list-gpus | wc -l)}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))

srun --kill-on-bad-exit=1 bash -c "accelerate launch \
  --config_file $ACCELERATE_CONFIG \
  --num_machines $SLURM_NNODES --num_processes $NUM_PROCESSES --machine_rank \$SLURM_NODEID \
  --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT \
  --rdzv_backend c10d \
  -m prefopt.training.dpo --config $TRAIN_CONFIG $*"
