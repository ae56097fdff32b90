"""training.budget: steps or tokens turned into TRL's max_steps, and what the train stage records for the tables."""

import dataclasses
import json
import math

import pytest
import yaml

from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe
from prefopt.training.config import TrainingBudget, TrainingConfig
from prefopt.training.launch import budget_steps, effective_batch_size

from conftest import CI_RECIPE, ci_stage


def test_budget_arithmetic():
    assert budget_steps(TrainingBudget(steps=7), [10, 30], 4) == 7
    # 20 tokens per example on average, 4 examples per step: 80 tokens a step
    assert budget_steps(TrainingBudget(tokens=800), [10, 30], 4) == 10
    assert budget_steps(TrainingBudget(tokens=801), [10, 30], 4) == 11  # rounded up to whole steps
    assert budget_steps(TrainingBudget(tokens=1), [10, 30], 4) == 1
    # Arms with fewer, longer examples get fewer steps for the same tokens.
    assert budget_steps(TrainingBudget(tokens=8000), [40] * 3, 4) == 50
    assert effective_batch_size({}, 1) == 8  # TRL's default per-device batch
    assert effective_batch_size({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 3}, 2) == 24
    with pytest.raises(ConfigError, match="no tokens"):
        budget_steps(TrainingBudget(tokens=5), [], 4)


@pytest.mark.parametrize(
    "budget, trl, message",
    [
        ({"steps": 5, "tokens": 10}, {}, "set exactly one of steps and tokens"),
        ({}, {}, "set exactly one of steps and tokens"),
        ({"tokens": 0}, {}, "tokens must be >= 1, got 0"),
        ({"steps": 5}, {"max_steps": 3}, "budget sets TRL's max_steps"),
    ],
)
def test_bad_budgets_name_the_field(tmp_path, budget, trl, message):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["training"]["trl"] = {**{k: v for k, v in data["training"]["trl"].items() if k != "max_steps"}, **trl}
    data["training"]["budget"] = budget
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and "training" in str(err.value) and message in str(err.value)


def test_a_token_budget_sets_max_steps_from_the_pairs(run_dir):
    """The CI run's train stage records its plan and the optimizer steps it took; a token budget on the same pairs
    gives max_steps from their token counts (the tiny world's tokenizer has one token per character)."""
    from prefopt.pipeline import Pipeline
    from prefopt.schemas import load_stage_dataset

    train = ci_stage(run_dir, "train")
    plan = json.loads((train / "training_plan.json").read_text())
    state = json.loads((train / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # the recipe's max_steps
    assert plan["effective_batch_size"] == 4 and plan["processes"] == 1 and plan["budget"] is None
    pairs = load_stage_dataset(ci_stage(run_dir, "pairs"), {}, "pairs").to_pandas()
    chars = (2 * pairs["prompt"].str.len() + pairs["chosen"].str.len() + pairs["rejected"].str.len()).mean()
    assert plan["examples"] == len(pairs)
    assert chars <= plan["mean_tokens_per_example"] <= chars + 2 * 16  # plus the chat template's few tokens
    # TRL's own count of the tokens it processed in those 3 steps of 4 random pairs agrees with the estimate.
    counted = [e["num_tokens"] for e in state["log_history"] if "num_tokens" in e][-1]
    assert abs(3 * 4 * plan["mean_tokens_per_example"] - counted) < 0.25 * counted

    recipe = dataclasses.replace(load_recipe(CI_RECIPE), output_dir=str(run_dir))
    trl = {k: v for k, v in recipe.training.trl.items() if k != "max_steps"}
    for budget, steps in (
        (TrainingBudget(steps=5), 5),
        (TrainingBudget(tokens=100_000), math.ceil(100_000 / (4 * plan["mean_tokens_per_example"]))),
    ):
        training: TrainingConfig = dataclasses.replace(recipe.training, trl=trl, budget=budget)
        config = Pipeline(dataclasses.replace(recipe, training=training)).write_train_config()
        assert yaml.safe_load(config.read_text())["max_steps"] == steps
        assert json.loads((config.parent / "training_plan.json").read_text())["max_steps"] == steps
