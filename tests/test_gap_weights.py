"""Gap weights: g(max(gap, 0)), normalised to mean 1 over the whole optimizer step (accumulation window and ranks),
capped; property tests of the pure math, and the real trainer normalising over the window, not the micro-batch."""

import logging
import math
import subprocess

import pytest
import torch
import yaml
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers import AutoTokenizer

from prefopt.training import losses as L
from prefopt.training.data import to_conversational
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import trainer_config as config
from conftest import two_cpu_ranks

gaps = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=32)
windows = st.lists(gaps, min_size=1, max_size=32).map(lambda xs: torch.tensor(xs, dtype=torch.float32))
transforms = st.sampled_from(L.GAP_TRANSFORMS.names())
scales = st.floats(0.01, 10)
clips = st.tuples(st.floats(0, 1), st.floats(0.01, 2)).map(lambda c: (c[0], c[0] + c[1]))
caps = st.floats(1, 100)


@settings(max_examples=300, deadline=None)
@given(windows, transforms, scales, clips, caps)
def test_weights_are_finite_non_negative_capped_and_of_mean_one(window, transform, scale, clip, cap):
    raw = L.raw_weights(window, transform, scale, *clip)
    assert torch.isfinite(raw).all() and (raw >= 0).all()
    weights = L.gap_weights(raw, raw.sum(), len(raw), cap)
    assert torch.isfinite(weights).all() and (weights >= 0).all() and (weights <= cap).all()
    normalised = L.normalize_weights(raw, raw.sum(), len(raw))
    if raw.sum() > 0:
        assert normalised.mean().item() == pytest.approx(1.0, rel=1e-4)  # before the cap
        assert normalised.max() <= len(raw) * (1 + 1e-5)  # never a division by a number near 0
    else:
        assert torch.equal(weights, torch.zeros_like(raw))


@settings(max_examples=100, deadline=None)
@given(windows, st.sampled_from(["linear", "tanh"]), scales)
def test_a_pair_the_judge_does_not_prefer_weighs_zero(window, transform, scale):
    raw = L.raw_weights(window, transform, scale)
    assert torch.equal(raw[window <= 0], torch.zeros_like(raw[window <= 0]))
    assert (raw[window > 0] >= 0).all()


@pytest.mark.parametrize("window", [[0.0, 0.0, 0.0], [-0.5, -2.0], [-3.0], [0.0]])
def test_an_all_zero_or_all_negative_window_gets_weight_zero_not_a_blow_up(window):
    raw = L.raw_weights(torch.tensor(window), "linear")
    assert torch.equal(L.gap_weights(raw, raw.sum(), len(raw), 10.0), torch.zeros(len(window)))


@settings(max_examples=100, deadline=None)
@given(gaps, transforms, caps)
def test_a_window_of_one_pair_weighs_one_unless_its_weight_is_zero(gap, transform, cap):
    raw = L.raw_weights(torch.tensor([gap]), transform)
    expected = 1.0 if raw.item() > 0 else 0.0
    assert L.gap_weights(raw, raw.sum(), 1, cap).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(windows, st.integers(1, 31))
def test_a_micro_batch_is_weighted_by_its_window_not_by_itself(window, cut):
    raw = L.raw_weights(window, "linear")
    whole = L.gap_weights(raw, raw.sum(), len(raw), math.inf)
    cut = min(cut, len(raw))
    parts = torch.cat([L.gap_weights(part, raw.sum(), len(raw), math.inf) for part in (raw[:cut], raw[cut:])])
    assert torch.equal(parts, whole)


def test_the_cap_bounds_one_dominant_pair():
    raw = L.raw_weights(torch.tensor([100.0] + [0.01] * 99), "linear")
    weights = L.gap_weights(raw, raw.sum(), 100, 10.0)
    assert weights[0] == 10.0 and weights[1:].max() < 0.2


def pairs_with_gaps(margins, seed=3):
    rows = sample_problems(len(margins), Difficulty(min_ops=1, max_ops=2), seed=seed)
    return Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [r["solution"][:-1] + str((int(r["solution"][-1]) + 1) % 10) for r in rows],
            "margin": margins,
        }
    )


def one_sgd_step(path, tmp_path, data, **fields):
    """Train one optimizer step with plain SGD (the parameter change is -lr times the gradient); the trainer."""
    args = config(
        PrefDPOConfig,
        tmp_path,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        **fields,
    )
    trainer = PrefDPOTrainer(
        model=path, args=args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(path)
    )
    trainer.train()
    return trainer


