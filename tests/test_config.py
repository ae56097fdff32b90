from pathlib import Path

import pytest

from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe

REPO = Path(__file__).parents[1]
DEMO = REPO / "recipes" / "demo" / "tiny.yaml"


def write_variant(tmp_path, old, new, source=DEMO):
    text = source.read_text()
    assert old in text
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_every_recipe_loads(trackers_installed):
    paths = sorted((REPO / "recipes").rglob("*.yaml")) + [REPO / "tests" / "recipes" / "ci.yaml"]
    assert DEMO in paths and len(paths) >= 3
    for path in paths:
        recipe = load_recipe(path)
        assert recipe.generation.generators and recipe.training.trl, path


def test_yaml_numbers_reach_trl_as_numbers():
    recipe = load_recipe(DEMO)
    assert isinstance(recipe.training.trl["learning_rate"], float)


@pytest.mark.parametrize(
    "old, new, field, expected",
    [
        (
            "temperature: 1.0, max_new",
            "temprature: 1.0, max_new",
            "generation.generators[0].temprature",
            "unknown field",
        ),
        ("n: 2", "n: four", "generation.generators[0].n", "expected an integer"),
        ("num_prompts: 4096", "num_prompts: [1]", "generation.prompts.num_prompts", "expected an integer"),
        ("beta: 0.1", "bta: 0.1", "training.trl.bta", "unknown field of PrefDPOConfig"),
        ("learning_rate: 3.0e-4", "learning_rate: fast", "training.trl.learning_rate", "expected a number"),
        ("judge: tiny_world_verifier", "judge: gpt", "judging.judge", "expected one of"),
        ('model: "world:policy"', 'model: "world:nope"', "world:nope", "not defined under world.models"),
        ("top_fraction: 0.5", "top_fraction: 1.5", "top_fraction", "must be in (0, 1]"),
        ("beta: 0.1", "beta: 0.1\n    pref_loss: fancy", "training.trl", "pref_loss: unknown loss 'fancy'"),
        (
            "beta: 0.1",
            "beta: 0.1\n    pref_loss: weighted\n    use_weighting: true",
            "training.trl",
            "prefopt's losses replace TRL's",
        ),
        ("rejected: weak}]", "rejected: mid}]", "pairing", "generator 'mid' is not in generation.generators"),
        (
            "strategy: generator_delta",
            "strategy: sweet_spot\n  sweet_spot: {chosen_q: 1}",
            "pairing.sweet_spot.chosen_q",
            "unknown field",
        ),
        ("strategy: generator_delta", "strategy: kto_unpaired", "pairing", "apply to pairs only"),
        (
            "strategy: generator_delta",
            "strategy: generator_delta\n  margin_bayes: {proxy: {model: 'world:policy', trl: {bta: 1}}}",
            "pairing.margin_bayes.proxy.trl.bta",
            "unknown field of PrefDPOConfig",
        ),
        (
            "strategy: generator_delta",
            "strategy: generator_delta\n  margin_bayes: {proxy: {model: 'world:tiny'}}",
            "world:tiny",
            "not defined under world.models",
        ),
        (
            "strategy: generator_delta",
            "strategy: generator_delta\n  margin_bayes: {top_fraction: 0}",
            "pairing.margin_bayes",
            "top_fraction must be in (0, 1]",
        ),
        (
            "strategy: generator_delta",
            "strategy: generator_delta\n  reward_augmented: {template: 'no placeholder'}",
            "pairing.reward_augmented",
            "must contain '{score}'",
        ),
        ("judge: tiny_world_verifier", "judge: llm", "judging", "needs its section (judging.llm)"),
        (
            "judge: tiny_world_verifier",
            "judge: llm\n  llm: {model: 'world:strong', rubric: reasoning9}",
            "judging.llm.rubric",
            "no such preset",
        ),
        (
            "judge: tiny_world_verifier",
            "judge: llm\n  llm: {model: 'world:strong', samples: 3}",
            "judging.llm",
            "samples > 1 needs temperature > 0",
        ),
        (
            "judge: tiny_world_verifier",
            "judge: llm\n  llm: {model: 'world:nobody'}",
            "world:nobody",
            "not defined under world.models",
        ),
        (
            "judge: tiny_world_verifier",
            "judge: tiny_world_verifier\n  pairwise: {generators: [strong, weak]}",
            "judging",
            "pairwise comparisons need judge: llm",
        ),
    ],
)
def test_bad_recipes_name_the_file_and_the_field(tmp_path, old, new, field, expected):
    path = write_variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message and field in message and expected in message


def test_cli_reports_a_bad_recipe_without_a_traceback(tmp_path, capsys):
    path = write_variant(tmp_path, "name: demo-tiny", "name: demo-tiny\nbogus: 1")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "bogus" in err and "Traceback" not in err


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_schema_doc_lists_every_column():
    from prefopt import schemas

    doc = (REPO / "docs" / "schemas.md").read_text()
    for schema in (
        schemas.CANDIDATES,
        schemas.CANDIDATES_OPTIONAL,
        schemas.JUDGMENTS,
        schemas.JUDGMENTS_OPTIONAL,
        schemas.PAIRS,
        schemas.PAIRS_OPTIONAL,
        schemas.UNPAIRED,
        schemas.EVAL_PREDICTIONS,
    ):
        for column in schema:
            assert f"| `{column}` |" in doc, column
