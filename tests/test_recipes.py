"""Every recipe in recipes/ loads; every sweep expands into valid runs and dry-runs; a paper recipe really runs."""

from pathlib import Path

import pytest
import yaml

from prefopt.cli import main
from prefopt.recipe import load_recipe
from prefopt.sweep import describe, expand

REPO = Path(__file__).parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
SWEEPS = [p for p in RECIPES if "sweep" in yaml.safe_load(p.read_text())]


def test_the_recipes_are_laid_out_by_purpose():
    studies = {p.parent.name for p in (REPO / "recipes" / "paper").glob("*/*.yaml")}
    assert studies == {"decomposing_delta", "sweet_spot", "less_is_more", "reward_augmented", "hybrid_dpo_sft"}
    for study in studies:
        names = [p.name for p in (REPO / "recipes" / "paper" / study).glob("*.yaml")]
        assert any(n.startswith("tiny") for n in names) and any(n.startswith("full") for n in names), study
    assert (REPO / "recipes" / "demo" / "tiny.yaml").is_file()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_loads(path, trackers_installed):
    recipe = load_recipe(path)
    assert recipe.generation.generators and recipe.training.trl


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_sweep_expands_and_dry_runs(path, trackers_installed):
    sweep, runs = expand(path)
    assert len(runs) >= 2 and len({r.label for r in runs}) == len(runs)
    table = describe(sweep, runs)
    assert table.count("\n| ") == len(runs) + 2  # header, separator, a row per run
    if path.name.startswith("tiny"):  # the runs share their generation
        assert "generate: 1," in table


def test_the_tiny_generator_gap_recipe_runs(tmp_path, model_cache):
    """The paper recipe itself, shrunk to CI size (fewer SFT steps, prompts and problems), first run and table."""
    data = yaml.safe_load((REPO / "recipes" / "paper" / "decomposing_delta" / "tiny_generator_gap.yaml").read_text())
    for spec in data["world"]["models"].values():
        spec.update(num_layers=1, hidden_size=64, train_steps=spec["train_steps"] // 10, batch_size=16)
    data["output_dir"] = str(tmp_path / "out")
    data["generation"]["prompts"]["num_prompts"] = 32
    data["evaluation"].update(num_problems=16, batch_size=16)
    data["training"]["trl"].update(max_steps=3)
    data["pairing"]["drop_ties"] = False  # models this small tie on almost every pair
    path = tmp_path / "gap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--run", "0"]) == 0
    assert main(["sweep", str(path), "--collect"]) == 0
    table = (tmp_path / "out" / "sweeps" / "generator_gap" / "results.md").read_text()
    assert "| sibling dpo+sft |" in table and "Not finished: sibling dpo, mid dpo+sft" in table
