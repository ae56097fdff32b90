"""Trackers: checked when the recipe loads; judge and pair statistics in the same run as the training metrics."""

from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe
from prefopt.tracking import flatten_numbers

from conftest import CI_RECIPE, ci_stage


def test_a_tracker_that_is_not_installed_fails_at_recipe_load(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(
        ConfigError,
        match=r"training\.trl\.report_to: wandb is not installed .*pip install "
        r'"prefopt\[track\]" \(or pip install wandb\)',
    ):
        load_recipe(CI_RECIPE, ["training.trl.report_to=[tensorboard, wandb]"])
    assert main(["plan", str(CI_RECIPE), "--set", "training.trl.report_to=wandb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefopt: error: {CI_RECIPE}: training.trl.report_to: wandb is not installed")
    assert err.count("\n") == 1


def test_only_trackers_prefopt_logs_to_are_accepted():
    with pytest.raises(
        ConfigError,
        match=r"'mlflow' is not a tracker prefopt logs its statistics to .*"
        r"\['tensorboard', 'trackio', 'wandb'\]",
    ):
        load_recipe(CI_RECIPE, ["training.trl.report_to=mlflow"])
    for ok in ("none", "tensorboard", "[tensorboard]"):
        assert load_recipe(CI_RECIPE, [f"training.trl.report_to={ok}"])


def test_flatten_numbers_tags_every_number():
    quality = {
        "judge": "llm",
        "parse_failure_rate": 0.25,
        "failure_reasons": {"no_json": 3},
        "generator_ranking": [{"first": "strong", "second": "weak", "pairs": 4, "first_higher": 0.5}],
        "mean_attempts": None,
        "examples": ["a", "b"],
    }
    assert flatten_numbers(quality, "judge") == {
        "judge/parse_failure_rate": 0.25,
        "judge/failure_reasons/no_json": 3.0,
        "judge/generator_ranking/strong_vs_weak/pairs": 4.0,
        "judge/generator_ranking/strong_vs_weak/first_higher": 0.5,
    }


def test_tensorboard_run_holds_judge_and_pair_statistics(run_dir):
    assert (
        main(["train", str(CI_RECIPE), "--output-dir", str(run_dir), "--set", "training.trl.report_to=tensorboard"])
        == 0
    )
    recipe_train = ci_stage(run_dir, "train")
    train_dirs = [d for d in (run_dir / "train").iterdir() if d != recipe_train and (d / "runs").is_dir()]
    assert len(train_dirs) == 1
    (events,) = list((train_dirs[0] / "runs").iterdir())  # the Trainer's own TensorBoard run
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}
    histograms = {tag: acc.Histograms(tag)[0].histogram_value.num for tag in acc.Tags()["histograms"]}

    quality = json.loads((ci_stage(run_dir, "judge") / "quality.json").read_text())
    stats = json.loads((ci_stage(run_dir, "pairs") / "stats.json").read_text())
    assert "train/loss" in scalars  # the training metrics, in the same run
    assert scalars["judge/parse_failure_rate"] == pytest.approx(quality["parse_failure_rate"])
    ranking = quality["generator_ranking"][0]
    assert scalars["judge/generator_ranking/strong_vs_weak/first_higher"] == pytest.approx(ranking["first_higher"])
    for key in ("pairs_built", "pairs_kept", "ties_dropped", "dropped_by_filter"):
        assert scalars[f"pairs/{key}"] == stats[key]
    assert scalars["pairs/kept_fraction"] == pytest.approx(stats["pairs_kept"] / stats["pairs_built"])
    assert histograms["pairs/gap/aggregate"] == stats["pairs_kept"]
    assert histograms["judge/scores/aggregate"] == quality["judged"]
    assert {"judge/scores/correctness", "judge/aggregate/strong", "pairs/gap/step_accuracy"} <= set(histograms)
    assert {"judge/quality/text_summary", "pairs/summary/text_summary"} <= set(acc.Tags()["tensors"])
