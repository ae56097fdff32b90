"""The LLM judge on the session's real vLLM engine (CPU build): rubric prompts rendered, structured output
parsed, unparseable answers retried and recorded, samples averaged, pairwise verdicts in both orders."""

import json

import pytest
from datasets import Dataset

from prefopt.engines.base import Completion, SamplingParams
from prefopt.judging.base import JudgeItem
from prefopt.judging.config import JudgingConfig, LLMJudgeConfig
from prefopt.judging.judge import judge_candidates
from prefopt.judging.judges.llm import LLMJudge
from prefopt.judging.quality import judge_quality, pairwise_quality
from prefopt.judging.rubrics import load_rubric

ITEMS = [
    JudgeItem("7*3+4", "7*3=21;21+4=25. =25"),
    JudgeItem("7*3+4", "7*3=20;20+4=24. =24"),
    JudgeItem("2+2", "2+2=4. =4"),
    JudgeItem("9-8*2", "garbage"),
    JudgeItem("5-9", "5-9=-4. =-4"),
]
RUBRIC = load_rubric("tiny_world")


def judge_config(**fields):
    return LLMJudgeConfig(**{"model": "ci-strong", "rubric": "tiny_world", "max_new_tokens": 60, **fields})


def test_structured_judgments_parse_and_match_the_rendered_prompt(vllm_engine):
    judge = LLMJudge(judge_config(), vllm_engine)
    judgments = judge.score(ITEMS)
    assert [j.status for j in judgments] == ["ok"] * len(ITEMS) and all(j.attempts == 1 for j in judgments)
    for j in judgments:
        assert set(j.scores) == set(RUBRIC.names) and all(1 <= v <= 5 for v in j.scores.values())
        [raw] = json.loads(j.raw)
        assert {k: float(v) for k, v in json.loads(raw).items()} == j.scores
    # The judge asked exactly the rubric's prompt, constrained to its schema: the same call gives the same answer.
    [[direct]] = vllm_engine.generate(
        [RUBRIC.pointwise_prompt(ITEMS[0].prompt, ITEMS[0].completion)],
        SamplingParams(n=1, temperature=0.0, max_new_tokens=60, json_schema=RUBRIC.json_schema()),
    )
    assert json.loads(judgments[0].raw) == [direct.text]


def test_unparseable_answers_are_retried_then_recorded_never_zero(vllm_engine):
    """Unconstrained, the CI solver model answers arithmetic, not JSON: every try fails and is kept."""
    cfg = judge_config(structured_output=False, max_retries=2, max_new_tokens=30)
    judgments = LLMJudge(cfg, vllm_engine).score(ITEMS)
    for j in judgments:
        assert j.scores is None and j.status.startswith("parse_failed: ") and j.attempts == 3
        assert len(json.loads(j.raw)) == 3  # the first answer and two retries, all recorded
    candidates = Dataset.from_list(
        [
            {"candidate_id": f"c{i}", "prompt": it.prompt, "completion": it.completion, "reference": None}
            for i, it in enumerate(ITEMS)
        ]
    )
    judged = judge_candidates(JudgingConfig(judge="llm", llm=cfg), candidates, LLMJudge(cfg, vllm_engine))
    assert len(judged) == len(ITEMS) and judged["aggregate"] == [None] * len(ITEMS)
    assert all(s == {d: None for d in RUBRIC.names} for s in judged["scores"])
    quality = judge_quality(
        judged.flatten().to_pandas().assign(generator="g", prompt_id="p", sample_index=0), RUBRIC.names
    )
    assert quality["parse_failure_rate"] == 1.0 and quality["failure_reasons"] == {"parse_failed": len(ITEMS)}


