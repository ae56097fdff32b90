"""The train stage's recipe section: method, policy, TRL fields, the user's own dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import described
from prefopt.user_data import DatasetSpec


@dataclass(frozen=True)
class TrainingBudget:
    """How much the policy trains, the same for every arm whatever its number of pairs: TRL's ``max_steps``, given
    as optimizer steps or as tokens (converted with the training data's mean tokens per example and the effective
    batch size; see :func:`prefopt.training.launch.budget_steps`)."""

    steps: int | None = described("Optimizer steps.", default=None)
    tokens: int | None = described(
        "Tokens the forward passes process (a pair: prompt + chosen and prompt + rejected; a KTO example: prompt + "
        "completion), rounded up to whole optimizer steps.",
        default=None,
    )

    def __post_init__(self):
        if (self.steps is None) == (self.tokens is None):
            raise ValueError(f"set exactly one of steps and tokens, got steps={self.steps}, tokens={self.tokens}")
        for name in ("steps", "tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class TrainingConfig:
    """The train stage: prefopt's DPO or KTO trainer (TRL subclasses) under ``accelerate launch``."""

    method: Literal["dpo", "kto"] = described(
        "'dpo' (PrefDPOTrainer) or 'kto' (PrefKTOTrainer, pairs given unpaired).", default="dpo"
    )
    model: str = described("Policy to align: 'world:<name>' or a local model directory.", default="world:policy")
    model_args: dict[str, Any] = described(
        "How the policy loads and trains: any trl.ModelConfig field but model_name_or_path (dtype, "
        "attn_implementation, model_revision, use_peft, lora_r, lora_alpha, lora_dropout, lora_target_modules, "
        "lora_task_type, load_in_4bit, ...). dtype unset: bfloat16 on CUDA, float32 on CPU. trust_remote_code is "
        "a training.trl field.",
        default_factory=dict,
    )
    chat_template: str | None = described(
        "The policy's chat template, replacing its tokenizer's (a Jinja string or a .jinja file): used in training "
        "and saved with the trained model.",
        default=None,
    )
    accelerate_config: str = described(
        "accelerate config file (relative to the repository or absolute).", default="accelerate_configs/cpu.yaml"
    )
    trl: dict[str, Any] = described(
        "Fields of PrefDPOConfig (method dpo: any trl.DPOConfig field and prefopt's "
        "pref_loss, gap_transform, sft_route_*, curriculum, ...) or PrefKTOConfig (method "
        "kto: any trl.KTOConfig field and score_weighting, auto_class_balance, ...).",
        default_factory=dict,
    )
    gap_column: str = described(
        "Pairs column whose judged gap the loss uses: 'margin' or 'margins.<dimension>' (data "
        "without it trains with losses that need no gap).",
        default="margin",
    )
    dataset: DatasetSpec | None = described(
        "Your own training data (pairs or KTO examples in TRL's formats, see docs/schemas.md): {path, config, split, "
        "revision, columns}. Set, `prefopt run` and `prefopt train` train on it, skipping generate, judge and pairs.",
        default=None,
    )
    budget: TrainingBudget | None = described(
        "Train every arm the same amount: {steps: N} or {tokens: N} (TRL's max_steps; epochs then no longer "
        "decide). Unset: training.trl's num_train_epochs or max_steps.",
        default=None,
    )

    def __post_init__(self):
        if self.budget is not None and "max_steps" in self.trl:
            raise ValueError("budget sets TRL's max_steps: drop trl.max_steps, or the budget")
