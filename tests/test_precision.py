"""Policy and reference log-probabilities go through one fp32 projection and log-softmax under any autocast.

The pair log-ratio h under bf16 mixed precision (``bf16=True`` on the CPU, i.e. accelerate's bf16 autocast) stays
within TOLERANCE nats of its fp32 value on every pair. Measured on these tiny models and pairs: at most 0.0048
nats with prefopt's path; 0.014 with TRL's head as it is (logits rounded to bf16 before the log-softmax); 0.028
with the old path (the policy outside autocast, the reference in bf16 weights under autocast).
"""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path

from prefopt.training.data import to_conversational
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.training.kto_trainer import PrefKTOConfig
from prefopt.training.trainer_base import tf32_default
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import trainer_config as config

TOLERANCE = 0.008  # nats, on |h_bf16 - h_fp32| of every pair


@pytest.fixture(scope="module")
def pairs():
    rows = sample_problems(16, Difficulty(min_ops=1, max_ops=2), seed=3)
    return to_conversational(
        Dataset.from_dict(
            {
                "prompt": [r["problem"] for r in rows],
                "chosen": [r["solution"] for r in rows],
                "rejected": [r["solution"][:-1] + str((int(r["solution"][-1]) + 1) % 10) for r in rows],
                "margin": [i / 15 for i in range(16)],
            }
        )
    )


def trainer(tiny_models, pairs, tmp_path, reference: str | None, **fields):
    path = tiny_models["policy"]
    ref = None if reference is None else create_model_from_path(tiny_models[reference])  # as TRL loads the policy
    return PrefDPOTrainer(
        model=path,
        ref_model=ref,
        args=config(PrefDPOConfig, tmp_path, per_device_eval_batch_size=8, **fields),
        train_dataset=pairs,
        processing_class=AutoTokenizer.from_pretrained(path),
    )


def margins(trainer) -> torch.Tensor:
    chosen, rejected = trainer.pair_logratios()
    return chosen - rejected


def test_bf16_mixed_precision_pair_logratios_match_fp32(tiny_models, pairs, tmp_path):
    fp32 = margins(trainer(tiny_models, pairs, tmp_path / "fp32", "strong"))
    bf16_trainer = trainer(tiny_models, pairs, tmp_path / "bf16", "strong", bf16=True, use_cpu=True)
    assert bf16_trainer.accelerator.mixed_precision == "bf16"
    bf16 = margins(bf16_trainer)
    assert fp32.abs().max() > 0.1  # policy and reference differ: the margins are not trivially 0
    assert (bf16 - fp32).abs().max() <= TOLERANCE
    # Without the fp32 head (TRL's as it is: bf16 logits under autocast) the same run is further off.
    for model in (bf16_trainer.model, bf16_trainer.ref_model):
        add_fused_lm_head(model)
    assert (margins(bf16_trainer) - fp32).abs().max() > TOLERANCE


def test_a_policy_equal_to_its_reference_has_margin_zero_under_bf16(tiny_models, pairs, tmp_path):
    """Policy and reference go through the very same computation, so equal weights give h = 0 exactly."""
    bf16_trainer = trainer(tiny_models, pairs, tmp_path, None, bf16=True, use_cpu=True)
    assert torch.equal(margins(bf16_trainer), torch.zeros(len(pairs)))


@pytest.mark.parametrize(
    ("tf32", "mixed", "available", "expected"),
    [
        (None, True, True, True),  # bf16/fp16 on a GPU with TF32: the fp32 head's matmuls on tensor cores
        (None, True, False, None),  # a CPU or an older GPU: left unset
        (None, False, True, None),  # fp32 training: every matmul stays IEEE fp32
        (False, True, True, False),  # an explicit choice is kept
        (True, False, True, True),
    ],
)
def test_tf32_default(tf32, mixed, available, expected):
    assert tf32_default(tf32, mixed, lambda: available) is expected


def test_configs_leave_tf32_unset_without_a_gpu(tmp_path):
    for cls in (PrefDPOConfig, PrefKTOConfig):
        assert cls(output_dir=str(tmp_path), bf16=True, use_cpu=True, report_to="none").tf32 is None


def test_fp32_lm_head_false_is_trls_head_as_shipped(tiny_models, pairs, tmp_path):
    """``fp32_lm_head: false`` gives exactly the margins of TRL's own head under bf16 autocast."""
    shipped = trainer(tiny_models, pairs, tmp_path / "a", "strong", bf16=True, use_cpu=True, fp32_lm_head=False)
    patched = trainer(tiny_models, pairs, tmp_path / "b", "strong", bf16=True, use_cpu=True)
    ours = margins(patched)
    for model in (patched.model, patched.ref_model):
        add_fused_lm_head(model)  # TRL's head, reinstalled without the fp32 cast
    assert torch.equal(margins(shipped), margins(patched))
    assert not torch.equal(margins(shipped), ours)
