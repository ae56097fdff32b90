"""PrefDPOTrainer against TRL itself: equal to stock sigmoid DPO, and the gap-aware paths train for real."""

import json
import subprocess

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from prefopt.training.data import to_conversational
from prefopt.training.dpo_trainer import TRL_DPO_LOSSES, PrefDPOConfig, PrefDPOTrainer
from prefopt.training.trainer_base import GAP_KEY
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import CI_RECIPE, assert_same_loss_and_grads, two_cpu_ranks
from conftest import trainer_config as config


def corrupt(solution: str) -> str:
    return solution[:-1] + str((int(solution[-1]) + 1) % 10)


@pytest.fixture(scope="module")
def pairs():
    rows = sample_problems(16, Difficulty(min_ops=1, max_ops=2), seed=3)
    return Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [corrupt(r["solution"]) for r in rows],
            "margin": [i / 15 for i in range(16)],
        }
    )


def first_batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


@pytest.mark.parametrize(
    "pref",
    [
        {"pref_loss": "sigmoid"},
        {"pref_loss": "weighted", "gap_transform": "none"},
        {"pref_loss": "offset", "offset_alpha": 0.0},
        {"pref_loss": "sigmoid", "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
    ],
)
def test_unit_weight_equals_stock_trl_sigmoid_loss_and_gradients(pairs, tiny_models, tmp_path, pref):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    data = to_conversational(pairs)
    trl_fields = {k: v for k, v in pref.items() if k in ("loss_type", "loss_weights")}
    stock = DPOTrainer(
        model=path,
        args=config(DPOConfig, tmp_path / "stock", **trl_fields),
        train_dataset=data.remove_columns(GAP_KEY),
        processing_class=tok,
    )
    ours = PrefDPOTrainer(
        model=path, args=config(PrefDPOConfig, tmp_path / "ours", **pref), train_dataset=data, processing_class=tok
    )
    ours_batch = first_batch(ours)
    assert ours_batch[GAP_KEY].tolist() == pytest.approx([0, 1 / 15, 2 / 15, 3 / 15])
    assert_same_loss_and_grads(ours, ours_batch, stock, first_batch(stock))


def test_weighted_loss_is_the_gap_weighted_mean(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    data = to_conversational(pairs)
    plain = PrefDPOTrainer(
        model=path,
        args=config(PrefDPOConfig, tmp_path / "a", pref_loss="sigmoid"),
        train_dataset=data,
        processing_class=tok,
    )
    weighted = PrefDPOTrainer(
        model=path,
        args=config(
            PrefDPOConfig, tmp_path / "b", pref_loss="weighted", gap_transform="linear", normalize_weights=False
        ),
        train_dataset=data,
        processing_class=tok,
    )
    # Pairs one at a time: the weighted loss of each is its gap times its plain loss.
    for i in (1, 5, 9):
        plain_i = plain.compute_loss(plain.model, plain.data_collator([plain.train_dataset[i]]))
        weighted_i = weighted.compute_loss(weighted.model, weighted.data_collator([weighted.train_dataset[i]]))
        assert torch.allclose(weighted_i, plain_i * i / 15, atol=1e-6)


def test_routing_everything_to_sft_gives_the_chosen_per_token_nll(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    trainer = PrefDPOTrainer(
        model=path,
        args=config(PrefDPOConfig, tmp_path, sft_route_threshold=2.0),
        train_dataset=to_conversational(pairs),
        processing_class=tok,
    )
    example = trainer.train_dataset[0]
    loss = trainer.compute_loss(trainer.model, trainer.data_collator([example]))
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([example["prompt_ids"] + example["chosen_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    expected = -logp[len(example["prompt_ids"]) - 1 :].mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_training_with_precomputed_reference_routing_and_curriculum_logs_gap_metrics(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    args = config(
        PrefDPOConfig,
        tmp_path,
        pref_loss="weighted",
        sft_route_quantile=0.25,
        curriculum=True,
        precompute_ref_log_probs=True,
        max_steps=3,
        gradient_accumulation_steps=2,
    )
    trainer = PrefDPOTrainer(
        model=path,
        args=args,
        train_dataset=to_conversational(pairs),
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    assert trainer.train_dataset[0][GAP_KEY] == 1.0  # easiest (largest gap) first
    assert trainer.sft_threshold == pytest.approx(torch.quantile(torch.tensor(pairs["margin"]), 0.25).item())
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    # Step 1 sees the 8 largest gaps (none below the quartile), step 2 the 8 smallest (4 of them below it).
    assert [entry["routed_to_sft"] for entry in logs[:2]] == [0.0, 0.5]
    assert logs[0]["gap/mean"] > logs[1]["gap/mean"]
    assert any(key.startswith("rewards/accuracies_gap[") for key in logs[0])


def test_lora_training_uses_the_adapter_disabled_reference(pairs, tiny_models, tmp_path):
    from peft import LoraConfig

    path = tiny_models["policy"]
    data = to_conversational(pairs)
    trainer = PrefDPOTrainer(
        model=path,
        args=config(PrefDPOConfig, tmp_path, pref_loss="soft_label", max_steps=2),
        train_dataset=data,
        eval_dataset=data.select(range(8)),
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    trainer.train()
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 2
    metrics = trainer.evaluate()  # the eval loop goes through the same gap-aware loss
    assert {"eval_loss", "eval_rewards/accuracies", "eval_gap/mean"} <= set(metrics)
    assert metrics["eval_gap/mean"] == pytest.approx(sum(i / 15 for i in range(8)) / 8)


def test_a_missing_gap_column_is_named(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    with pytest.raises(ValueError, match="needs a 'pref_gap' column"):
        PrefDPOTrainer(
            model=path,
            args=config(PrefDPOConfig, tmp_path, pref_loss="weighted"),
            train_dataset=to_conversational(pairs).remove_columns(GAP_KEY),
            processing_class=AutoTokenizer.from_pretrained(path),
        )


def test_two_process_cpu_data_parallel_training(pairs, tiny_models, tmp_path):
    """Two gloo processes on the CPU (`accelerate launch --multi_gpu --num_processes 2` with `use_cpu`; `--cpu
    --num_processes 2` would run one) on the real entry point, a few steps, model saved."""
    pairs_dir = tmp_path / "pairs"
    pairs.save_to_disk(str(pairs_dir / "data"))
    cfg = {
        "pairs_path": str(pairs_dir),
        "model_name_or_path": tiny_models["policy"],
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "per_device_train_batch_size": 2,
        "max_steps": 3,
        "max_length": 64,
        "logging_steps": 1,
        "pref_loss": "weighted",
        "sft_route_threshold": 0.2,
        "use_cpu": True,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    command = two_cpu_ranks("prefopt.training.dpo", tmp_path / "train.yaml")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert "'routed_to_sft'" in result.stdout + result.stderr
    assert "'epoch': '0.75'" in result.stdout  # 3 steps of 2 ranks x 2 pairs: 12 of the 16 pairs


def test_every_accelerate_config_parses():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((Path(__file__).parents[1] / "accelerate_configs").glob("*.yaml"))
    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in configs}
    assert kinds == {
        "cpu": "NO",
        "single_gpu": "NO",
        "multi_gpu": "MULTI_GPU",
        "fsdp2": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }


def test_training_resumes_from_its_last_checkpoint(pairs, tiny_models, tmp_path, caplog):
    import logging

    from prefopt.training.dpo import main

    pairs.save_to_disk(str(tmp_path / "pairs" / "data"))
    cfg = {
        "pairs_path": str(tmp_path / "pairs"),
        "model_name_or_path": tiny_models["policy"],
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "max_length": 64,
        "save_strategy": "steps",
        "save_steps": 1,
        "max_steps": 2,
        "logging_steps": 1,
        "pref_loss": "weighted",
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    main(["--config", str(tmp_path / "train.yaml")])
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    with caplog.at_level(logging.INFO, logger="prefopt.training.entry"):
        main(["--config", str(tmp_path / "train.yaml"), "--max_steps", "3"])
    assert f"Resuming from {tmp_path / 'out' / 'checkpoint-2'}" in caplog.text
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and len([e for e in state["log_history"] if "loss" in e]) == 3


@pytest.mark.parametrize(
    "trl, expected",
    [
        (
            {"loss_type": ["foo"]},
            "training.trl: loss_type: unknown loss_type 'foo'; expected one of ['sigmoid', 'hinge'",
        ),
        (
            {"loss_type": ["sigmoid", "sft", "sigmod"]},
            "loss_type: unknown loss_type 'sigmod' (did you mean 'sigmoid'?)",
        ),
        (
            {"pref_loss": "wieghted"},
            (
                "training.trl: pref_loss: unknown loss 'wieghted' (did you mean 'weighted'?); "
                "expected one of ['offset', 'sigmoid', 'soft_label', 'stock', 'weighted']"
            ),
        ),
        (
            {"pref_loss": "weighted", "gap_transform": "sqrt"},
            "gap_transform: unknown gap transform 'sqrt'; expected one of ['none', 'linear', 'clipped', 'tanh']",
        ),
        ({"pref_loss": "weighted", "loss_type": ["hinge"]}, "prefopt's losses replace TRL's: ['loss_type'] conflict"),
        ({"pref_loss": "weighted", "max_weight": 0.5}, "max_weight: expected a finite number >= 1"),
        ({"pref_loss": "weighted", "gap_scale": -1.0}, "gap_scale: expected a number > 0, got -1.0"),
        (
            {"pref_loss": "weighted", "gap_clip_min": 0.5, "gap_clip_max": 0.5},
            "expected 0 <= gap_clip_min < gap_clip_max",
        ),
    ],
)
def test_unknown_names_and_bad_weight_knobs_fail_at_recipe_load(tmp_path, trl, expected):
    from prefopt.errors import ConfigError
    from prefopt.recipe import load_recipe

    recipe = yaml.safe_load(CI_RECIPE.read_text())
    recipe["training"]["trl"].update(trl)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as err:
        load_recipe(tmp_path / "recipe.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_kto_loss_type_fails_at_recipe_load(tmp_path):
    from prefopt.errors import ConfigError
    from prefopt.recipe import load_recipe

    recipe = yaml.safe_load(CI_RECIPE.read_text())
    recipe["training"]["method"] = "kto"
    recipe["training"]["trl"]["loss_type"] = "foo"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(
        ConfigError,
        match=r"training.trl: loss_type: unknown loss_type 'foo'; expected one of "
        r"\['kto', 'apo_zero_unpaired'\]",
    ):
        load_recipe(tmp_path / "recipe.yaml")


def test_the_registered_trl_loss_types_are_those_trl_computes():
    """prefopt's list of TRL's DPO loss types is the set of names TRL 1.16's _compute_loss dispatches on."""
    import inspect
    import re

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert set(re.findall(r'loss_type == "(\w+)"', source)) == set(TRL_DPO_LOSSES.names())
    assert TRL_DPO_LOSSES.names(prefopt_term="pair") == ["sigmoid"]
    assert TRL_DPO_LOSSES.names(prefopt_term="chosen_nll") == ["sft"]


def test_sft_before_sigmoid_is_the_same_loss(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    tok = AutoTokenizer.from_pretrained(path)
    data = to_conversational(pairs)
    a, b = (
        PrefDPOTrainer(
            model=path,
            args=config(PrefDPOConfig, tmp_path / name, pref_loss="sigmoid", loss_type=order, loss_weights=weights),
            train_dataset=data,
            processing_class=tok,
        )
        for name, order, weights in (("a", ["sigmoid", "sft"], [1.0, 0.5]), ("b", ["sft", "sigmoid"], [0.5, 1.0]))
    )
    assert torch.equal(a.compute_loss(a.model, first_batch(a)), b.compute_loss(b.model, first_batch(b)))


def test_non_finite_gaps_are_named(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    broken = pairs.remove_columns("margin").add_column("margin", [0.1, float("inf")] + [0.0] * 14)
    with pytest.raises(ValueError, match=r"pref_gap: 1 of 16 values are not finite \(first at row 1: inf\)"):
        PrefDPOTrainer(
            model=path,
            args=config(PrefDPOConfig, tmp_path, pref_loss="weighted"),
            train_dataset=to_conversational(broken),
            processing_class=AutoTokenizer.from_pretrained(path),
        )


def test_negative_gaps_weigh_zero_and_are_counted(pairs, tiny_models, tmp_path):
    path = tiny_models["policy"]
    gaps = pairs.select(range(4)).remove_columns("margin").add_column("margin", [-0.5, 0.0, 0.2, 0.6])
    trainer = PrefDPOTrainer(
        model=path,
        args=config(PrefDPOConfig, tmp_path, pref_loss="weighted"),
        train_dataset=to_conversational(gaps),
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    trainer.model.train()
    trainer.compute_loss(trainer.model, first_batch(trainer))
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["gap/nonpositive"] == 0.5 and metrics["weights/zero"] == 0.5
    assert metrics["weights/max"] == pytest.approx(0.6 * 4 / 0.8) and metrics["weights/mean"] == pytest.approx(1.0)
