"""Evaluation on local benchmark files (GSM8K / MATH-500 shapes) with the math verifier, on the real vLLM engine."""

import json

import pandas as pd
import pytest

from prefopt.evaluation.accuracy import evaluate_model
from prefopt.evaluation.config import BenchmarkFile, EvaluationConfig
from prefopt.evaluation.report import results_markdown
from prefopt.generation.engines import SamplingParams, render_prompts
from prefopt.judging.math_verifier import score_math
from prefopt.schemas import DataError
from prefopt.world.config import WorldConfig
from prefopt.world.tasks import Difficulty, sample_problems


@pytest.fixture(scope="module")
def benchmark_files(tmp_path_factory):
    """A GSM8K-style .jsonl (question, solution ending '#### n') and a MATH-500-style .parquet (problem, answer)."""
    root = tmp_path_factory.mktemp("bench")
    rows = sample_problems(12, Difficulty(min_ops=1, max_ops=2), seed=42)
    gsm = root / "gsm8k.jsonl"
    gsm.write_text(
        "\n".join(
            json.dumps({"question": r["problem"], "answer": f"{r['solution']}\n#### {r['answer']}"}) for r in rows[:8]
        )
    )
    math500 = root / "math500.parquet"
    pd.DataFrame({"problem": [r["problem"] for r in rows[8:]], "answer": [r["answer"] for r in rows[8:]]}).to_parquet(
        math500
    )
    return gsm, math500


def test_benchmark_files_are_scored_by_the_math_verifier(benchmark_files, vllm_engine, tiny_models):
    gsm, math500 = benchmark_files
    cfg = EvaluationConfig(
        tiny_world=False,
        max_new_tokens=40,
        benchmarks=[
            BenchmarkFile(name="gsm8k", path=str(gsm)),
            BenchmarkFile(name="math500", path=str(math500), prompt_field="problem", domain="out_of_domain"),
        ],
    )
    predictions, summary = evaluate_model(tiny_models["strong"], WorldConfig(), cfg, engine=vllm_engine)
    frame = predictions.to_pandas()
    assert summary["gsm8k"]["n"] == 8 and summary["math500"]["n"] == 4
    assert summary["math500"]["domain"] == "out_of_domain"
    for _, row in frame.iterrows():
        assert row["correct"] == bool(
            score_math(row["problem"], row["completion"], row["answer"]).scores["correctness"]
        )
    assert summary["gsm8k"]["accuracy"] == pytest.approx(frame[frame["set"] == "gsm8k"]["correct"].mean())
    # The model was asked through the same engine, greedily: the completions are reproducible.
    [[first]] = vllm_engine.generate(
        [frame["problem"].iloc[0]], SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    )
    assert first.text == frame["completion"].iloc[0]


def test_a_system_prompt_reaches_the_chat_template(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["strong"])
    assert render_prompts(tokenizer, ["1+2"], "Overall score: 10.") == ["Overall score: 10.\nQ:1+2\nA:"]
    assert render_prompts(tokenizer, ["1+2"]) == ["Q:1+2\nA:"]


@pytest.mark.parametrize(
    "content, field, message",
    [
        ('{"question": "1+1", "answer": "2"}\n{"question": "", "answer": "3"}', {}, "row 1: needs a non-empty"),
        ('{"q": "1+1", "answer": "2"}', {}, "missing column 'question'"),
    ],
)
def test_bad_benchmark_files_name_the_file_row_and_column(tmp_path, tiny_models, content, field, message):
    path = tmp_path / "bench.jsonl"
    path.write_text(content)
    cfg = EvaluationConfig(tiny_world=False, benchmarks=[BenchmarkFile(name="b", path=str(path), **field)])
    with pytest.raises(DataError, match=message) as err:
        evaluate_model(tiny_models["strong"], WorldConfig(), cfg)
    assert str(path) in str(err.value)


def test_unsupported_and_missing_files(tmp_path, tiny_models):
    for path, message in ((tmp_path / "b.csv", "unsupported file type"), (tmp_path / "none.jsonl", "file not found")):
        path.write_text("x") if path.suffix == ".csv" else None
        cfg = EvaluationConfig(tiny_world=False, benchmarks=[BenchmarkFile(name="b", path=str(path))])
        with pytest.raises(DataError, match=message):
            evaluate_model(tiny_models["strong"], WorldConfig(), cfg)


def test_results_table_has_a_column_per_set_and_domain_means():
    def summary(a, b, c):
        return {
            "gsm8k": {"accuracy": a, "n": 8, "domain": "in_domain"},
            "math500": {"accuracy": b, "n": 4, "domain": "in_domain"},
            "theoremqa": {"accuracy": c, "n": 4, "domain": "out_of_domain"},
        }

    table = results_markdown(
        "r", [], {"policy (before DPO)": summary(0.5, 0.25, 0.1), "policy (after DPO)": summary(0.75, 0.25, 0.2)}, None
    )
    assert "| model | gsm8k accuracy | math500 accuracy | theoremqa accuracy | in-domain mean |" in table
    assert "| policy (after DPO) | 75.0% | 25.0% | 20.0% | 50.0% |" in table
    assert "| DPO gain (after - before) | +25.0 pp | +0.0 pp | +10.0 pp | +12.5 pp |" in table


def test_the_trained_system_prompt_reaches_only_the_trained_policy(run_dir):
    import dataclasses

    from prefopt.cache import read_manifest
    from prefopt.pipeline import Pipeline
    from prefopt.recipe import load_recipe

    from conftest import CI_RECIPE

    recipe = load_recipe(CI_RECIPE)
    recipe = dataclasses.replace(
        recipe,
        output_dir=str(run_dir),
        evaluation=dataclasses.replace(recipe.evaluation, trained_system_prompt="Score 10."),
    )
    pipeline = Pipeline(recipe)
    results = pipeline.evaluate()
    assert set(results) == {"strong", "weak", "policy (before DPO)", "policy (after DPO)"}
    asked = {
        o.name: read_manifest(o.path)["config"]["system_prompt"]
        for o in pipeline.outcomes
        if o.name.startswith("eval ")
    }
    assert asked == {
        "eval strong": None,
        "eval weak": None,
        "eval policy (before DPO)": None,
        "eval policy (after DPO)": "Score 10.",
    }
    after = [o.path for o in pipeline.outcomes if o.name == "eval policy (after DPO)"][0]
    from datasets import load_from_disk

    assert len(load_from_disk(str(after / "data"))) == 32  # every problem answered under the conditioning
