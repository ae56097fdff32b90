"""The whole loop through the CLI with real TRL under accelerate launch, and a rerun that skips every stage."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file

from prefopt.cache import is_complete
from prefopt.cli import main
from prefopt.pipeline import Pipeline
from prefopt.schemas import PAIRS

from conftest import CI_RECIPE, ci_stage


def stage_dirs(root: Path) -> list[Path]:
    return sorted(p for stage in root.iterdir() if stage.is_dir() for p in stage.iterdir() if is_complete(p))


def test_run_writes_every_stage_and_the_results_table(run_dir):
    for stage in ("generate", "judge", "pairs", "train"):
        assert is_complete(ci_stage(run_dir, stage)), stage
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["accuracy"]) == {"strong", "weak", "policy (before DPO)", "policy (after DPO)"}
    table = (run_dir / "results.md").read_text()
    for row in ("| strong |", "| policy (after DPO) |", "| generator delta (strong - weak) |", "pairs kept"):
        assert row in table
    stats = results["pairs"]
    assert stats["pairs_built"] == 24 * 2 and stats["pairs_kept"] == math.ceil((48 - stats["ties"]) / 2)
    for png in (
        ci_stage(run_dir, "judge") / "scores.png",
        *(ci_stage(run_dir, "pairs") / "report" / name for name in ("margins.png", "generators.png", "lengths.png")),
    ):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_pairs_follow_the_schema_and_training_changed_the_policy(run_dir, tiny_models):
    pairs_dir = ci_stage(run_dir, "pairs")
    pairs = load_from_disk(str(pairs_dir / "data"))
    assert set(PAIRS) <= set(pairs.column_names)
    assert all(s.startswith("generator_delta(strong>weak)+sample_delta") for s in pairs["strategy"])
    train_dir = ci_stage(run_dir, "train")
    before = load_file(Path(tiny_models["policy"]) / "model.safetensors")
    after = load_file(train_dir / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_eval_accuracy_matches_its_predictions(run_dir):
    for summary in (run_dir / "eval").glob("*/summary.json"):
        preds = load_from_disk(str(summary.parent / "data")).to_pandas()
        for name, s in json.loads(summary.read_text()).items():
            rows = preds[preds["set"] == name]
            assert s["n"] == len(rows) == 16 and s["accuracy"] == pytest.approx(rows["correct"].mean())


def test_rerun_with_an_unchanged_recipe_skips_every_stage(run_dir, ci_recipe):
    before = {p: (p / "_prefopt_done.json").stat().st_mtime_ns for p in stage_dirs(run_dir)}
    pipeline = Pipeline(dataclasses.replace(ci_recipe, output_dir=str(run_dir)))
    pipeline.run()
    assert pipeline.outcomes and all(o.status == "cached" for o in pipeline.outcomes), pipeline.outcomes
    assert {p: (p / "_prefopt_done.json").stat().st_mtime_ns for p in stage_dirs(run_dir)} == before


def test_a_changed_stage_reruns_only_downstream(run_dir, ci_recipe, tmp_path):
    changed = dataclasses.replace(
        ci_recipe, output_dir=str(run_dir), judging=dataclasses.replace(ci_recipe.judging, aggregate="correctness")
    )
    pipeline = Pipeline(changed)
    pipeline.generate()
    pipeline.judge()
    assert [o.status for o in pipeline.outcomes if o.name in ("generate", "judge")] == ["cached", "ran"]


def test_single_stage_commands_read_and_write_explicit_paths(run_dir, tmp_path, capsys):
    generated = ci_stage(run_dir, "generate")
    out = tmp_path / "judged"
    assert main(["judge", str(CI_RECIPE), "--input", str(generated), "--output", str(out)]) == 0
    assert is_complete(out) and len(load_from_disk(str(out / "data"))) == 24 * 4
    assert main(["pairs", str(CI_RECIPE), "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "p")]) == 2
    assert "missing: no dataset here" in capsys.readouterr().err


def test_kto_training_stage_on_the_same_pairs(run_dir, ci_recipe):
    """`training.method: kto` trains PrefKTOTrainer under accelerate launch on the pairs given unpaired."""
    trl = {**ci_recipe.training.trl, "score_weighting": True, "auto_class_balance": True}
    recipe = dataclasses.replace(
        ci_recipe, output_dir=str(run_dir), training=dataclasses.replace(ci_recipe.training, method="kto", trl=trl)
    )
    pipeline = Pipeline(recipe)
    out = pipeline.train()
    assert [o.status for o in pipeline.outcomes if o.name == "train"] == ["ran"]
    assert (out / "model" / "model.safetensors").is_file()
    # score_weighting is a PrefKTOConfig field: the DPO entry point would have refused it.
    assert yaml_value(out / "train_config.yaml", "score_weighting") is True


def yaml_value(path: Path, key: str):
    import yaml

    return yaml.safe_load(path.read_text())[key]


def test_the_entry_point_takes_the_whole_recipe(run_dir, tmp_path):
    """`accelerate launch ... -m prefopt.training.dpo --config RECIPE.yaml` trains the recipe's train stage."""
    import subprocess
    import sys

    import yaml

    data = yaml.safe_load(CI_RECIPE.read_text())
    data["output_dir"] = str(run_dir)
    data["training"]["trl"]["learning_rate"] = 5.0e-4  # a train stage not yet run
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(data))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate_configs/cpu.yaml",
        "-m",
        "prefopt.training.dpo",
        "--config",
        str(recipe_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    from prefopt.recipe import load_recipe

    pipeline = Pipeline(load_recipe(recipe_path))
    out = pipeline.train()
    assert [o.status for o in pipeline.outcomes if o.name == "train"] == ["cached"]
    assert (out / "model" / "model.safetensors").is_file()
    assert yaml_value(out / "train_config.yaml", "learning_rate") == 5.0e-4
