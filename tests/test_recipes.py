"""Every recipe in recipes/ loads; every sweep expands into valid runs and dry-runs; the full paper recipes save
checkpoints, print their resources and keep the papers' settings; a paper recipe really runs."""

from pathlib import Path

import pytest
import yaml

from prefopt.cli import main
from prefopt.recipe import load_recipe
from prefopt.sweep import describe, expand

REPO = Path(__file__).parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
SWEEPS = [p for p in RECIPES if "sweep" in yaml.safe_load(p.read_text())]
FULL = sorted((REPO / "recipes" / "paper").glob("*/full*.yaml"))


def stand_in_prompts(runs, directory: Path) -> None:
    """A one-row file for each local prompt file the runs read (the full recipes' own are made on a cluster,
    docs/paper_recipes.md); the test then runs in ``directory``, where their relative paths lead."""
    for run in runs:
        prompts = run.recipe.generation.prompts
        if prompts.source == "file" and prompts.dataset_spec().is_local:
            path = directory / prompts.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{"problem": "1 + 1?", "answer": "2"}\n')


def test_the_recipes_are_laid_out_by_purpose():
    studies = {p.parent.name for p in (REPO / "recipes" / "paper").glob("*/*.yaml")}
    papers = {"decomposing_delta", "sweet_spot", "less_is_more", "reward_augmented", "hybrid_dpo_sft"}
    assert studies == papers | {"iterative"}
    for study in studies:
        names = [p.name for p in (REPO / "recipes" / "paper" / study).glob("*.yaml")]
        full = study == "iterative" or any(n.startswith("full") for n in names)  # iterative rounds: an extension, tiny
        assert any(n.startswith("tiny") for n in names) and full, study
    assert (REPO / "recipes" / "demo" / "tiny.yaml").is_file()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_loads(path, trackers_installed):
    recipe = load_recipe(path)
    assert recipe.generation.generators and recipe.training.trl


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_sweep_expands_and_dry_runs(path, trackers_installed, tmp_path, monkeypatch):
    sweep, runs = expand(path)
    assert len(runs) >= 2 and len({r.label for r in runs}) == len(runs)
    stand_in_prompts(runs, tmp_path)
    monkeypatch.chdir(tmp_path)
    table, resources = describe(sweep, runs).split("\nResources of each job", 1)
    assert table.count("\n| ") == len(runs) + 2  # header, separator, a row per run
    assert resources.count("\n| ") == 2 + 5  # a row per stage
    if path.name.startswith("tiny"):  # the runs share their generation
        assert "generate: 1," in table


@pytest.mark.parametrize("path", FULL, ids=lambda p: str(p.relative_to(REPO)))
def test_every_full_recipe_saves_checkpoints_and_its_dry_run_prints_its_resources(
    path, trackers_installed, tmp_path, monkeypatch, capsys
):
    """Every run of a full recipe checkpoints every N steps, keeping a few, so that a killed job resumes (the
    margin_bayes proxy too); `prefopt sweep --dry-run` prints each stage's Slurm request from its resources."""
    sweep, runs = expand(path)
    for run in runs:
        trainings = [run.recipe.training.trl]
        if run.recipe.pairing.margin_bayes is not None:
            trainings.append(run.recipe.pairing.margin_bayes.proxy.trl)
        for trl in trainings:
            assert trl["save_strategy"] == "steps" and trl["save_steps"] >= 1, run.label
            assert 1 <= trl["save_total_limit"] <= 3, run.label
    resources = runs[0].recipe.resources
    assert resources.time and resources.mem and resources.generate.shards > 1
    stand_in_prompts(runs, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Resources of each job under Slurm" in out
    generate = next(line for line in out.splitlines() if line.startswith("| generate |"))
    assert generate.startswith(f"| generate | {resources.generate.shards} (array) + merge |")
    train = next(line for line in out.splitlines() if line.startswith("| train |"))
    assert f"| {resources.train.time or resources.time} |" in train


# What the papers give (docs/papers.md) and the full recipes must keep; recipes/paper/README.md has the rest.
PAPER_SETTINGS = {
    "sweet_spot/full.yaml": {
        "generation.prompts.path": "HuggingFaceH4/ultrafeedback_binarized",
        "generation.prompts.dataset_split": "train_prefs",
        "generation.generators[0].model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "generation.generators[0].temperature": 0.8,
        "generation.generators[0].max_new_tokens": 4096,
        "training.model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "training.trl": {
            "beta": 0.01,
            "learning_rate": 3.0e-7,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.01,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 8,
            "max_length": 2048,
        },
    },
    "less_is_more/full.yaml": {
        "generation.prompts.path": "HuggingFaceH4/ultrafeedback_binarized",
        "judging.reward_model.model": "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
        "pairing.margin_bayes.top_fraction": 0.1,
        "pairing.margin_bayes.fusion": "mul",
        "pairing.margin_bayes.proxy.seed_pairs": 2000,
        "training.model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "training.trl": {"beta": 0.1, "num_train_epochs": 2, "lr_scheduler_type": "cosine", "warmup_steps": 0.1},
        "global_batch": 32,
    },
    "reward_augmented/full.yaml": {
        "generation.prompts.path": "HuggingFaceH4/ultrafeedback_binarized",
        "training.model": "Qwen/Qwen2-7B-Instruct",
        "training.trl": {
            "beta": 0.01,
            "learning_rate": 5.0e-7,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.1,
            "num_train_epochs": 1,
            "max_length": 1024,
            "label_smoothing": 0.3,
        },
    },
    "decomposing_delta/full_sample_delta.yaml": {
        "generation.prompts.path": "open-r1/OpenR1-Math-220k",
        "generation.prompts.dataset_split": "train[:16500]",
        "judging.llm.model": "openai/gpt-oss-120b",
        "judging.llm.rubric": "reasoning5",
        "pairing.generator_pairs[0].chosen": "r1",
    },
}


