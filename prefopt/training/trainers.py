"""``PrefDPOTrainer`` and ``PrefKTOTrainer``: TRL's trainers with judged gaps and scores carried into the loss.

TRL has no per-pair weight or margin input, and its loss lives in the private ``_compute_loss``. This
subclass adds one dataset column (``gap_column``, the judged score gap), passes it through TRL's column
filter and collator, and, when a prefopt loss is chosen, computes the policy and reference log-probs the
way TRL does and applies a loss from :mod:`prefopt.training.losses`. With ``pref_loss: stock`` (the
default) and no SFT routing it is TRL's trainer unchanged. TRL is pinned to 1.16.x for this reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from prefopt.training import losses as L

GAP_KEY = "pref_gap"  # the column and batch key holding each pair's judged gap


@dataclass
class PrefDPOConfig(DPOConfig):
    """DPOConfig plus prefopt's rating-gap-aware losses and SFT routing."""

    pref_loss: str = field(default="stock", metadata={
        "help": "'stock': TRL's loss_type unchanged. 'sigmoid': DPO computed by prefopt (equal to stock sigmoid). "
                "'weighted': DPO times g(gap). 'offset': -log sigmoid(beta*h - offset_alpha*g(gap)). "
                "'soft_label': DPO against target probability sigmoid(gap / soft_label_tau)."})
    gap_transform: str = field(default="linear", metadata={
        "help": "g(gap) for 'weighted' and 'offset': none, linear (gap_scale*gap), clipped, tanh."})
    gap_scale: float = field(default=1.0, metadata={"help": "Scale applied to the gap inside g."})
    gap_clip_min: float = field(default=0.0, metadata={"help": "Lower clip of g for gap_transform 'clipped'."})
    gap_clip_max: float = field(default=1.0, metadata={"help": "Upper clip of g for gap_transform 'clipped'."})
    normalize_weights: bool = field(default=True, metadata={
        "help": "'weighted': rescale weights to mean 1 per batch (keeps the loss scale)."})
    offset_alpha: float = field(default=1.0, metadata={"help": "'offset': multiplier of g(gap)."})
    soft_label_tau: float = field(default=1.0, metadata={"help": "'soft_label': temperature of the target."})
    sft_route_threshold: float | None = field(default=None, metadata={
        "help": "Pairs whose gap is below this get a length-normalised NLL on the chosen response instead."})
    sft_route_quantile: float | None = field(default=None, metadata={
        "help": "Like sft_route_threshold, with the threshold at this quantile of the training set's gaps."})
    curriculum: bool = field(default=False, metadata={
        "help": "Train easy to hard: pairs in descending gap order, no shuffling."})
    gap_bucket_edges: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75], metadata={
        "help": "Edges of the gap buckets for which reward accuracy and margin are logged."})

    def __post_init__(self):
        super().__post_init__()
        if self.pref_loss not in ("stock", "sigmoid", "weighted", "offset", "soft_label"):
            raise ValueError(f"pref_loss: unknown loss {self.pref_loss!r}")
        if self.gap_transform not in ("none", "linear", "clipped", "tanh"):
            raise ValueError(f"gap_transform: unknown transform {self.gap_transform!r}")
        if self.sft_route_threshold is not None and self.sft_route_quantile is not None:
            raise ValueError("set at most one of sft_route_threshold and sft_route_quantile")
        if self.sft_route_quantile is not None and not 0 < self.sft_route_quantile < 1:
            raise ValueError(f"sft_route_quantile must be in (0, 1), got {self.sft_route_quantile}")
        if self.uses_prefopt_loss:
            conflicts = {"loss_type": self.loss_type not in (["sigmoid"], ["sigmoid", "sft"]),
                         "ld_alpha": self.ld_alpha is not None,
                         "use_weighting": self.use_weighting, "f_divergence_type": self.f_divergence_type != "reverse_kl"}
            bad = [name for name, conflict in conflicts.items() if conflict]
            if bad:
                raise ValueError(f"prefopt's losses replace TRL's: loss_type may only be [sigmoid] or [sigmoid, sft] "
                                 f"and {bad} must keep their defaults (or use pref_loss: stock without SFT routing)")

    @property
    def routes_to_sft(self) -> bool:
        return self.sft_route_threshold is not None or self.sft_route_quantile is not None

    @property
    def uses_prefopt_loss(self) -> bool:
        return self.pref_loss != "stock" or self.routes_to_sft


