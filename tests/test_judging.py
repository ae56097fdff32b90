import pytest
from datasets import Dataset

from prefopt.errors import ConfigError
from prefopt.judging.base import JudgeItem
from prefopt.judging.config import JudgingConfig
from prefopt.judging.judge import aggregate_scores, judge_candidates
from prefopt.judging.verifier import score_trace
from prefopt.schemas import DataError


@pytest.mark.parametrize(
    "completion, correctness, step_accuracy, fmt",
    [
        ("7*3=21;21+4=25. =25", 1.0, 1.0, 1.0),
        ("7*3=21;21+4=26. =26", 0.0, 0.5, 1.0),  # last step wrong
        ("7*3=20;20+4=24. =25", 1.0, 0.0, 1.0),  # right answer, wrong steps
        ("7*3=21;21+4=25;25+0=25. =25", 1.0, 2 / 3, 1.0),  # padded with an extra step
        ("the answer is 25 . =25", 1.0, 0.0, 0.5),
        ("", 0.0, 0.0, 0.0),
    ],
)
def test_verifier_scores_each_dimension(completion, correctness, step_accuracy, fmt):
    j = score_trace("7*3+4", completion)
    assert j.status == "ok"
    assert j.scores == pytest.approx({"correctness": correctness, "step_accuracy": step_accuracy, "format": fmt})


def test_unjudgeable_prompt_is_a_recorded_failure_not_a_zero():
    j = score_trace("What is love?", "7")
    assert j.scores is None and j.status.startswith("unjudgeable_prompt")


def test_aggregate_rules():
    s = {"correctness": 1.0, "step_accuracy": 0.5, "format": 0.0}
    assert aggregate_scores(s, "mean", {}) == pytest.approx(0.5)
    assert aggregate_scores(s, "weighted", {"correctness": 3, "format": 1}) == pytest.approx(0.75)
    assert aggregate_scores(s, "step_accuracy", {}) == 0.5


def test_judge_stage_keeps_every_row_and_records_failures():
    candidates = Dataset.from_list(
        [
            {"candidate_id": "a", "prompt": "1+2", "completion": "1+2=3. =3"},
            {"candidate_id": "b", "prompt": "not arithmetic", "completion": "3"},
        ]
    )
    out = judge_candidates(JudgingConfig(aggregate="correctness"), candidates)
    assert out["candidate_id"] == ["a", "b"]
    assert out["aggregate"] == [1.0, None]
    assert out["parse_status"][0] == "ok" and out["parse_status"][1] != "ok"
    assert out["scores"][1] == {"correctness": None, "step_accuracy": None, "format": None}


@pytest.mark.parametrize("cfg", [JudgingConfig(aggregate="elegance"), JudgingConfig(aggregate="weighted")])
def test_bad_aggregate_rule_is_rejected(cfg):
    with pytest.raises(ConfigError, match="judging"):
        judge_candidates(cfg, Dataset.from_list([{"prompt": "1+2", "completion": "3"}]))


def test_the_judge_stage_resumes_from_its_shards(run_dir, tmp_path):
    from datasets import load_from_disk

    from prefopt.judging.judge import run_judging

    from conftest import ci_stage

    candidates = load_from_disk(str(ci_stage(run_dir, "generate") / "data"))
    cfg = JudgingConfig(shard_size=20)
    out = tmp_path / "judge"
    run_judging(cfg, candidates, out)
    first = load_from_disk(str(out / "data")).to_pandas()
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) == 5 and len(first) == len(candidates) == 96
    assert (out / "quality.json").is_file() and (out / "scores.png").is_file()
    # As if killed after all but one shard: the rerun judges only that one.
    shards[2].unlink()
    stamps = {p: p.stat().st_mtime_ns for p in shards if p.exists()}
    run_judging(cfg, candidates, out)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    resumed = load_from_disk(str(out / "data")).to_pandas()
    assert resumed.drop(columns="raw_judgment").equals(first.drop(columns="raw_judgment"))
    assert resumed["candidate_id"].is_unique
    # Shards of other candidates are not silently reused.
    with pytest.raises(DataError, match="do not line up"):
        run_judging(cfg, candidates.shuffle(seed=0), out)


