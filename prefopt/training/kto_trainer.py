"""``PrefKTOConfig`` and ``PrefKTOTrainer``: TRL's KTO trainer with each example's judged score as an optional
weight, automatic class balance, and the shared fp32 LM head (see :mod:`prefopt.training.trainer_base`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import trl.trainer.kto_trainer as trl_kto_trainer
from trl import KTOConfig, KTOTrainer

from prefopt.registry import Registry, lookup
from prefopt.training import losses as L
from prefopt.training.trainer_base import (
    FP32_LM_HEAD_HELP,
    MAX_WEIGHT_HELP,
    NORMALIZE_HELP,
    ExtraColumnMixin,
    WindowWeightsMixin,
    apply_tf32_default,
    check_weight_knobs,
    fp32_fused_lm_heads,
    require_finite_column,
)

# TRL's KTO loss types, as KTOConfig lists them; ``score_weighting``: prefopt's score-weighted path computes it.
TRL_KTO_LOSSES: Registry[str] = Registry("loss_type", score_weighting=False)
for _name in KTOConfig.__dataclass_fields__["loss_type"].metadata["choices"]:
    TRL_KTO_LOSSES.register(_name, _name, score_weighting=_name == "kto")


SCORE_KEY = "pref_score"  # the column and batch key holding each KTO example's judged score


@dataclass
class PrefKTOConfig(KTOConfig):
    """KTOConfig plus per-example weights from judged scores and automatic class balance."""

    score_weighting: bool = field(
        default=False,
        metadata={"help": "Weight each example by g(|score - score_threshold|): confident labels count more."},
    )
    score_threshold: float = field(default=0.5, metadata={"help": "The score that separates the two labels."})
    gap_transform: str = field(
        default="linear",
        metadata={
            "help": "g: none (1), linear (gap_scale*x), clipped (clamp(gap_scale*x, gap_clip_min, gap_clip_max)), "
            "tanh (tanh(gap_scale*x))."
        },
    )
    gap_scale: float = field(default=1.0, metadata={"help": "Scale applied inside g (> 0)."})
    gap_clip_min: float = field(default=0.0, metadata={"help": "Lower clip for 'clipped' (>= 0)."})
    gap_clip_max: float = field(default=1.0, metadata={"help": "Upper clip for 'clipped'."})
    normalize_weights: bool = field(default=True, metadata={"help": NORMALIZE_HELP.replace("pairs", "examples")})
    max_weight: float = field(default=10.0, metadata={"help": MAX_WEIGHT_HELP})
    auto_class_balance: bool = field(
        default=False,
        metadata={"help": "Set desirable_weight and undesirable_weight so both classes contribute equally."},
    )
    fp32_lm_head: bool = field(default=True, metadata={"help": FP32_LM_HEAD_HELP})

    def __post_init__(self):
        super().__post_init__()
        apply_tf32_default(self)
        loss = lookup(TRL_KTO_LOSSES, self.loss_type, "loss_type", ValueError)
        check_weight_knobs(self)
        if self.score_weighting and not loss.score_weighting:
            raise ValueError(
                f"score_weighting: needs loss_type in {TRL_KTO_LOSSES.names(score_weighting=True)}, "
                f"got {self.loss_type!r}"
            )


class PrefKTOTrainer(ExtraColumnMixin, WindowWeightsMixin, KTOTrainer):
    """KTOTrainer with per-example weights from a ``pref_score`` column and automatic class balance."""

    extra_key = SCORE_KEY

    _NON_MODEL_KEYS = (
        "completion_mask",
        "KL_input_ids",
        "KL_attention_mask",
        "KL_completion_mask",
        "KL_token_type_ids",
        "KL_mm_token_type_ids",
        "label",
        "ref_logps",
        "ref_KL_logps",
    )

    def __init__(self, model, ref_model=None, args: PrefKTOConfig | None = None, train_dataset=None, **kwargs):
        if args is not None and args.score_weighting and train_dataset is not None:
            require_finite_column(train_dataset, SCORE_KEY, "each example's judged score, for score_weighting")
        with fp32_fused_lm_heads(trl_kto_trainer, getattr(args, "fp32_lm_head", True)):
            super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset, **kwargs)
        self._wrap_collator()
        if self.args.auto_class_balance and train_dataset is not None:
            labels = [bool(x) for x in train_dataset["label"]]
            self.desirable_weight, self.undesirable_weight = L.class_balance_weights(
                sum(labels), len(labels) - sum(labels)
            )

    def _window_weighted(self) -> bool:
        return self.args.score_weighting

    def _raw_weights(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``g(|score - score_threshold|)`` of every example."""
        a, score = self.args, batch[SCORE_KEY]
        raw = L.raw_weights(
            (score - a.score_threshold).abs(), a.gap_transform, a.gap_scale, a.gap_clip_min, a.gap_clip_max
        )
        return raw, torch.ones_like(raw, dtype=torch.bool)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.args.score_weighting:
            return super()._compute_loss(model, self._without_extra(inputs), return_outputs)
        if return_outputs:
            raise ValueError("prefopt losses do not return model outputs (TRL deprecates it too)")
        mode = "train" if self.model.training else "eval"
        weights, batch = self._weights(inputs, torch.float32), self._without_extra(inputs)
        model_kwargs = {k: v for k, v in batch.items() if k not in self._NON_MODEL_KEYS}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        with self.accelerator.autocast():  # as the reference's (compute_ref_log_probs); fp32 head: fp32_fused_lm_heads
            kl_logps = self._compute_kl_logps(model, batch)
            outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        logps = outputs.log_probs[:, -(batch["input_ids"].size(1) - 1) :].sum(-1)
        if self.precompute_ref_logps:
            ref_logps, ref_kl_logps = batch["ref_logps"], batch.get("ref_KL_logps")
        else:
            ref_logps, ref_kl_logps = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else self.model, batch
            )
        if self.calculate_KL:
            kl = self.accelerator.gather_for_metrics((kl_logps - ref_kl_logps).mean().detach()).mean().clamp(min=0)
        else:
            kl = torch.zeros((), device=logps.device)
        desirable = torch.as_tensor(batch["label"], dtype=torch.bool, device=logps.device)
        logratios = logps - ref_logps
        per_example = L.kto_losses(logratios, kl, desirable, self.beta)
        class_weights = torch.where(desirable, self.desirable_weight, self.undesirable_weight).to(per_example.dtype)
        rewards = self.beta * logratios.detach()
        metrics, gather = self._metrics[mode], self.accelerator.gather_for_metrics
        metrics["kl"].append(kl.item())
        for name, selector in (("chosen", desirable), ("rejected", ~desirable)):
            selected = gather(rewards[selector])
            if selected.numel():
                metrics[f"rewards/{name}"].append(selected.mean().item())
        return (class_weights * weights.to(per_example.dtype) * per_example).mean()
