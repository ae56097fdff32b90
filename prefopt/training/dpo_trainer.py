"""``PrefDPOConfig`` and ``PrefDPOTrainer``: TRL's DPO trainer with judged gaps and scores carried into the loss.

TRL has no per-pair weight or margin input, and its loss lives in the private ``_compute_loss``. This
subclass adds one dataset column (``gap_column``, the judged score gap), passes it through TRL's column
filter and collator, and, when a prefopt loss is chosen, computes the policy and reference log-probs the
way TRL does and applies a loss from :mod:`prefopt.training.losses`. Gap (and KTO score) weights are
normalised over each gradient-accumulation window on all ranks: :meth:`WindowWeightsMixin.get_batch_samples`
sums them when the Trainer prefetches the window and hands the sum to every micro-batch.

Both trainers patch TRL's fused LM head with ``cast_lm_head_to_fp32`` and run policy and reference forwards
under the same autocast, so both log-probabilities go through one fp32 projection and log-softmax whatever the
mixed precision. With ``pref_loss: stock`` (the default) and no SFT routing the loss is TRL's unchanged.
TRL is pinned to 1.16.x for these reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import trl.trainer.dpo_trainer as trl_dpo_trainer
from torch.utils.data import SequentialSampler
from trl import DPOConfig, DPOTrainer

from prefopt.registry import Registry, lookup
from prefopt.training import losses as L
from prefopt.training.trainer_base import (
    FP32_LM_HEAD_HELP,
    GAP_KEY,
    MAX_WEIGHT_HELP,
    NORMALIZE_HELP,
    ExtraColumnMixin,
    WindowWeightsMixin,
    apply_tf32_default,
    check_weight_knobs,
    fp32_fused_lm_heads,
    require_finite_column,
)

# TRL 1.16's DPO loss types (DPOTrainer._compute_loss); ``prefopt_term``: what prefopt's own loss path computes
# in its place ("pair": prefopt's pair loss; "chosen_nll": TRL's NLL over every chosen token), None: not supported.
TRL_DPO_LOSSES: Registry[str] = Registry("loss_type", prefopt_term=None)
for _name in (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
):
    TRL_DPO_LOSSES.register(_name, _name, prefopt_term={"sigmoid": "pair", "sft": "chosen_nll"}.get(_name))


@dataclass
class PrefDPOConfig(DPOConfig):
    """DPOConfig plus prefopt's rating-gap-aware losses and SFT routing."""

    pref_loss: str = field(
        default="stock",
        metadata={
            "help": "'stock': TRL's loss_type unchanged. 'sigmoid': DPO computed by prefopt (equal to stock sigmoid). "
            "'weighted': DPO times the pair's gap weight. 'offset': -log sigmoid(beta*h - "
            "offset_alpha*g(max(gap, 0))). 'soft_label': DPO against target probability sigmoid(gap / "
            "soft_label_tau). Any name in prefopt.training.losses.PAIR_LOSSES."
        },
    )
    gap_transform: str = field(
        default="linear",
        metadata={
            "help": "g for 'weighted' and 'offset', applied to max(gap, 0): none (1), linear (gap_scale*gap), clipped "
            "(clamp(gap_scale*gap, gap_clip_min, gap_clip_max)), tanh (tanh(gap_scale*gap))."
        },
    )
    gap_scale: float = field(default=1.0, metadata={"help": "Scale applied to the gap inside g (> 0)."})
    gap_clip_min: float = field(default=0.0, metadata={"help": "Lower clip of g for gap_transform 'clipped' (>= 0)."})
    gap_clip_max: float = field(default=1.0, metadata={"help": "Upper clip of g for gap_transform 'clipped'."})
    normalize_weights: bool = field(default=True, metadata={"help": "'weighted': " + NORMALIZE_HELP})
    max_weight: float = field(default=10.0, metadata={"help": "'weighted': " + MAX_WEIGHT_HELP})
    offset_alpha: float = field(default=1.0, metadata={"help": "'offset': multiplier of g(max(gap, 0))."})
    soft_label_tau: float = field(default=1.0, metadata={"help": "'soft_label': temperature of the target."})
    sft_route_threshold: float | None = field(
        default=None,
        metadata={"help": "Pairs whose gap is below this get a length-normalised NLL on the chosen response instead."},
    )
    sft_route_quantile: float | None = field(
        default=None,
        metadata={"help": "Like sft_route_threshold, with the threshold at this quantile of the training set's gaps."},
    )
    curriculum: bool = field(
        default=False, metadata={"help": "Train easy to hard: pairs in descending gap order, no shuffling."}
    )
    fp32_lm_head: bool = field(default=True, metadata={"help": FP32_LM_HEAD_HELP})
    gap_bucket_edges: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        metadata={"help": "Edges of the gap buckets for which reward accuracy and margin are logged."},
    )

    def __post_init__(self):
        super().__post_init__()
        apply_tf32_default(self)
        lookup(L.PAIR_LOSSES, self.pref_loss, "pref_loss", ValueError)
        for loss_type in self.loss_type:
            lookup(TRL_DPO_LOSSES, loss_type, "loss_type", ValueError)
        check_weight_knobs(self)
        if self.sft_route_threshold is not None and self.sft_route_quantile is not None:
            raise ValueError("set at most one of sft_route_threshold and sft_route_quantile")
        if self.sft_route_quantile is not None and not 0 < self.sft_route_quantile < 1:
            raise ValueError(f"sft_route_quantile must be in (0, 1), got {self.sft_route_quantile}")
        if self.uses_prefopt_loss:
            terms = [TRL_DPO_LOSSES.get(t).prefopt_term for t in self.loss_type]
            conflicts = {
                "loss_type": None in terms or terms.count("pair") != 1 or len(set(terms)) != len(terms),
                "ld_alpha": self.ld_alpha is not None,
                "use_weighting": self.use_weighting,
                "f_divergence_type": self.f_divergence_type != "reverse_kl",
            }
            bad = [name for name, conflict in conflicts.items() if conflict]
            if bad:
                pair, extra = TRL_DPO_LOSSES.names(prefopt_term="pair"), TRL_DPO_LOSSES.names(prefopt_term="chosen_nll")
                raise ValueError(
                    f"prefopt's losses replace TRL's: {bad} conflict with pref_loss {self.pref_loss!r} / "
                    f"SFT routing; expected loss_type to hold one of {pair} and at most {extra} (e.g. "
                    f"[sigmoid] or [sigmoid, sft]; got {self.loss_type}) and ld_alpha, use_weighting and "
                    f"f_divergence_type at their defaults (or pref_loss: stock without SFT routing)"
                )

    @property
    def routes_to_sft(self) -> bool:
        return self.sft_route_threshold is not None or self.sft_route_quantile is not None

    @property
    def uses_prefopt_loss(self) -> bool:
        return L.PAIR_LOSSES.get(self.pref_loss).replaces_trl or self.routes_to_sft

    @property
    def needs_gap(self) -> bool:
        """Whether training needs each pair's judged gap (the ``pref_gap`` column)."""
        return L.PAIR_LOSSES.get(self.pref_loss).uses_gap or self.routes_to_sft or self.curriculum


