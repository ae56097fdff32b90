"""Tasks as plugins: the registry, the tiny world as one task (its prompts, sets and keys as before it was one), a
task defined here run through generation and evaluation, and unknown task names."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import yaml
from datasets import load_from_disk

import prefopt
from prefopt.cache import content_hash, file_fingerprint
from prefopt.errors import ConfigError
from prefopt.evaluation.accuracy import evaluate_model
from prefopt.evaluation.config import BenchmarkFile, EvaluationConfig
from prefopt.generation.config import PromptSource
from prefopt.generation.generate import load_prompts
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe
from prefopt.registry import UnknownName
from prefopt.stage_keys import FORMAT_VERSIONS
from prefopt.tasks.registry import TASKS, EvalSet, model_task, task
from prefopt.world.tasks import sample_problems

from conftest import CI_RECIPE


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def test_the_registry_lists_the_tasks_and_their_capabilities():
    assert TASKS.names() == ["file", "tiny_world"] and TASKS.names(prompts=True) == ["file", "tiny_world"]
    world = TASKS.get("tiny_world")
    assert (world.section, world.verifier, world.model_prefix) == ("world", "tiny_world_verifier", "world:")
    assert world.eval_sets == ("in_domain", "out_of_domain") and TASKS.get("file").eval_sets == ()
    assert model_task("world:policy") == "tiny_world" and model_task("org/model") is None


def test_the_tiny_world_prompts_and_sets_are_what_the_pipeline_made_before(ci_recipe):
    """The task's outputs against the code they replaced (rebuilt here), and pinned by digests of that code's
    outputs for the CI recipe."""
    world, source, cfg = ci_recipe.world, ci_recipe.generation.prompts, ci_recipe.evaluation
    rows = load_prompts(source, world)
    old = sample_problems(source.num_prompts, world.in_domain, seed=source.seed)
    assert [(r["prompt_id"], r["prompt"], r["reference"]) for r in rows] == [
        (f"in_domain-{i:06d}", o["problem"], o["answer"]) for i, o in enumerate(old)
    ]
    assert all(r["prompt_messages"] == [{"role": "user", "content": r["prompt"]}] for r in rows)
    sets = task("tiny_world").eval_sets(world, cfg)
    for i, (s, split) in enumerate(zip(sets, ("in_domain", "out_of_domain"))):
        old = sample_problems(cfg.num_problems, getattr(world, split), seed=cfg.seed + i)
        assert (s.name, s.domain, s.prompts, s.problems) == (split, split, *[[o["problem"] for o in old]] * 2)
        assert s.answers == [o["answer"] for o in old]
    assert digest(rows) == "f7aff72ce796752e"
    assert digest([(s.name, s.domain, s.prompts, s.problems, s.answers) for s in sets]) == "e92f7506cc03c24c"
    assert sets[0].judge("2+5", "2+5=7. =7", "7") == (True, "7") and sets[0].judge("2+5", "2+5=8. =8", "7") == (
        False,
        "8",
    )


def test_the_tiny_world_judge_learns_the_rubric_answered_by_the_verifier(ci_recipe, monkeypatch, tmp_path):
    """The task makes its judges' training rows (pinned by a digest of the rows the world's model builder made before
    they moved here) and passes them to the builder; the world itself imports nothing of judging."""
    import random

    import prefopt.world.models
    from prefopt.judging.rubrics import load_rubric
    from prefopt.tasks.tiny_world import judge_rows
    from prefopt.world.tasks import Difficulty

    rows = judge_rows(sample_problems(40, Difficulty(), seed=0), random.Random(0))
    assert digest(rows) == "fad2d22ef6b340c8"
    rubric = load_rubric("tiny_world")
    pairwise = [r for r in rows if r["solution"] in ("A", "B")]
    assert 0 < len(pairwise) < len(rows)
    for r in rows:
        if r not in pairwise:
            scores = json.loads(r["solution"])
            assert list(scores) == [d.name for d in rubric.dimensions]
            assert all(rubric.low <= v <= rubric.high and v == int(v) for v in scores.values())

    calls = []
    monkeypatch.setattr(prefopt.world.models, "build_tiny_model", lambda *args, **kwargs: calls.append(kwargs))
    world = ci_recipe.world
    world = dataclasses.replace(world, models={"judge": dataclasses.replace(world.models["weak"], task="judge")})
    task("tiny_world").build_model("judge", world, tmp_path, build=True)
    assert calls == [{"desc": "world:judge", "judge_rows": judge_rows}]


def test_stage_keys_are_computed_as_before_tasks(ci_recipe, tmp_path):
    """The generate and eval keys hash what they hashed before (the world's splits), so no cache is invalidated."""
    world, g = ci_recipe.world, ci_recipe.generation

    def key(stage, *parts):
        return content_hash(stage, prefopt.__version__, FORMAT_VERSIONS[stage], *parts)

    models = {gen.name: world.models[gen.model.removeprefix("world:")].cache_key() for gen in g.generators}
    assert Pipeline(ci_recipe).generate_key() == key("generate", g, models, (world.in_domain, world.out_of_domain))
    model = Pipeline(ci_recipe).model_key("world:strong")
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"question": "1+1", "answer": "2"}\n')
    no_world = dataclasses.replace(
        ci_recipe.evaluation, tiny_world=False, benchmarks=[BenchmarkFile(name="b", path=str(bench))]
    )
    for cfg, files in ((ci_recipe.evaluation, []), (no_world, [file_fingerprint(bench)])):
        recipe = dataclasses.replace(ci_recipe, evaluation=cfg)  # evaluated or not, the world's splits are keyed
        expected = key("eval", cfg, world.in_domain, world.out_of_domain, files, model)
        assert Pipeline(recipe).eval_key(model) == expected