class ExtraColumnCollator:
    """Wraps a TRL collator and adds one numeric dataset column to the batch as a float tensor."""

    def __init__(self, inner, key: str):
        self.inner, self.key = inner, key

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if examples and self.key in examples[0]:
            batch[self.key] = torch.tensor([float(e[self.key]) for e in examples], dtype=torch.float32)
        return batch


class ExtraColumnMixin:
    """Carries the dataset column ``extra_key`` past TRL's column filter and collator into ``inputs``, and
    keeps it away from the model (reference log-probs included, which TRL computes from collator output)."""

    extra_key: str

    def _wrap_collator(self) -> None:
        self.data_collator = ExtraColumnCollator(self.data_collator, self.extra_key)

    def _without_extra(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inputs.items() if k != self.extra_key}

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.extra_key not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, self.extra_key]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, self._without_extra(inputs))


class PrefDPOTrainer(ExtraColumnMixin, DPOTrainer):
    """DPOTrainer whose loss can use each pair's judged gap (column ``pref_gap`` of the train dataset)."""

    extra_key = GAP_KEY

    def __init__(self, model, ref_model=None, args: PrefDPOConfig | None = None, train_dataset=None, **kwargs):
        if args is not None and args.uses_prefopt_loss and train_dataset is not None:
            if GAP_KEY not in train_dataset.column_names:
                raise ValueError(f"train_dataset needs a {GAP_KEY!r} column (the judged gap of each pair) for "
                                 f"pref_loss {args.pref_loss!r} / SFT routing; it has {train_dataset.column_names}")
            if args.curriculum:
                train_dataset = train_dataset.sort(GAP_KEY, reverse=True)
        super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset, **kwargs)
        self._wrap_collator()
        self.sft_threshold = self._sft_threshold(train_dataset) if self.args.routes_to_sft else None

    def _sft_threshold(self, dataset) -> float | None:
        if self.args.sft_route_threshold is not None:
            return self.args.sft_route_threshold
        if self.args.sft_route_quantile is not None:
            gaps = torch.tensor(dataset[GAP_KEY], dtype=torch.float64)
            return float(torch.quantile(gaps, self.args.sft_route_quantile))
        return None

    def _get_train_sampler(self, train_dataset=None):
        if self.args.curriculum:
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    def _sequence_logps(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Per-token policy log-probs (zero outside completions), the completion mask shifted like them, and the
        summed policy and reference log-probs of the chosen and rejected completions, as TRL computes them."""
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        model_kwargs = {k: v for k, v in inputs.items()
                        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1):]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else self.model, inputs)
        return per_token_logps, shift_mask, chosen_logps, rejected_logps, ref_chosen, ref_rejected

    @torch.no_grad()
    def pair_logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair of the train dataset, in order: log pi(y_w|x) - log ref(y_w|x) and log pi(y_l|x) -
        log ref(y_l|x), tokenised exactly as for training. Their difference is the implicit reward margin h."""
        self.model.eval()
        chosen, rejected = [], []
        for batch in self.get_eval_dataloader(self.train_dataset):
            inputs = self._without_extra(self._prepare_inputs(batch))
            _, _, chosen_logps, rejected_logps, ref_chosen, ref_rejected = self._sequence_logps(self.model, inputs)
            chosen.append(self.accelerator.gather_for_metrics(chosen_logps - ref_chosen).float().cpu())
            rejected.append(self.accelerator.gather_for_metrics(rejected_logps - ref_rejected).float().cpu())
        return torch.cat(chosen), torch.cat(rejected)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.args.uses_prefopt_loss:
            return super()._compute_loss(model, self._without_extra(inputs), return_outputs)
        if return_outputs:
            raise ValueError("prefopt losses do not return model outputs (TRL deprecates it too)")
        gap = inputs[GAP_KEY]
        inputs = self._without_extra(inputs)
        per_token_logps, shift_mask, chosen_logps, rejected_logps, ref_chosen, ref_rejected = \
            self._sequence_logps(model, inputs)
        chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        per_pair = self._pair_losses(chosen_logratios - rejected_logratios, gap)
        to_sft = None
        if self.sft_threshold is not None:
            to_sft = gap < self.sft_threshold
            chosen_lengths = shift_mask.chunk(2, dim=0)[0].sum(dim=1)  # completion tokens of each chosen
            per_pair = L.hybrid_dpo_sft(per_pair, L.length_normalized_nll(chosen_logps, chosen_lengths), to_sft)
        self._log_pair_metrics(chosen_logratios.detach(), rejected_logratios.detach(), chosen_logps.detach(),
                               rejected_logps.detach(), gap, to_sft)
        weights = dict(zip(self.loss_types, self.loss_weights, strict=True))
        loss = weights["sigmoid"] * per_pair.mean()
        if "sft" in weights:  # TRL's `sft` term: NLL over every chosen token of the batch
            chosen_token_logps, chosen_mask = per_token_logps.chunk(2, dim=0)[0], shift_mask.chunk(2, dim=0)[0]
            loss = loss + weights["sft"] * -chosen_token_logps[chosen_mask.bool()].mean()
        return loss

    def _pair_losses(self, h: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        a, beta = self.args, self.beta
        gap = gap.to(h.dtype)
        g = L.transform_gap(gap, a.gap_transform, a.gap_scale, a.gap_clip_min, a.gap_clip_max)
        if a.pref_loss in ("stock", "sigmoid"):  # stock with routing: TRL's default loss is sigmoid
            return L.dpo_sigmoid(h, beta)
        if a.pref_loss == "weighted":
            return L.gap_weighted_dpo(h, beta, L.normalize_per_batch(g) if a.normalize_weights else g)
        if a.pref_loss == "offset":
            return L.gap_offset_dpo(h, beta, a.offset_alpha * g)
        return L.soft_label_dpo(h, beta, torch.sigmoid(gap / a.soft_label_tau))

    def _log_pair_metrics(self, chosen_logratios, rejected_logratios, chosen_logps, rejected_logps, gap, to_sft):
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        gather = self.accelerator.gather
        chosen_rewards, rejected_rewards = self.beta * chosen_logratios, self.beta * rejected_logratios
        margins = gather(chosen_rewards - rejected_rewards)
        correct = (margins > 0).float()
        all_gaps = gather(gap.to(margins.device))
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(correct.mean().item())
        metrics["rewards/margins"].append(margins.mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps).mean().item())
        metrics["gap/mean"].append(all_gaps.mean().item())
        if to_sft is not None:
            metrics["routed_to_sft"].append(gather(to_sft.float()).mean().item())
        edges = [float("-inf"), *self.args.gap_bucket_edges, float("inf")]
        for low, high in zip(edges[:-1], edges[1:]):
            members = (all_gaps >= low) & (all_gaps < high)
            if members.any():
                name = f"gap[{low:g},{high:g})"
                metrics[f"rewards/accuracies_{name}"].append(correct[members].mean().item())
                metrics[f"rewards/margins_{name}"].append(margins[members].mean().item())


SCORE_KEY = "pref_score"  # the column and batch key holding each KTO example's judged score


@dataclass
class PrefKTOConfig(KTOConfig):
    """KTOConfig plus per-example weights from judged scores and automatic class balance."""

    score_weighting: bool = field(default=False, metadata={
        "help": "Weight each example by g(|score - score_threshold|): confident labels count more."})
    score_threshold: float = field(default=0.5, metadata={"help": "The score that separates the two labels."})
    gap_transform: str = field(default="linear", metadata={"help": "g: none, linear, clipped, tanh."})
    gap_scale: float = field(default=1.0, metadata={"help": "Scale applied inside g."})
    gap_clip_min: float = field(default=0.0, metadata={"help": "Lower clip for 'clipped'."})
    gap_clip_max: float = field(default=1.0, metadata={"help": "Upper clip for 'clipped'."})
    normalize_weights: bool = field(default=True, metadata={"help": "Rescale weights to mean 1 per batch."})
    auto_class_balance: bool = field(default=False, metadata={
        "help": "Set desirable_weight and undesirable_weight so both classes contribute equally."})

    def __post_init__(self):
        super().__post_init__()
        if self.gap_transform not in ("none", "linear", "clipped", "tanh"):
            raise ValueError(f"gap_transform: unknown transform {self.gap_transform!r}")
        if self.score_weighting and self.loss_type != "kto":
            raise ValueError(f"score_weighting needs loss_type 'kto', got {self.loss_type!r}")


class PrefKTOTrainer(ExtraColumnMixin, KTOTrainer):
    """KTOTrainer with per-example weights from a ``pref_score`` column and automatic class balance."""

    extra_key = SCORE_KEY

    _NON_MODEL_KEYS = ("completion_mask", "KL_input_ids", "KL_attention_mask", "KL_completion_mask",
                       "KL_token_type_ids", "KL_mm_token_type_ids", "label", "ref_logps", "ref_KL_logps")

    def __init__(self, model, ref_model=None, args: PrefKTOConfig | None = None, train_dataset=None, **kwargs):
        if args is not None and args.score_weighting and train_dataset is not None \
                and SCORE_KEY not in train_dataset.column_names:
            raise ValueError(f"train_dataset needs a {SCORE_KEY!r} column (each example's judged score) for "
                             f"score_weighting; it has {train_dataset.column_names}")
        super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset, **kwargs)
        self._wrap_collator()
        if self.args.auto_class_balance and train_dataset is not None:
            labels = [bool(x) for x in train_dataset["label"]]
            self.desirable_weight, self.undesirable_weight = L.class_balance_weights(sum(labels),
                                                                                     len(labels) - sum(labels))

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.args.score_weighting:
            return super()._compute_loss(model, self._without_extra(inputs), return_outputs)
        if return_outputs:
            raise ValueError("prefopt losses do not return model outputs (TRL deprecates it too)")
        a, mode = self.args, "train" if self.model.training else "eval"
        score, batch = inputs[SCORE_KEY], self._without_extra(inputs)
        kl_logps = self._compute_kl_logps(model, batch)
        model_kwargs = {k: v for k, v in batch.items() if k not in self._NON_MODEL_KEYS}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        logps = outputs.log_probs[:, -(batch["input_ids"].size(1) - 1):].sum(-1)
        if self.precompute_ref_logps:
            ref_logps, ref_kl_logps = batch["ref_logps"], batch.get("ref_KL_logps")
        else:
            ref_logps, ref_kl_logps = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else self.model, batch)
        if self.calculate_KL:
            kl = self.accelerator.gather_for_metrics((kl_logps - ref_kl_logps).mean().detach()).mean().clamp(min=0)
        else:
            kl = torch.zeros((), device=logps.device)
        desirable = torch.as_tensor(batch["label"], dtype=torch.bool, device=logps.device)
        logratios = logps - ref_logps
        per_example = L.kto_losses(logratios, kl, desirable, self.beta)
        class_weights = torch.where(desirable, self.desirable_weight, self.undesirable_weight).to(per_example.dtype)
        g = L.transform_gap((score.to(per_example.dtype) - a.score_threshold).abs(), a.gap_transform, a.gap_scale,
                            a.gap_clip_min, a.gap_clip_max)
        weights = L.normalize_per_batch(g) if a.normalize_weights else g
        rewards = self.beta * logratios.detach()
        metrics, gather = self._metrics[mode], self.accelerator.gather_for_metrics
        metrics["kl"].append(kl.item())
        for name, selector in (("chosen", desirable), ("rejected", ~desirable)):
            selected = gather(rewards[selector])
            if selected.numel():
                metrics[f"rewards/{name}"].append(selected.mean().item())
        metrics["score_weight/mean"].append(gather(g.detach()).mean().item())
        return (class_weights * weights * per_example).mean()
