#!/usr/bin/env bash
# The GPU check on one GPU, in under 8 minutes, nothing downloaded: benchmarks/gpu_check.py builds a ~0.5B Llama
# (Qwen2.5-0.5B's shape, random weights, a tokenizer made here) and prints each figure beside its goal:
#   generation  vLLM vs transformers tokens/s, same model and sampling   (goal: vLLM >= 20x)
#   dpo         PrefDPOTrainer in bf16 at sequence 1024: tokens/s, MFU  (goal: >= 40%); its step vs TRL's (<= 1.02x)
#   precision   the pair log-ratio h under bf16 against fp32: prefopt's head (TF32, IEEE) and TRL's
#   save        FSDP2 and ZeRO-3 under accelerate launch: save_model, reload, the same weights exactly
#   judge       JSON-schema structured output through vLLM: every output valid
# A part whose packages (trl, datasets, vllm, deepspeed) or GPU are missing is reported as skipped, with the reason.
#
#   bash scripts/gpu_check.sh                      # everything
#   bash scripts/gpu_check.sh --parts dpo,save     # some parts; any benchmarks/gpu_check.py flag passes through
#   bash scripts/gpu_check.sh --smoke              # a tiny model and few steps (runs on a CPU too)
#
# Runs from a checkout without installing prefopt (PYTHONPATH), with .venv's python if there is one, else python3
# (PYTHON=... to choose). GPU_CHECK_TIMEOUT (seconds, default 480) bounds the whole run; each part prints its rows
# when it ends, so a run cut short still shows the parts it finished.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c 'import importlib.metadata as m
for d in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "vllm", "deepspeed"):
    try: print(f"{d} {m.version(d)}")
    except m.PackageNotFoundError: print(f"{d} -")'
exec timeout --signal=INT --kill-after=30 "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