class PrefDPOTrainer(ExtraColumnMixin, WindowWeightsMixin, DPOTrainer):
    """DPOTrainer whose loss can use each pair's judged gap (column ``pref_gap`` of the train dataset)."""

    extra_key = GAP_KEY

    def __init__(self, model, ref_model=None, args: PrefDPOConfig | None = None, train_dataset=None, **kwargs):
        if args is not None and args.needs_gap and train_dataset is not None:
            require_finite_column(
                train_dataset,
                GAP_KEY,
                f"the judged gap of each pair, for pref_loss {args.pref_loss!r}, SFT routing or curriculum",
            )
        if args is not None and args.curriculum and train_dataset is not None:
            train_dataset = train_dataset.sort(GAP_KEY, reverse=True)
        with fp32_fused_lm_heads(trl_dpo_trainer, getattr(args, "fp32_lm_head", True)):
            super().__init__(model, ref_model=ref_model, args=args, train_dataset=train_dataset, **kwargs)
        self._wrap_collator()
        self.pair_loss = L.PAIR_LOSSES.get(self.args.pref_loss)
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

    def _window_weighted(self) -> bool:
        return self.args.uses_prefopt_loss and self.pair_loss.gap_weighted

    def _to_sft(self, gap: torch.Tensor) -> torch.Tensor:
        """Which pairs SFT routing sends to the chosen-response NLL (none without routing)."""
        if self.sft_threshold is None:
            return torch.zeros_like(gap, dtype=torch.bool)
        return gap < self.sft_threshold

    def _raw_weights(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``g(max(gap, 0))`` of each pair that takes the DPO loss (0 for pairs routed to SFT), and those pairs."""
        a, gap = self.args, batch[GAP_KEY]
        dpo = ~self._to_sft(gap)
        raw = L.raw_weights(gap, a.gap_transform, a.gap_scale, a.gap_clip_min, a.gap_clip_max)
        return torch.where(dpo, raw, torch.zeros_like(raw)), dpo

    def _sequence_logps(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Per-token policy log-probs (zero outside completions), the completion mask shifted like them, and the
        summed policy and reference log-probs of the chosen and rejected completions, as TRL computes them. Policy
        and reference run under the same autocast (``accelerator.autocast``, plus any the caller set) and project
        and log-softmax in fp32 (:func:`fp32_fused_lm_heads`)."""
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        model_kwargs = {
            k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
        }
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        with self.accelerator.autocast():
            outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1) :]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(
                self.ref_model if self.ref_model is not None else self.model, inputs
            )
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
        gap = inputs.get(GAP_KEY)
        weights = self._weights(inputs, torch.float32) if self._window_weighted() else None
        per_token_logps, shift_mask, chosen_logps, rejected_logps, ref_chosen, ref_rejected = self._sequence_logps(
            model, self._without_extra(inputs)
        )
        chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        h = chosen_logratios - rejected_logratios
        per_pair = self.pair_loss.target(h, self.beta, None if gap is None else gap.to(h.dtype), weights, self.args)
        to_sft = None
        if self.sft_threshold is not None:
            to_sft = self._to_sft(gap)
            chosen_lengths = shift_mask.chunk(2, dim=0)[0].sum(dim=1)  # completion tokens of each chosen
            per_pair = L.hybrid_dpo_sft(per_pair, L.length_normalized_nll(chosen_logps, chosen_lengths), to_sft)
        self._log_pair_metrics(
            chosen_logratios.detach(),
            rejected_logratios.detach(),
            chosen_logps.detach(),
            rejected_logps.detach(),
            gap,
            to_sft,
        )
        chosen_token_logps, chosen_mask = per_token_logps.chunk(2, dim=0)[0], shift_mask.chunk(2, dim=0)[0]
        terms = {
            "pair": per_pair.mean(),  # and TRL's `sft` term: NLL over every chosen token of the batch
            "chosen_nll": -chosen_token_logps[chosen_mask.bool()].mean(),
        }
        return sum(
            loss_weight * terms[TRL_DPO_LOSSES.get(loss_type).prefopt_term]
            for loss_type, loss_weight in zip(self.loss_types, self.loss_weights, strict=True)
        )

    def _log_pair_metrics(self, chosen_logratios, rejected_logratios, chosen_logps, rejected_logps, gap, to_sft):
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        gather = self.accelerator.gather
        chosen_rewards, rejected_rewards = self.beta * chosen_logratios, self.beta * rejected_logratios
        margins = gather(chosen_rewards - rejected_rewards)
        correct = (margins > 0).float()
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(correct.mean().item())
        metrics["rewards/margins"].append(margins.mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps).mean().item())
        if to_sft is not None:
            metrics["routed_to_sft"].append(gather(to_sft.float()).mean().item())
        if gap is None:
            return
        all_gaps = gather(gap.to(margins.device))
        metrics["gap/mean"].append(all_gaps.mean().item())
        metrics["gap/nonpositive"].append((all_gaps <= 0).float().mean().item())
        edges = [float("-inf"), *self.args.gap_bucket_edges, float("inf")]
        for low, high in zip(edges[:-1], edges[1:]):
            members = (all_gaps >= low) & (all_gaps < high)
            if members.any():
                name = f"gap[{low:g},{high:g})"
                metrics[f"rewards/accuracies_{name}"].append(correct[members].mean().item())
                metrics[f"rewards/margins_{name}"].append(margins[members].mean().item())
