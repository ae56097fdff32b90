"""What prefopt's DPO and KTO trainers share: an extra dataset column carried past TRL's column filter and
collator, per-example weights normalised over each gradient-accumulation window on all ranks, and TRL's fused
LM head in fp32 (with TF32 matmuls on GPUs that have them, unless ``tf32`` is set).
See :mod:`prefopt.training.dpo_trainer` and :mod:`prefopt.training.kto_trainer`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from prefopt.registry import lookup
from prefopt.training import losses as L

logger = logging.getLogger(__name__)

GAP_KEY = "pref_gap"  # the column and batch key holding each pair's judged gap
WINDOW_KEY = "pref_window"  # batch key: [sum of raw weights, number of weighted examples] of the whole window


def check_weight_knobs(cfg) -> None:
    """The gap-transform knobs and the cap give finite, non-negative, bounded weights."""
    lookup(L.GAP_TRANSFORMS, cfg.gap_transform, "gap_transform", ValueError)
    if not cfg.gap_scale > 0:
        raise ValueError(f"gap_scale: expected a number > 0, got {cfg.gap_scale}")
    if not 0 <= cfg.gap_clip_min < cfg.gap_clip_max:
        raise ValueError(
            f"gap_clip_min, gap_clip_max: expected 0 <= gap_clip_min < gap_clip_max, got "
            f"{cfg.gap_clip_min} and {cfg.gap_clip_max}"
        )
    if not 1 <= cfg.max_weight < math.inf:
        raise ValueError(
            f"max_weight: expected a finite number >= 1 (the cap on weights of mean 1), got {cfg.max_weight}"
        )


MAX_WEIGHT_HELP = (
    "Upper bound on every weight, applied after normalisation (normalised weights have mean 1 over "
    "the window, so a few large gaps cannot dominate it)."
)
NORMALIZE_HELP = (
    "Rescale the weights to mean 1 over each optimizer step's pairs: every micro-batch of the "
    "gradient-accumulation window on every rank. A window whose weights are all 0 contributes no "
    "gradient from them (logged as weights/all_zero_window)."
)


class ExtraColumnCollator:
    """Wraps a TRL collator and adds one numeric dataset column to the batch as a float tensor."""

    def __init__(self, inner, key: str):
        self.inner, self.key = inner, key

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if examples and self.key in examples[0]:
            batch[self.key] = torch.tensor([float(e[self.key]) for e in examples], dtype=torch.float32)
        return batch


def require_finite_column(dataset, key: str, why: str) -> None:
    """Raise if the numeric column ``key`` of ``dataset`` is missing or holds a NaN or an infinity."""
    if key not in dataset.column_names:
        raise ValueError(f"train_dataset needs a {key!r} column ({why}); it has {dataset.column_names}")
    values = torch.tensor(dataset[key], dtype=torch.float64)
    bad = (~torch.isfinite(values)).nonzero().flatten()
    if len(bad):
        raise ValueError(
            f"{key}: {len(bad)} of {len(values)} values are not finite (first at row {int(bad[0])}: "
            f"{values[bad[0]].item()}); expected finite numbers ({why})"
        )


def tf32_default(tf32: bool | None, mixed_precision: bool, available: Callable[[], bool]) -> bool | None:
    """``tf32`` as the trainers use it: left unset (None) under bf16 or fp16 mixed precision on a GPU with TF32,
    True. Autocast runs the model's matmuls in 16 bits, so this changes only the fp32 LM head
    (:func:`fp32_fused_lm_heads`), whose projection then runs on tensor cores with fp32 output: in IEEE fp32 it made
    a DPO step 2.4x TRL's on an H200 (Qwen2.5-0.5B's shape, sequence 1024; README, GPU check). ``available`` is
    asked (it looks at the GPU) only when the rest would set it."""
    return True if tf32 is None and mixed_precision and available() else tf32


def apply_tf32_default(args) -> None:
    """Set ``args.tf32`` by :func:`tf32_default` after TrainingArguments' own ``__post_init__`` (which applies an
    explicit value), and turn TF32 on when it is the default that set it."""
    from transformers.utils.import_utils import enable_tf32, is_torch_tf32_available

    tf32 = tf32_default(args.tf32, bool(args.bf16 or args.fp16), is_torch_tf32_available)
    if tf32 != args.tf32:
        args.tf32 = tf32
        enable_tf32(True)


FP32_LM_HEAD_HELP = (
    "Project onto the vocabulary and log-softmax in fp32 (TF32 matmuls on GPUs that have them), for the policy "
    "and the reference alike. false: TRL's head as shipped, bf16 logits under bf16 autocast: TRL's step time, a "
    "larger error in the pair log-ratio (README, 'One fp32 log-probability path')."
)


@contextlib.contextmanager
def fp32_fused_lm_heads(trl_module, enabled: bool = True):
    """While active (and ``enabled``), the fused LM heads that ``trl_module``'s trainer adds in its ``__init__``
    project and log-softmax in fp32 outside autocast (TRL's own ``cast_lm_head_to_fp32``), for the policy and the
    reference.
    They are patched before accelerate wraps the models, so autocast still covers the rest of the forward."""
    if not enabled:
        yield
        return
    original = trl_module.add_fused_lm_head
    trl_module.add_fused_lm_head = functools.partial(original, cast_lm_head_to_fp32=True)
    try:
        yield
    finally:
        trl_module.add_fused_lm_head = original


class ExtraColumnMixin:
    """Carries the dataset column ``extra_key`` past TRL's column filter and collator into ``inputs``, and
    keeps it (and the window's weight sum) away from the model (reference log-probs included, which TRL computes
    from collator output)."""

    extra_key: str

    def _wrap_collator(self) -> None:
        self.data_collator = ExtraColumnCollator(self.data_collator, self.extra_key)

    def _without_extra(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inputs.items() if k not in (self.extra_key, WINDOW_KEY)}

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.extra_key not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, self.extra_key]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, self._without_extra(inputs))


class WindowWeightsMixin:
    """Per-example weights normalised over each optimizer step's examples: every micro-batch of the
    gradient-accumulation window, on every rank.

    The Trainer prefetches a window's micro-batches (``get_batch_samples``) before the first forward; this sums the
    raw weights and counts the weighted examples there, sums both over ranks (``accelerator.reduce``) and adds
    them to each micro-batch under ``WINDOW_KEY``. A batch without it (evaluation, a direct ``compute_loss``) is its
    own window. Subclasses define ``_window_weighted()`` (whether their loss uses the weights) and
    ``_raw_weights(batch)``: the batch's raw, non-negative weights and a mask of the examples they cover.
    """

    _all_zero_windows = 0  # optimizer steps so far whose weights were all 0

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples and self._window_weighted():
            sums = torch.stack(
                [
                    torch.stack([raw.sum(), covered.sum().to(raw.dtype)]).to(self.accelerator.device)
                    for raw, covered in map(self._raw_weights, batch_samples)
                ]
            ).sum(dim=0)
            window = self.accelerator.reduce(sums, reduction="sum")
            if window[0] == 0 and window[1] > 0:
                self._all_zero_windows += 1
                if self.accelerator.is_main_process:
                    logger.warning(
                        "every weight of the %d examples of this optimizer step is 0: they contribute no "
                        "gradient (%d such steps so far)",
                        int(window[1]),
                        self._all_zero_windows,
                    )
            for batch in batch_samples:
                batch[WINDOW_KEY] = window
        return batch_samples, num_items_in_batch

    def _weights(self, inputs: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
        """The examples' weights: window-normalised (when ``normalize_weights``) and capped at ``max_weight``;
        logs their mean, max, the fraction at 0 and at the cap, and whether the window is all zero."""
        raw, covered = self._raw_weights(inputs)
        window = inputs.get(WINDOW_KEY)
        total, count = (window[0], window[1]) if window is not None else (raw.sum(), covered.sum())
        a = self.args
        weights = (
            L.gap_weights(raw, total, count, a.max_weight) if a.normalize_weights else raw.clamp_max(a.max_weight)
        ).to(dtype)
        metrics, gather = self._metrics["train" if self.model.training else "eval"], self.accelerator.gather
        covered_weights = gather(weights.detach())[gather(covered)]
        if covered_weights.numel():
            metrics["weights/mean"].append(covered_weights.mean().item())
            metrics["weights/max"].append(covered_weights.max().item())
            metrics["weights/zero"].append((covered_weights == 0).float().mean().item())
            metrics["weights/at_cap"].append((covered_weights == a.max_weight).float().mean().item())
        metrics["weights/all_zero_window"].append(float(total == 0 and count > 0))
        return weights
