"""Iterative on-policy rounds through the real pipeline: the tiny world, real generation, judging, pairs and TRL
training under accelerate launch, two rounds end to end; the keys of one round; the recipe's checks."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from safetensors.torch import load_file

from prefopt.cache import is_complete
from prefopt.cli import main
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe
from prefopt.rounds import Rounds

from conftest import CI_RECIPE


def write_recipe(path: Path, output_dir: Path, rounds: dict | None) -> Path:
    """The CI recipe with the policy in the pool: pairs are the strong generator's traces over the policy's."""
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["output_dir"] = str(output_dir)
    data["generation"]["generators"][1] = {"name": "policy", "model": "world:policy", "n": 2, "max_new_tokens": 40}
    data["pairing"]["generator_pairs"] = [{"chosen": "strong", "rejected": "policy"}]
    if rounds is not None:
        data["rounds"] = rounds
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, tiny_models):
    """One round through the CLI (the recipe as before rounds existed), then the same recipe with two rounds."""
    tmp = tmp_path_factory.mktemp("rounds")
    assert main(["run", str(write_recipe(tmp / "one.yaml", tmp / "run", None))]) == 0
    recipe = load_recipe(write_recipe(tmp / "two.yaml", tmp / "run", {"count": 2}))
    pipeline = Pipeline(recipe)
    pipeline.run()
    return tmp, recipe, pipeline.outcomes


def stage_rows(rows: list[dict]) -> dict[str, str]:
    return {row["stage"]: row["key"] for row in rows}


def test_round_two_samples_and_trains_from_round_one(two_rounds, tiny_models):
    tmp, recipe, outcomes = two_rounds
    rounds = Rounds(Pipeline(recipe))
    first, second = rounds.pipelines
    trained = str(rounds.trained(1) / "model")
    # Round 1 was the one-round run: found done, not redone; round 2 ran every stage.
    status = {o.name: o.status for o in reversed(outcomes)}  # each stage's first outcome
    for stage in ("generate", "judge", "pairs", "train"):
        assert [o.status for o in outcomes if o.name == stage] == ["cached", "ran"], stage
    assert status["eval policy (round 1)"] == "cached" and status["eval policy (after DPO)"] == "ran"
    # Round 2's pool: the strong generator stays (keep_generators), the policy's entry is round 1's trained model.
    assert {g.name: g.model for g in second.recipe.generation.generators} == {
        "strong": "world:strong",
        "policy": trained,
    }
    assert second.recipe.training.model == trained
    # Its candidates come from that model, and differ from round 1's samples of the untrained policy.
    cands = [
        load_from_disk(str(p.stage_dir("generate", p.generate_key()) / "data")).to_pandas() for p in (first, second)
    ]
    policy = [c[c["generator"] == "policy"].set_index("candidate_id") for c in cands]
    assert set(policy[1]["model"]) == {trained} and set(policy[0]["model"]) == {tiny_models["policy"]}
    assert (policy[0]["completion"] != policy[1]["completion"]).any()
    # Its pairs are rebuilt from its own candidates: every rejected trace is one of round 2's policy samples.
    pairs = load_from_disk(str(second.stage_dir("pairs", second.pairs_key()) / "data")).to_pandas()
    assert len(pairs) and set(pairs["rejected_generator"]) == {"policy"}
    assert (pairs["rejected"].to_numpy() == policy[1].loc[pairs["rejected_id"], "completion"].to_numpy()).all()
    # Training started from round 1's weights (the policy the entry point loaded, hence also DPO's reference).
    train2 = rounds.trained(2)
    assert yaml.safe_load((train2 / "train_config.yaml").read_text())["model_name_or_path"] == trained
    assert (
        yaml.safe_load((rounds.trained(1) / "train_config.yaml").read_text())["model_name_or_path"]
        == (tiny_models["policy"])
    )
    w0, w1, w2 = (load_file(Path(p) / "model.safetensors") for p in (tiny_models["policy"], trained, train2 / "model"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    step = sum((w2[k] - w1[k]).norm() ** 2 for k in w1) ** 0.5
    assert step < sum((w2[k] - w0[k]).norm() ** 2 for k in w0) ** 0.5  # round 2 moved on from round 1's weights


def test_report_has_a_table_of_rounds(two_rounds):
    tmp, recipe, _ = two_rounds
    results = json.loads((tmp / "run" / "results.json").read_text())
    rows = results["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["model"] for r in rows] == ["policy (before DPO)", "policy (round 1)", "policy (after DPO)"]
    evaluated = Pipeline(recipe).evaluated()  # the eval stages' own summaries
    for row in rows:
        assert row["accuracy"] == {name: s["accuracy"] for name, s in evaluated[row["model"]].items()}
    assert rows[0]["pairs_kept"] is None and all(r["pairs_kept"] > 0 for r in rows[1:])
    assert results["accuracy"]["policy (after DPO)"] == evaluated["policy (after DPO)"]
    table = (tmp / "run" / "results.md").read_text()
    assert "## Rounds" in table
    for row in rows:
        assert f"| {row['round']} | {row['model']} | " in table


def test_plan_lists_every_round_and_one_round_keeps_its_keys(two_rounds):
    tmp, recipe, _ = two_rounds
    two = Pipeline(recipe).plan()
    assert [r["stage"] for r in two if r["round"] == 2] == [
        "generate (round 2)",
        "judge (round 2)",
        "pairs (round 2)",
        "train (round 2)",
        "eval policy (after DPO)",
    ]
    assert all(r["status"] == "complete" for r in two)
    one = stage_rows(Pipeline(load_recipe(tmp / "one.yaml")).plan())
    explicit = stage_rows(Pipeline(load_recipe(write_recipe(tmp / "r1.yaml", tmp / "run", {"count": 1}))).plan())
    assert explicit == one  # rounds: {count: 1} is the recipe without the section, key for key
    keys = stage_rows(two)
    for stage in ("generate", "judge", "pairs", "train"):
        assert keys[f"{stage} (round 1)"] == one[stage]
    assert keys["eval policy (round 1)"] == one["eval policy (after DPO)"]
    assert keys["eval policy (before DPO)"] == one["eval policy (before DPO)"]
    assert len(set(keys.values()) - set(one.values())) == 5  # round 2: its four stages and its evaluation


def test_rerun_finds_every_round_done(two_rounds):
    tmp, recipe, _ = two_rounds
    run = tmp / "run"
    done = {p: (p / "_prefopt_done.json").stat().st_mtime_ns for p in run.glob("*/*") if is_complete(p)}
    pipeline = Pipeline(recipe)
    pipeline.run()
    assert pipeline.outcomes and all(o.status == "cached" for o in pipeline.outcomes), pipeline.outcomes
    assert {p: (p / "_prefopt_done.json").stat().st_mtime_ns for p in done} == done


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rounds.count=0"], "rounds.count: expected an integer >= 1, got 0"),
        (
            ["rounds.count=2"],
            "rounds.count: 2: no generator samples from the policy (none of generation.generators has model "
            "training.model 'world:policy'); add one: each later round gives it the previous round's trained policy",
        ),
        (
            ["rounds.count=2", "generation.generators[1].model=world:policy", "rounds.keep_generators=false"],
            "rounds.keep_generators: false keeps only ['weak'] after round 1: pairing.generator_pairs[0].chosen: "
            "generator 'strong' is not in generation.generators (generators: ['weak'])",
        ),
        (
            ["rounds.count=2", "generation.generators[1].model=world:policy", "training.model_args.use_peft=true"],
            "rounds.count: 2: training.model_args.use_peft saves a LoRA adapter, which the next round cannot start "
            "from; set use_peft: false or rounds.count: 1",
        ),
        (
            ["rounds.count=2", "training.dataset={path: prefs.jsonl}"],
            "rounds.count: 2 builds each round's pairs from the policy's own samples, but training.dataset trains on "
            "fixed data; set rounds.count: 1 (or drop training.dataset)",
        ),
        (
            [
                "rounds.count=3",
                "generation.generators[1].model=world:policy",
                "sweep={name: s, parameters: {pairing.seed: [1, 2]}}",
            ],
            "rounds.count: 3: a sweep runs one round per arm; set rounds.count: 1 or drop the sweep section",
        ),
    ],
)
def test_bad_rounds_are_one_line_errors(overrides, message, capsys):
    args = ["plan", str(CI_RECIPE)] + [f"--set={item}" for item in overrides]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"prefopt: error: {CI_RECIPE}: {message}"


def test_slurm_writes_one_round_only(capsys):
    args = ["run", str(CI_RECIPE), "--slurm", "--dry-run", "--set=rounds.count=2"]
    assert main([*args, "--set=generation.generators[1].model=world:policy"]) == 2
    assert "--slurm writes the jobs of one round" in capsys.readouterr().err


def test_export_takes_the_last_rounds_model(two_rounds, tmp_path):
    tmp, recipe, _ = two_rounds
    out = tmp_path / "exported"
    assert main(["export", "model", str(tmp / "two.yaml"), "--output", str(out)]) == 0
    last = load_file(Rounds(Pipeline(recipe)).trained(2) / "model" / "model.safetensors")
    exported = load_file(out / "model.safetensors")
    assert exported.keys() == last.keys() and all(torch.equal(exported[k], last[k]) for k in last)
