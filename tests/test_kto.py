"""PrefKTOTrainer against TRL's KTOTrainer: equal at unit weights; score weights and class balance act."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import KTOConfig, KTOTrainer

from prefopt.training.kto_trainer import SCORE_KEY, PrefKTOConfig, PrefKTOTrainer
from prefopt.training.trainer_base import WINDOW_KEY
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import assert_same_loss_and_grads
from conftest import trainer_config as config


@pytest.fixture(scope="module")
def unpaired():
    rows = sample_problems(12, Difficulty(min_ops=1, max_ops=2), seed=4)
    good = [i % 4 != 3 for i in range(12)]  # 9 desirable, 3 undesirable
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": r["problem"]}] for r in rows],
            "completion": [
                [{"role": "assistant", "content": r["solution"] if g else r["solution"][:-1] + "0"}]
                for r, g in zip(rows, good)
            ],
            "label": good,
            SCORE_KEY: [0.9 if g else 0.1 + 0.02 * i for i, g in enumerate(good)],
        }
    )


def test_unit_weights_equal_stock_trl_kto(unpaired, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    stock = KTOTrainer(
        model=path,
        args=config(KTOConfig, tmp_path / "s"),
        train_dataset=unpaired.remove_columns(SCORE_KEY),
        processing_class=tok,
    )
    ours = PrefKTOTrainer(
        model=path,
        args=config(PrefKTOConfig, tmp_path / "o", score_weighting=True, gap_transform="none"),
        train_dataset=unpaired,
        processing_class=tok,
    )
    examples = [i for i in range(4)]
    ours_batch = ours.data_collator([ours.train_dataset[i] for i in examples])
    assert SCORE_KEY in ours_batch
    assert_same_loss_and_grads(ours, ours_batch, stock, stock.data_collator([stock.train_dataset[i] for i in examples]))


def test_score_weights_and_class_balance(unpaired, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    plain = PrefKTOTrainer(
        model=path,
        args=config(PrefKTOConfig, tmp_path / "p", score_weighting=True, gap_transform="none"),
        train_dataset=unpaired,
        processing_class=tok,
    )
    weighted = PrefKTOTrainer(
        model=path,
        args=config(
            PrefKTOConfig,
            tmp_path / "w",
            score_weighting=True,
            gap_transform="linear",
            normalize_weights=False,
            auto_class_balance=True,
        ),
        train_dataset=unpaired,
        processing_class=tok,
    )
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
    trainer = PrefKTOTrainer(
        model=path,
        args=config(
            PrefKTOConfig,
            tmp_path,
            score_weighting=True,
            max_steps=2,
            logging_steps=1,
            precompute_ref_log_probs=True,
            auto_class_balance=True,
        ),
        train_dataset=unpaired,
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 2 and "weights/mean" in logs[0] and "kl" in logs[0]


def test_score_weights_are_normalised_over_the_accumulation_window(unpaired, tiny_models, tmp_path):
    """The window hook sums the raw weights of every micro-batch; each micro-batch's loss uses that sum."""
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    plain = PrefKTOTrainer(
        model=path,
        args=config(PrefKTOConfig, tmp_path / "p", score_weighting=True, gap_transform="none"),
        train_dataset=unpaired,
        processing_class=tok,
    )
    ours = PrefKTOTrainer(
        model=path,
        args=config(
            PrefKTOConfig,
            tmp_path / "w",
            score_weighting=True,
            gap_transform="linear",
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
        ),
        train_dataset=unpaired,
        processing_class=tok,
    )
    examples = [ours.train_dataset[i] for i in (0, 3)]
    raw = [abs(e[SCORE_KEY] - 0.5) for e in examples]
    # Batches of two identical examples keep the KL estimate identical between the two trainers.
    batches, _ = ours.get_batch_samples(iter([ours.data_collator([e] * 2) for e in examples]), 2, ours.args.device)
    assert batches[0][WINDOW_KEY].tolist() == pytest.approx([2 * sum(raw), 4])
    ours.model.train()
    plain.model.train()
    for example, batch, r in zip(examples, batches, raw):
        plain_loss = plain.compute_loss(plain.model, plain.data_collator([example] * 2))
        weight = r * 4 / (2 * sum(raw))
        assert torch.allclose(ours.compute_loss(ours.model, batch), plain_loss * weight, atol=1e-6)


def test_unknown_kto_loss_types_and_non_finite_scores_are_errors(unpaired, tiny_models, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"loss_type: unknown loss_type 'ktoo' \(did you mean 'kto'\?\); expected one "
        r"of \['kto', 'apo_zero_unpaired'\]",
    ):
        config(PrefKTOConfig, tmp_path, loss_type="ktoo")
    with pytest.raises(ValueError, match="score_weighting: needs loss_type in \\['kto'\\], got 'apo_zero_unpaired'"):
        config(PrefKTOConfig, tmp_path, loss_type="apo_zero_unpaired", score_weighting=True)
    scores = unpaired[SCORE_KEY]
    broken = unpaired.remove_columns(SCORE_KEY).add_column(SCORE_KEY, [float("nan")] + scores[1:])
    with pytest.raises(ValueError, match="pref_score: 1 of 12 values are not finite"):
        PrefKTOTrainer(
            model=tiny_models["policy"],
            args=config(PrefKTOConfig, tmp_path, score_weighting=True),
            train_dataset=broken,
            processing_class=AutoTokenizer.from_pretrained(tiny_models["policy"]),
        )
