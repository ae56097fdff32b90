"""PrefKTOTrainer against TRL's KTOTrainer: equal at unit weights; score weights and class balance act."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import KTOConfig, KTOTrainer

from conftest import assert_same_loss_and_grads
from conftest import trainer_config as config
from prefopt.training.trainers import SCORE_KEY, PrefKTOConfig, PrefKTOTrainer
from prefopt.world.tasks import Difficulty, sample_problems


@pytest.fixture(scope="module")
def unpaired():
    rows = sample_problems(12, Difficulty(min_ops=1, max_ops=2), seed=4)
    good = [i % 4 != 3 for i in range(12)]  # 9 desirable, 3 undesirable
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": r["problem"]}] for r in rows],
        "completion": [[{"role": "assistant", "content": r["solution"] if g else r["solution"][:-1] + "0"}]
                       for r, g in zip(rows, good)],
        "label": good,
        SCORE_KEY: [0.9 if g else 0.1 + 0.02 * i for i, g in enumerate(good)],
    })




def test_unit_weights_equal_stock_trl_kto(unpaired, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    stock = KTOTrainer(model=path, args=config(KTOConfig, tmp_path / "s"), train_dataset=unpaired.remove_columns(SCORE_KEY),
                       processing_class=tok)
    ours = PrefKTOTrainer(model=path, args=config(PrefKTOConfig, tmp_path / "o", score_weighting=True,
                                                  gap_transform="none"),
                          train_dataset=unpaired, processing_class=tok)
    examples = [i for i in range(4)]
    ours_batch = ours.data_collator([ours.train_dataset[i] for i in examples])
    assert SCORE_KEY in ours_batch
    assert_same_loss_and_grads(ours, ours_batch, stock, stock.data_collator([stock.train_dataset[i] for i in examples]))


def test_score_weights_and_class_balance(unpaired, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    plain = PrefKTOTrainer(model=path, args=config(PrefKTOConfig, tmp_path / "p", score_weighting=True,
                                                   gap_transform="none"), train_dataset=unpaired, processing_class=tok)
    weighted = PrefKTOTrainer(model=path, args=config(PrefKTOConfig, tmp_path / "w", score_weighting=True,
                                                      gap_transform="linear", normalize_weights=False,
                                                      auto_class_balance=True),
                              train_dataset=unpaired, processing_class=tok)
    assert (weighted.desirable_weight, weighted.undesirable_weight) == pytest.approx((12 / 18, 12 / 6))
    for i in range(len(unpaired)):
        example = weighted.train_dataset[i]
        score, desirable = example[SCORE_KEY], example["label"]
        class_weight = 12 / 18 if desirable else 2.0
        # Batches of two identical examples keep the KL estimate identical between the two trainers.
        plain_loss = plain.compute_loss(plain.model, plain.data_collator([plain.train_dataset[i]] * 2))
        ours = weighted.compute_loss(weighted.model, weighted.data_collator([example] * 2))
        assert torch.allclose(ours, plain_loss * class_weight * abs(score - 0.5), atol=1e-6)


def test_kto_training_runs_and_logs(unpaired, tiny_models, tmp_path):
    path = tiny_models["policy"]
    trainer = PrefKTOTrainer(model=path, args=config(PrefKTOConfig, tmp_path, score_weighting=True, max_steps=2,
                                                     logging_steps=1, precompute_ref_log_probs=True,
                                                     auto_class_balance=True),
                             train_dataset=unpaired, processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 2 and "score_weight/mean" in logs[0] and "kl" in logs[0]
