"""Implicit reward margins of a DPO-trained model against its reference, for every pair of a dataset.

``h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]``: the quantity DPO raises, and
Less is More's implicit margin ``m_im`` (no beta). Computed by :meth:`PrefDPOTrainer.pair_logratios`, so the
pairs are tokenised, truncated and scored exactly as the proxy was trained on them; the reference is loaded as TRL
loads the policy (``model_init_kwargs``; the dtype the proxy trained in by default: bfloat16 on CUDA, float32 on
CPU), so both go through the same precision path.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoTokenizer
from trl.trainer.utils import create_model_from_path

from prefopt.training.data import to_conversational
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.training.launch import default_dtype, trl_defaults


def pair_logratios(
    policy_path: str, reference_path: str, pairs: Dataset, trl: dict[str, Any] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of ``pairs`` (prompt/chosen/rejected), in order: the chosen and the rejected log-ratio.

    ``trl`` holds PrefDPOConfig fields (those that shape tokenisation matter: ``max_length``,
    ``truncation_mode``); the same ones the policy was trained with give consistent margins.
    """
    fields = {
        "model_init_kwargs": {"dtype": default_dtype()},
        **trl_defaults(),
        **(trl or {}),
        "per_device_eval_batch_size": batch_size,
        "pref_loss": "stock",
    }
    for training_only in ("sft_route_threshold", "sft_route_quantile", "curriculum"):
        fields.pop(training_only, None)
    with tempfile.TemporaryDirectory() as scratch:
        args = PrefDPOConfig(output_dir=scratch, **fields)
        reference = create_model_from_path(reference_path, **(args.model_init_kwargs or {}))
        trainer = PrefDPOTrainer(
            model=policy_path,
            ref_model=reference,
            args=args,
            train_dataset=to_conversational(
                pairs.select_columns(["prompt", "chosen", "rejected"]).add_column("margin", [0.0] * len(pairs))
            ),
            processing_class=AutoTokenizer.from_pretrained(policy_path),
        )
        chosen, rejected = trainer.pair_logratios()
    if len(chosen) != len(pairs):
        raise ValueError(
            f"{len(pairs) - len(chosen)} of {len(pairs)} pairs have prompts that fill max_length "
            f"({fields.get('max_length')}); raise max_length to score them"
        )
    return chosen.numpy(), rejected.numpy()