def params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def assert_same_params(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol), name


def differ(a, b):
    return any(not torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_weights_are_normalised_over_the_accumulation_window(tiny_models, tmp_path):
    """Two micro-batches of one pair each (accumulated) step exactly like one batch of both pairs; with weights
    normalised per micro-batch they would both weigh 1, i.e. step like unweighted DPO."""
    path = tiny_models["policy"]
    data = to_conversational(pairs_with_gaps([0.1, 0.9]))
    weighted = {"pref_loss": "weighted", "gap_transform": "linear"}
    accumulated = one_sgd_step(
        path, tmp_path / "a", data, per_device_train_batch_size=1, gradient_accumulation_steps=2, **weighted
    )
    together = one_sgd_step(path, tmp_path / "b", data, per_device_train_batch_size=2, **weighted)
    unweighted = one_sgd_step(path, tmp_path / "c", data, per_device_train_batch_size=2, pref_loss="sigmoid")
    assert_same_params(params(accumulated), params(together))
    assert differ(params(accumulated), params(unweighted))
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (accumulated, together)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    # The loss is the window mean of w_i * l_i, with w = (0.2, 1.8): each gap times 2 / (0.1 + 0.9).
    plain = PrefDPOTrainer(
        model=path,
        args=config(PrefDPOConfig, tmp_path / "d", pref_loss="sigmoid"),
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    plain.model.train()
    with torch.no_grad():
        per_pair = [plain.compute_loss(plain.model, plain.data_collator([plain.train_dataset[i]])) for i in (0, 1)]
    assert losses[0][0] == pytest.approx(((0.2 * per_pair[0] + 1.8 * per_pair[1]) / 2).item(), abs=1e-5)
    logs = next(e for e in accumulated.state.log_history if "loss" in e)
    assert logs["weights/mean"] == pytest.approx(1.0) and logs["weights/all_zero_window"] == 0.0


def test_a_window_the_judge_never_prefers_contributes_no_gradient_and_says_so(tiny_models, tmp_path, caplog):
    path = tiny_models["policy"]
    data = to_conversational(pairs_with_gaps([0.0, -0.4, -0.1, 0.0]))
    before = params(
        PrefDPOTrainer(
            model=path,
            args=config(PrefDPOConfig, tmp_path / "x", pref_loss="sigmoid"),
            train_dataset=data,
            processing_class=AutoTokenizer.from_pretrained(path),
        )
    )
    with caplog.at_level(logging.WARNING, logger="prefopt.training.trainer_base"):
        trainer = one_sgd_step(
            path,
            tmp_path / "a",
            data,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            pref_loss="weighted",
            gap_transform="linear",
        )
    assert_same_params(params(trainer), before, atol=0)
    logs = next(e for e in trainer.state.log_history if "loss" in e)
    assert logs["loss"] == 0.0
    assert logs["weights/all_zero_window"] == 1.0 and logs["weights/zero"] == 1.0 and logs["gap/nonpositive"] == 1.0
    assert "every weight of the 4 examples of this optimizer step is 0" in caplog.text


def test_weights_are_normalised_over_all_ranks(tiny_models, tmp_path):
    """Two CPU processes of one pair each step exactly like one process with both pairs."""
    path = tiny_models["policy"]
    pairs = pairs_with_gaps([0.1, 0.9])
    pairs.save_to_disk(str(tmp_path / "pairs" / "data"))
    fields = {"pref_loss": "weighted", "gap_transform": "linear"}
    together = one_sgd_step(path, tmp_path / "one", to_conversational(pairs), per_device_train_batch_size=2, **fields)
    cfg = {
        "pairs_path": str(tmp_path / "pairs"),
        "model_name_or_path": path,
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "per_device_train_batch_size": 1,
        "max_steps": 1,
        "max_length": 64,
        "logging_steps": 1,
        "seed": 0,
        "optim": "sgd",
        "learning_rate": 1.0,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "use_cpu": True,
        **fields,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    command = two_cpu_ranks("prefopt.training.dpo", tmp_path / "train.yaml")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'gap/mean': '0.5'" in result.stdout  # the gathered gaps of both ranks: (0.1 + 0.9) / 2
    saved = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    ours = params(together)
    assert_same_params({n: saved[n] for n in ours if n in saved}, {n: ours[n] for n in ours if n in saved})
    assert len([n for n in ours if n in saved]) >= len(ours) - 1  # all but a tied embedding