def _get(recipe, dotted: str):
    import re

    value = recipe
    for part in dotted.split("."):
        name, *index = re.split(r"[\[\]]", part)
        value = value[name] if isinstance(value, dict) else getattr(value, name)
        if index:
            value = value[int(index[0])]
    return value


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_the_full_recipes_keep_the_papers_settings(name, trackers_installed):
    recipe = load_recipe(REPO / "recipes" / "paper" / name)
    for key, expected in PAPER_SETTINGS[name].items():
        if key == "global_batch":  # per device x accumulation x one node's 8 GPUs
            trl = recipe.training.trl
            assert trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"] * 8 == expected
        elif isinstance(expected, dict):
            assert {k: recipe.training.trl[k] for k in expected} == expected
        else:
            assert _get(recipe, key) == expected, key
    if name.startswith("decomposing_delta"):
        models = {g.name: g.model for g in recipe.generation.generators}
        assert models["r1"] == "deepseek-ai/DeepSeek-R1" and models["weak"] == "simplescaling/s1.1-3B"
        sweep, runs = expand(REPO / "recipes" / "paper" / name)
        assert {r.values["pairing.filter.top_fraction"] for r in runs} >= {0.3, 1.0}
        assert "step_coherence" in {r.values["pairing.filter.dimension"] for r in runs}


def test_the_paper_readme_has_a_row_for_every_full_recipe():
    readme = (REPO / "recipes" / "paper" / "README.md").read_text()
    for path in FULL:
        assert f"`{path.parent.name}/{path.name}`" in readme, path


@pytest.mark.slow  # minutes: a real run (make test runs it within SLOW_BUDGET)
def test_the_tiny_generator_gap_recipe_runs(tmp_path, model_cache):
    """The paper recipe itself, shrunk to CI size (fewer SFT steps, prompts and problems), first run and table."""
    data = yaml.safe_load((REPO / "recipes" / "paper" / "decomposing_delta" / "tiny_generator_gap.yaml").read_text())
    for spec in data["world"]["models"].values():
        spec.update(num_layers=1, hidden_size=64, train_steps=spec["train_steps"] // 10, batch_size=16)
    data["output_dir"] = str(tmp_path / "out")
    data["generation"]["prompts"]["num_prompts"] = 32
    data["evaluation"].update(num_problems=16, batch_size=16)
    data["training"]["budget"] = {"steps": 3}
    data["pairing"]["drop_ties"] = False  # models this small tie on almost every pair
    path = tmp_path / "gap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--run", "0"]) == 0
    assert main(["sweep", str(path), "--collect"]) == 0
    table = (tmp_path / "out" / "sweeps" / "generator_gap" / "results.md").read_text()
    assert (
        "| sibling dpo+sft,seed=0 |" in table
        and "Not finished: sibling dpo+sft,seed=1, sibling dpo+sft,seed=2" in table
    )