def test_samples_are_averaged_and_their_spread_reported(vllm_engine):
    judge = LLMJudge(judge_config(samples=3, temperature=1.0), vllm_engine)
    judgments = judge.score(ITEMS)
    for j in judgments:
        assert j.status == "ok" and len(j.samples) == 3 and len(json.loads(j.raw)) == 3
        for d in RUBRIC.names:
            assert j.scores[d] == pytest.approx(sum(s[d] for s in j.samples) / 3)
    candidates = Dataset.from_list(
        [
            {
                "candidate_id": f"c{i}",
                "prompt": it.prompt,
                "completion": it.completion,
                "reference": None,
                "generator": "g",
                "prompt_id": f"p{i}",
                "sample_index": 0,
            }
            for i, it in enumerate(ITEMS)
        ]
    )
    cfg = JudgingConfig(judge="llm", llm=judge.cfg)
    judged = judge_candidates(cfg, candidates, judge)
    consistency = judge_quality(
        judged.flatten().to_pandas().assign(sample_scores=judged["sample_scores"]), RUBRIC.names, samples=3
    )["self_consistency"]
    assert set(consistency) == {*RUBRIC.names, "overall"}
    for d in RUBRIC.names:
        spread = [max(s[d] for s in j.samples) - min(s[d] for s in j.samples) for j in judgments]
        assert consistency[d]["exact_agreement"] == pytest.approx(sum(x == 0 for x in spread) / len(spread))


def test_pairwise_verdicts_in_both_orders(vllm_engine):
    judge = LLMJudge(judge_config(), vllm_engine)
    pairs = [(ITEMS[0], ITEMS[1]), (ITEMS[2], ITEMS[3]), (ITEMS[4], ITEMS[0])]
    verdicts = judge.compare(pairs)
    assert all(v.status == "ok" and len(v.raws) == 2 and set(v.raws) <= {"A", "B"} for v in verdicts)
    for v in verdicts:  # "A" shown first means the first response in the first order, the second in the other
        assert v.first_shown_first == {"A": "first", "B": "second"}[v.raws[0]]
        assert v.first_shown_second == {"A": "second", "B": "first"}[v.raws[1]]
    import pandas as pd

    figures = pairwise_quality(pd.DataFrame([vars(v) for v in verdicts]), "first")
    flips = sum(v.first_shown_first != v.first_shown_second for v in verdicts)
    assert figures["position_bias_rate"] == pytest.approx(flips / 3) and figures["both_orders_answered"] == 3


