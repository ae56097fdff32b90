"""Implicit reward margins of a DPO-trained model against its reference, for every pair of a dataset.

``h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]``: the quantity DPO raises, and
Less is More's implicit margin ``m_im`` (no beta). Computed by :meth:`PrefDPOTrainer.pair_logratios`, so the
pairs are tokenised, truncated and scored exactly as the proxy was trained on them; the reference is loaded as TRL
loads the policy (``model_init_kwargs``; the dtype the proxy trained in by default: bfloat16 on CUDA, float32 on
CPU), so both go through the same precision path.

Batches are per device: :func:`pair_logratios` scores on this process's one device (never a batch of
``batch_size`` x GPUs on the first GPU) and releases the trainer and both models when done;
:func:`score_pair_logratios` runs it in this process on one GPU or the CPU, and with several GPUs visible launches
one rank per GPU (``accelerate launch``), each scoring its share in batches of ``batch_size``, its memory returned
when the ranks exit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer
from trl.trainer.utils import create_model_from_path

from prefopt.cache import atomic_write
from prefopt.engines.base import release_memory
from prefopt.processes import ChildFailed, run_child
from prefopt.training.data import to_conversational
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.training.launch import default_dtype, trl_defaults

LOGRATIOS_FILE = "logratios.npz"


def scoring_fields(trl: dict[str, Any] | None, batch_size: int) -> dict[str, Any]:
    """The PrefDPOConfig fields of a scoring run: the proxy's own (tokenisation), ``batch_size`` per device."""
    fields = {
        "model_init_kwargs": {"dtype": default_dtype()},
        **trl_defaults(),
        **(trl or {}),
        "per_device_eval_batch_size": batch_size,
        "pref_loss": "stock",
    }
    for training_only in ("sft_route_threshold", "sft_route_quantile", "curriculum"):
        fields.pop(training_only, None)
    return fields


def pair_logratios(
    policy_path: str, reference_path: str, pairs: Dataset, trl: dict[str, Any] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of ``pairs`` (prompt/chosen/rejected), in order: the chosen and the rejected log-ratio.

    ``trl`` holds PrefDPOConfig fields (those that shape tokenisation matter: ``max_length``,
    ``truncation_mode``); the same ones the policy was trained with give consistent margins. ``batch_size`` pairs
    per forward pass on this process's device (under ``accelerate launch``, on each rank's). The trainer and both
    models are released before it returns.
    """
    fields = scoring_fields(trl, batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        args = PrefDPOConfig(output_dir=scratch, **fields)
        if args.n_gpu > 1:  # one process seeing several GPUs: score on its first only, batch_size at a time
            args._n_gpu = 1
        reference = create_model_from_path(reference_path, **(args.model_init_kwargs or {}))
        trainer = PrefDPOTrainer(
            model=policy_path,
            ref_model=reference,
            args=args,
            train_dataset=to_conversational(
                pairs.select_columns(_pair_columns(pairs)).add_column("margin", [0.0] * len(pairs))
            ),
            processing_class=AutoTokenizer.from_pretrained(policy_path),
        )
        try:
            chosen, rejected = trainer.pair_logratios()
        finally:
            release_trainer(trainer)
            del trainer, reference
            release_memory()
    if len(chosen) != len(pairs):
        raise ValueError(
            f"{len(pairs) - len(chosen)} of {len(pairs)} pairs have prompts that fill max_length "
            f"({fields.get('max_length')}); raise max_length to score them"
        )
    return chosen.numpy(), rejected.numpy()


def release_trainer(trainer) -> None:
    """Drop every reference the trainer and its accelerator hold to the models, so that they can be freed."""
    trainer.accelerator.free_memory()
    for name in ("model", "model_wrapped", "ref_model", "optimizer", "lr_scheduler"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)


def _pair_columns(pairs: Dataset) -> list[str]:
    """The columns scored: the prompt (with its conversation, ``prompt_messages``, where the pairs have one), the
    replies."""
    return [c for c in ("prompt", "prompt_messages", "chosen", "rejected") if c in pairs.column_names]


def score_pair_logratios(
    policy_path: str,
    reference_path: str,
    pairs: Dataset,
    trl: dict[str, Any] | None = None,
    batch_size: int = 32,
    num_processes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pair_logratios` over every visible GPU: in this process with one GPU or none, else one rank per GPU
    under ``accelerate launch`` (``num_processes`` ranks; on the CPU that many gloo ranks, for tests)."""
    import torch

    ranks = num_processes or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    if ranks <= 1:
        return pair_logratios(policy_path, reference_path, pairs, trl, batch_size)
    with tempfile.TemporaryDirectory(prefix="prefopt-scoring-") as scratch:
        work = Path(scratch)
        pairs.select_columns(_pair_columns(pairs)).save_to_disk(str(work / "pairs"))
        on_cpu = not torch.cuda.is_available()
        config = {
            "policy": policy_path,
            "reference": reference_path,
            "pairs": str(work / "pairs"),
            "trl": {**(trl or {}), **({"use_cpu": True} if on_cpu else {})},
            "batch_size": batch_size,
            "output": str(work / LOGRATIOS_FILE),
        }
        (work / "scoring.yaml").write_text(yaml.safe_dump(config))
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(ranks),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "prefopt.training.implicit",
            "--config",
            str(work / "scoring.yaml"),
        ]
        returncode = run_child(command)
        if returncode != 0:
            raise ChildFailed(f"scoring the implicit margins on {ranks} ranks failed (exit {returncode})")
        with np.load(work / LOGRATIOS_FILE) as saved:
            return saved["chosen"], saved["rejected"]


def main(argv: list[str] | None = None) -> None:
    """One rank of :func:`score_pair_logratios`: its share of the pairs; the main rank writes all of them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    config = yaml.safe_load(Path(parser.parse_args(argv).config).read_text())
    pairs = load_from_disk(config["pairs"])
    chosen, rejected = pair_logratios(config["policy"], config["reference"], pairs, config["trl"], config["batch_size"])
    from accelerate import PartialState

    if PartialState().is_main_process:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, chosen=chosen, rejected=rejected)

        atomic_write(Path(config["output"]), write)


if __name__ == "__main__":
    main()