def test_quality_figures_of_a_verifier_run(run_dir):
    import json

    from conftest import ci_stage

    quality = json.loads((ci_stage(run_dir, "judge") / "quality.json").read_text())
    assert quality["judge"] == "tiny_world_verifier" and quality["parse_failure_rate"] == 0.0
    [ranking] = quality["generator_ranking"]
    assert (ranking["first"], ranking["second"], ranking["pairs"]) == ("strong", "weak", 48)
    assert ranking["first_higher"] + ranking["equal"] + ranking["second_higher"] == pytest.approx(1.0)


def test_every_judge_is_one_declared_file_with_its_capabilities():
    import pkgutil

    import prefopt.judging.judges as judges
    from prefopt.judging.registry import JUDGES, judge_factory

    modules = sorted(m.name for m in pkgutil.iter_modules(judges.__path__))
    assert JUDGES.names() == modules == ["llm", "math_verifier", "reward_model", "tiny_world_verifier"]
    assert all(callable(judge_factory(name)) for name in modules)  # each file's make
    assert JUDGES.names(is_verifier=True) == ["math_verifier", "tiny_world_verifier"]
    assert JUDGES.names(needs_reference=True) == ["math_verifier"]
    assert {e.name: e.config_section for e in JUDGES if e.is_model} == {"llm": "llm", "reward_model": "reward_model"}
    for name, prompt, completion, reference in [
        ("tiny_world_verifier", "7*3+4", "7*3=21;21+4=25. =25", None),
        ("math_verifier", "q", "\\boxed{25}", "25"),
    ]:
        entry = JUDGES.get(name)
        judge = judge_factory(name)(JudgingConfig(judge=name), lambda ref: ref)
        [j] = judge.score([JudgeItem(prompt, completion, reference)])
        assert judge.name == name and judge.dimensions == entry.dimensions and tuple(j.scores) == entry.dimensions
        low, high = entry.score_range
        assert all(low <= v <= high for v in j.scores.values()) and j.scores["correctness"] == 1.0


def test_the_judge_registry_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, prefopt.judging.registry; heavy = {'torch', 'math_verify', 'sympy', 'prefopt.recipe', 'prefopt.judging.config'} "
        "& set(sys.modules); assert not heavy, heavy"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"judge": "gpt"}, "judging.judge: unknown judge 'gpt'; expected one of ['llm', "),
        ({"judge": "llm"}, "needs its section (judging.llm)"),
        ({"judge": "reward_model"}, "needs its section (judging.reward_model)"),
        ({"judge": "math_verifier", "pairwise": {"generators": ["a", "b"]}}, "pairwise comparisons need judge: llm"),
        (
            {"reference_judge": "llm"},
            "judging.reference_judge: expected a verifier, one of ['math_verifier', 'tiny_world_verifier'], got 'llm'",
        ),
        ({"reference_judge": "gpt"}, "judging.reference_judge: expected a verifier"),
        ({"judge": "llm", "llm": {"model": "m", "engine": "vlm"}}, "judging.llm.engine: unknown engine 'vlm'"),
    ],
)
def test_judge_names_are_checked_against_the_registry_at_load(fields, message):
    from prefopt.config_base import from_dict

    with pytest.raises(ConfigError) as err:
        from_dict(JudgingConfig, fields, "judging")
    assert message in str(err.value)


def test_a_judge_that_needs_references_refuses_candidates_without_any():
    candidates = Dataset.from_list(
        [{"candidate_id": "a", "prompt": "6*7?", "completion": "\\boxed{42}", "reference": None}]
    )
    with pytest.raises(DataError, match=r"\['math_verifier'\] need the prompts' reference answers"):
        judge_candidates(JudgingConfig(judge="math_verifier"), candidates)
    with pytest.raises(DataError, match="reference_field"):
        judge_candidates(JudgingConfig(reference_judge="math_verifier"), candidates)
    some = Dataset.from_list(
        [
            {"candidate_id": "a", "prompt": "6*7?", "completion": "\\boxed{42}", "reference": "42"},
            {"candidate_id": "b", "prompt": "?", "completion": "\\boxed{1}", "reference": None},
        ]
    )
    out = judge_candidates(JudgingConfig(judge="math_verifier", aggregate="correctness"), some)
    assert out["aggregate"] == [1.0, None] and out["parse_status"][1].startswith("no_reference")