class Countdown:
    """A task defined by a test: 'n-1' questions with their answers, and a judge that reads the last number."""

    def prompts(self, source, settings):
        return [
            {
                "prompt_id": f"count-{i}",
                "prompt": f"{i + 2}-1",
                "prompt_messages": [{"role": "user", "content": f"{i + 2}-1"}],
                "reference": str(i + 1),
            }
            for i in range(source.num_prompts)
        ]

    def prompts_key(self, source, settings):
        return "countdown v1"

    def eval_sets(self, settings, cfg):
        problems = [f"{i + 2}-1" for i in range(cfg.num_problems)]
        answers = [str(i + 1) for i in range(cfg.num_problems)]

        def judge(problem, completion, answer):
            last = completion.rsplit("=", 1)[-1].strip()
            return last == answer, last or None

        return [EvalSet("countdown", "in_domain", problems, problems, answers, judge)]


@pytest.fixture
def countdown(monkeypatch):
    """The Countdown task registered for one test, with the tiny world's prompts, sets and verifier made to fail."""
    TASKS.register("countdown", Countdown, help="counting down", prompts=True, eval_sets=("countdown",))

    def fail(*args, **kwargs):
        raise AssertionError("a tiny-world code path ran")

    import prefopt.judging.verifier
    import prefopt.tasks.tiny_world
    import prefopt.world.tasks

    monkeypatch.setattr(prefopt.world.tasks, "sample_problems", fail)
    monkeypatch.setattr(prefopt.judging.verifier, "score_trace", fail)
    for method in ("prompts", "prompts_key", "eval_sets", "model_key", "build_model"):
        monkeypatch.setattr(prefopt.tasks.tiny_world.Task, method, fail)
    yield
    del TASKS._entries["countdown"]


def test_a_task_of_its_own_runs_through_generation_and_evaluation(countdown, tiny_models, tmp_path):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["generation"]["prompts"] = {"source": "countdown", "num_prompts": 3}
    for gen in data["generation"]["generators"]:
        gen["model"] = tiny_models[gen["model"].removeprefix("world:")]  # local models: no world:<name> to build
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    pipeline = Pipeline(load_recipe(path))
    candidates = load_from_disk(str(pipeline.generate() / "data"))
    n = sum(gen["n"] for gen in data["generation"]["generators"])
    assert len(candidates) == 3 * n and set(candidates["prompt"]) == {"2-1", "3-1", "4-1"}
    assert set(candidates["reference"]) == {"1", "2", "3"}

    cfg = EvaluationConfig(num_problems=4, max_new_tokens=24)
    predictions, summary = evaluate_model(tiny_models["strong"], {"countdown": None}, cfg)
    assert set(summary) == {"countdown"} and summary["countdown"]["n"] == len(predictions) == 4
    assert predictions["problem"] == ["2-1", "3-1", "4-1", "5-1"]


def test_unknown_task_names_are_one_line_errors_with_a_suggestion(tmp_path):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["generation"]["prompts"]["source"] = "tiny_wrld"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and "generation.prompts.source" in message
    assert "unknown task 'tiny_wrld' (did you mean 'tiny_world'?)" in message
    with pytest.raises(UnknownName, match=r"did you mean 'file'"):
        task("files")
    TASKS.register("sets_only", Countdown, eval_sets=("countdown",))
    try:
        with pytest.raises(ValueError, match=r"source: task 'sets_only' supplies no prompts"):
            PromptSource(source="sets_only")
    finally:
        del TASKS._entries["sets_only"]


def test_a_task_model_not_in_its_section_is_named(ci_recipe):
    with pytest.raises(ConfigError, match=r"--model world:polcy: not defined under world.models"):
        Pipeline(ci_recipe).evaluate_ref("world:polcy")