class ScriptedEngine:
    """prefopt's engine interface answering from a script (to drive the retry logic deterministically)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def generate(self, prompts, params, system=None):
        self.calls.append((list(prompts), params))
        return [[Completion(self.answers[p].pop(0), "stop") for _ in range(params.n)] for p in prompts]

    def close(self):
        pass


def test_a_retry_that_parses_is_used_and_greedy_retries_sample():
    good = '{"correctness":5,"step_accuracy":4,"format":5}'
    prompt = RUBRIC.pointwise_prompt("1+1", "1+1=2. =2")
    engine = ScriptedEngine({prompt: ["I think it is fine.", good]})
    [judgment] = LLMJudge(judge_config(max_retries=2), engine).score([JudgeItem("1+1", "1+1=2. =2")])
    assert judgment.status == "ok" and judgment.attempts == 2 and judgment.scores["step_accuracy"] == 4
    assert json.loads(judgment.raw) == ["I think it is fine.", good]
    assert [params.temperature for _, params in engine.calls] == [0.0, 0.7]  # a greedy retry would repeat itself


def test_the_judge_stage_with_a_tiny_world_llm_judge(run_dir):
    """A tiny judge trained in the world, run by the stage: quality figures, pairwise audit, verifier agreement."""
    import dataclasses

    from datasets import load_from_disk

    from prefopt.judging.config import PairwiseAuditConfig
    from prefopt.pipeline import Pipeline
    from prefopt.recipe import load_recipe
    from prefopt.world.models import TinyModelSpec

    from conftest import CI_RECIPE

    recipe = load_recipe(CI_RECIPE)
    judge_spec = TinyModelSpec(num_layers=1, hidden_size=64, train_steps=200, batch_size=32, seed=4, task="judge")
    judging = JudgingConfig(
        judge="llm",
        shard_size=50,
        reference_judge="tiny_world_verifier",
        llm=judge_config(model="world:judge", engine="transformers", batch_size=48),
        pairwise=PairwiseAuditConfig(generators=["strong", "weak"], max_pairs=12),
    )
    recipe = dataclasses.replace(
        recipe,
        output_dir=str(run_dir),
        judging=judging,
        world=dataclasses.replace(recipe.world, models={**recipe.world.models, "judge": judge_spec}),
    )
    out = Pipeline(recipe).judge()
    judged = load_from_disk(str(out / "data")).to_pandas()
    quality = json.loads((out / "quality.json").read_text())
    assert quality["judge"] == "llm(world:judge, tiny_world)" == judged["judge"].iloc[0]
    assert quality["parse_failure_rate"] == pytest.approx(judged["aggregate"].isna().mean())
    assert quality["judged"] > len(judged) / 2  # it learnt the answer format in 200 steps, unconstrained
    failed = judged[judged["parse_status"] != "ok"]
    assert failed["parse_status"].str.startswith("parse_failed: ").all() and (failed["attempts"] == 3).all()
    [ranking] = quality["generator_ranking"]
    assert (ranking["first"], ranking["second"]) == ("strong", "weak") and ranking["pairs"] > 0
    assert quality["pairwise"]["pairs"] == 12 and len(load_from_disk(str(out / "pairwise"))) == 12
    assert quality["pairwise"]["both_orders_answered"] > 0
    agreement = quality["reference_agreement"]
    assert agreement["pairs_compared"] > 0 and -1 <= agreement["aggregate_spearman"] <= 1
    assert "## Judge quality" in (out / "quality.md").read_text()


def test_quality_counts_parse_failures_per_dimension(tmp_path):
    """Strictly parsed answers: each failed dimension is counted by kind in quality.json and quality.md."""
    from prefopt.judging.judge import write_quality

    answers = [
        '{"correctness":5,"step_accuracy":4,"format":5}',
        '{"correctness":5,"step_accuracy":9}',
        '{"correctness":NaN,"step_accuracy":3,"format":4}',
        "I won't rate this: it has 2 steps.",
        '{"correctness":4,"step_accuracy":7,"format":1,"reasoning":"step_accuracy: 3"}',
    ]
    items = ITEMS[: len(answers)]
    engine = ScriptedEngine({RUBRIC.pointwise_prompt(i.prompt, i.completion): [a] for i, a in zip(items, answers)})
    cfg = JudgingConfig(judge="llm", llm=judge_config(max_retries=0))
    candidates = Dataset.from_list(
        [
            {
                "candidate_id": f"c{k}",
                "prompt": it.prompt,
                "completion": it.completion,
                "reference": None,
                "generator": "g",
                "prompt_id": f"p{k}",
                "sample_index": 0,
            }
            for k, it in enumerate(items)
        ]
    )
    judged = judge_candidates(cfg, candidates, LLMJudge(cfg.llm, engine))
    assert judged["parse_status"][1:] == [
        "parse_failed: missing: format; out_of_range: step_accuracy=9 (scale 1-5)",
        "parse_failed: not_finite: correctness=nan",
        "parse_failed: no_scores: no score for any dimension",
        "parse_failed: out_of_range: step_accuracy=7 (scale 1-5)",
    ]
    quality = write_quality(cfg, judged, tmp_path)
    assert quality["failure_reasons"] == {"parse_failed": 4}
    assert quality["dimension_failures"] == {
        "correctness": {"not_finite": 1},
        "step_accuracy": {"out_of_range": 2},
        "format": {"missing": 1},
    }
    markdown = (tmp_path / "quality.md").read_text()
    assert "| dimension | failed | missing | not_finite | out_of_range |" in markdown
    assert "| step_accuracy | 2 | 0 | 0 | 2 |" in markdown
