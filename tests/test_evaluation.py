"""Evaluation on local benchmark files (GSM8K / MATH-500 shapes) with the math verifier, on the real vLLM engine."""

import json

import pandas as pd
import pytest

from prefopt.engines.base import SamplingParams, render_prompts
from prefopt.evaluation.accuracy import evaluate_model
from prefopt.evaluation.config import BenchmarkFile, EvaluationConfig
from prefopt.evaluation.report import results_markdown
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
    predictions, summary = evaluate_model(tiny_models["strong"], {}, cfg, engine=vllm_engine)
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
        evaluate_model(tiny_models["strong"], {}, cfg)
    assert str(path) in str(err.value)


def test_unsupported_and_missing_files(tmp_path, tiny_models):
    for path, message in ((tmp_path / "b.txt", "unsupported file type"), (tmp_path / "none.jsonl", "no such file")):
        path.write_text("x") if path.suffix == ".txt" else None
        cfg = EvaluationConfig(tiny_world=False, benchmarks=[BenchmarkFile(name="b", path=str(path))])
        with pytest.raises(DataError, match=message):
            evaluate_model(tiny_models["strong"], {}, cfg)


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


def test_sampled_evaluation_scores_pass_at_k_and_maj_at_k_from_its_samples(tiny_models):
    import numpy as np

    from prefopt.engines.registry import make_engine
    from prefopt.evaluation.metrics import maj_at_k, pass_at_k

    world = WorldConfig()
    greedy = EvaluationConfig(num_problems=4, max_new_tokens=32)
    sampled = EvaluationConfig(num_problems=4, max_new_tokens=32, samples=4, temperature=1.5, k=[1, 2, 4])
    engine = make_engine("transformers", tiny_models["weak"])
    try:
        plain, plain_summary = evaluate_model(tiny_models["weak"], {"tiny_world": world}, greedy, engine=engine)
        predictions, summary = evaluate_model(tiny_models["weak"], {"tiny_world": world}, sampled, engine=engine)
    finally:
        engine.close()
    frame = predictions.to_pandas()
    # The greedy columns and accuracy are what a greedy-only evaluation gives.
    assert frame["completion"].tolist() == plain.to_pandas()["completion"].tolist()
    assert set(plain.column_names) == {"set", "domain", "problem", "answer", "completion", "correct"}
    assert {k: v["accuracy"] for k, v in summary.items()} == {k: v["accuracy"] for k, v in plain_summary.items()}
    assert all(len(s) == 4 for s in frame["samples"]) and len({t for s in frame["samples"] for t in s}) > len(frame)
    for name, group in frame.groupby("set"):
        hits = np.array([list(c) for c in group["sample_correct"]], dtype=bool)
        assert summary[name]["pass@1"] == pytest.approx(hits.mean())
        assert summary[name]["pass@2"] == pytest.approx(pass_at_k(4, hits.sum(1), 2).mean())
        assert summary[name]["pass@4"] == pytest.approx(hits.any(1).mean())
        assert summary[name]["maj@4"] == pytest.approx(maj_at_k(list(group["sample_answers"]), hits, 4).mean())
        for completions, answers in zip(group["samples"], group["sample_answers"]):
            assert [a is not None and c.strip().endswith(f". ={a}") for c, a in zip(completions, answers)] == [
                a is not None for a in answers
            ]
    assert summary["in_domain"]["pass@1"] <= summary["in_domain"]["pass@2"] <= summary["in_domain"]["pass@4"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"samples": 0}, "samples must be >= 1"),
        ({"samples": 4, "temperature": 0.0}, "temperature must be > 0"),
        ({"samples": 4, "k": [2, 8]}, "k must be between 1 and samples (4), got [8]"),
        ({"k": [1]}, "needs samples > 1"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    ],
)
def test_sampled_evaluation_settings_are_checked(fields, message):
    with pytest.raises(ValueError) as err:
        EvaluationConfig(**fields)
    assert message in str(err.value)
    assert EvaluationConfig(samples=8).ks == [8] and EvaluationConfig(samples=8, k=[4, 1, 4]).ks == [1, 4]


def test_results_tables_with_samples_and_intervals():
    import numpy as np

    from prefopt.evaluation.report import interval_table

    def summary(acc, p1):
        return {
            "in_domain": {
                "accuracy": acc,
                "n": 4,
                "domain": "in_domain",
                "samples": 4,
                "pass@1": p1,
                "pass@4": 1.0,
                "maj@4": acc,
            }
        }

    accuracies = {"policy (before DPO)": summary(0.25, 0.3125), "policy (after DPO)": summary(0.75, 0.5)}
    before = {"in_domain": {"greedy": np.array([1.0, 0, 0, 0]), "pass@1": np.array([0.5, 0.25, 0.25, 0.25])}}
    after = {"in_domain": {"greedy": np.array([1.0, 1, 1, 0]), "pass@1": np.array([0.75, 0.5, 0.5, 0.25])}}
    intervals = interval_table({"policy (before DPO)": before, "policy (after DPO)": after}, tuple(accuracies))
    table = results_markdown("r", [], accuracies, None, tuple(accuracies), intervals)
    assert "| policy (after DPO) | 75.0% |" in table  # the greedy table as it was
    assert "| model | in_domain pass@1 | in_domain pass@4 | in_domain maj@4 |" in table
    assert "| policy (after DPO) | 50.0% | 100.0% | 75.0% |" in table
    gain = intervals["gain"]["in_domain"]["pass@1"]
    assert gain["mean"] == pytest.approx(0.1875) and gain["low"] == pytest.approx(0.0625)
    assert gain["high"] == pytest.approx(0.25)  # every problem gains 0 or 0.25: a paired interval stays in [0, 0.25]
    assert "| policy (before DPO) - policy (after DPO)" not in table
    assert "| policy (after DPO) - policy (before DPO) | +50.0 pp [" in table


def test_report_run_writes_intervals_gap_buckets_and_plots(run_dir, tmp_path, capsys):
    from prefopt.cli import main

    from conftest import CI_RECIPE

    out = tmp_path / "report"
    assert main(["report", str(CI_RECIPE), "--output-dir", str(run_dir), "--output", str(out)]) == 0
    table = (out / "results.md").read_text()
    data = json.loads((out / "results.json").read_text())
    # The greedy table as `prefopt run` writes it, then the intervals computed from the eval stages on disk.
    assert table.startswith((run_dir / "results.md").read_text().split("\n\n| model | in_domain greedy")[0])
    after = data["intervals"]["models"]["policy (after DPO)"]["in_domain"]["greedy"]
    assert after["mean"] == pytest.approx(data["accuracy"]["policy (after DPO)"]["in_domain"]["accuracy"])
    assert after["low"] <= after["mean"] <= after["high"]
    gain = data["intervals"]["gain"]["in_domain"]["greedy"]
    assert gain["mean"] == pytest.approx(
        after["mean"] - data["accuracy"]["policy (before DPO)"]["in_domain"]["accuracy"]
    )
    assert "| policy (after DPO) - policy (before DPO) |" in table
    assert "judged-gap bucket" not in table and "gap_buckets" not in data  # the CI loss logs no gap buckets
    for name in ("accuracy.png", "training_gap_buckets.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", "run", str(CI_RECIPE), "--output-dir", str(tmp_path / "empty")]) == 2
    assert "no finished evaluation" in capsys.readouterr().err


def test_the_schema_doc_lists_the_sampled_columns():
    from pathlib import Path

    from prefopt.evaluation.accuracy import SAMPLED_COLUMNS

    doc = (Path(__file__).parents[1] / "docs" / "schemas.md").read_text()
    assert all(f"| `{column}` | {text} |" in doc for column, text in SAMPLED_COLUMNS.items())


def test_gap_bucket_metrics_from_the_trainer_log(tmp_path):
    from prefopt.evaluation.report import gap_bucket_markdown, gap_buckets
    from prefopt.plots import plot_gap_buckets

    log = [
        {"step": 1, "loss": 0.7, "rewards/accuracies_gap[-inf,0.25)": 0.5, "rewards/margins_gap[-inf,0.25)": 0.0},
        {"step": 2, "rewards/accuracies_gap[-inf,0.25)": 0.25, "rewards/margins_gap[-inf,0.25)": -0.1},
        {"step": 2, "rewards/accuracies_gap[0.75,inf)": 1.0, "rewards/margins_gap[0.75,inf)": 0.4},
        {"train_runtime": 3.0},
    ]
    buckets = gap_buckets(log)
    assert list(buckets) == ["gap[-inf,0.25)", "gap[0.75,inf)"]
    assert buckets["gap[-inf,0.25)"] == {
        "logged_steps": 2,
        "accuracy": {"first": 0.5, "last": 0.25, "mean": 0.375},
        "margin": {"first": 0.0, "last": -0.1, "mean": pytest.approx(-0.05)},
    }
    assert "| gap[0.75,inf) | 1 | 1.000 / 1.000 / 1.000 | 0.400 / 0.400 / 0.400 |" in gap_bucket_markdown(buckets)
    assert plot_gap_buckets(log, tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class CannedEngine:
    """An engine answering each prompt with fixed completions (greedy: one; sampled: a list), recording prompts."""

    def __init__(self, greedy: dict[str, str], sampled: dict[str, list[str]]):
        self.greedy, self.sampled, self.prompts = greedy, sampled, []

    def generate(self, prompts, params, system=None):
        from prefopt.engines.base import Completion

        self.prompts += prompts
        key = {p.split("\n\n")[0]: p for p in prompts}
        return [
            [Completion(t, "stop") for t in ([self.greedy[q]] if params.n == 1 else self.sampled[q][: params.n])]
            for q in key
        ]

    def close(self):
        pass


def test_gsm8k_and_math500_formats_with_presets_and_sampled_math_answers(tmp_path):
    """Local files in the Hub datasets' own formats (openai/gsm8k, HuggingFaceH4/MATH-500), read through their
    presets; sampled answers scored by math-verify, voted on by their parsed answer."""
    gsm = tmp_path / "gsm8k_test.jsonl"
    gsm.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"question": "Ann has 48 clips and sells half. How many are left?", "answer": "48/2 = 24\n#### 24"},
                {"question": "Bo earns $12 an hour for 50 minutes. How much?", "answer": "12/60*50 = 10\n#### 10"},
            ]
        )
    )
    math500 = tmp_path / "math500.parquet"
    pd.DataFrame(
        {
            "problem": ["What is $2^{10}$?", "What is $\\frac{1}{2} + \\frac{1}{3}$?"],
            "solution": ["$2^{10} = \\boxed{1024}$", "$\\boxed{\\frac{5}{6}}$"],
            "answer": ["1024", "\\frac{5}{6}"],
            "subject": ["Algebra", "Prealgebra"],
            "level": [1, 1],
            "unique_id": ["test/algebra/1.json", "test/prealgebra/2.json"],
        }
    ).to_parquet(math500)
    boxed = "The answer is \\boxed{{{}}}."
    greedy = {
        "Ann has 48 clips and sells half. How many are left?": boxed.format(24),
        "Bo earns $12 an hour for 50 minutes. How much?": boxed.format(12),
        "What is $2^{10}$?": boxed.format(1024),
        "What is $\\frac{1}{2} + \\frac{1}{3}$?": boxed.format("\\frac{5}{6}"),
    }
    sampled = {
        "Ann has 48 clips and sells half. How many are left?": [boxed.format(x) for x in (24, 20, 24)],
        "Bo earns $12 an hour for 50 minutes. How much?": [boxed.format(x) for x in (10, 12, 12)],
        "What is $2^{10}$?": [boxed.format(x) for x in (1024, 1000, 24)],  # a three-way tie: the first answer
        "What is $\\frac{1}{2} + \\frac{1}{3}$?": [
            boxed.format(x) for x in ("\\frac{2}{5}", "\\frac{5}{6}", "\\frac{5}{6}")
        ],
    }
    cfg = EvaluationConfig(
        tiny_world=False,
        samples=3,
        k=[1, 3],
        benchmarks=[
            BenchmarkFile(name="gsm8k", path=str(gsm), preset="gsm8k"),
            BenchmarkFile(name="math500", path=str(math500), preset="math500", domain="out_of_domain"),
        ],
    )
    engine = CannedEngine(greedy, sampled)
    predictions, summary = evaluate_model("canned", {}, cfg, engine=engine)
    assert all(p.endswith("put your final answer within \\boxed{}.") for p in engine.prompts)
    assert summary["gsm8k"] == {
        "accuracy": 0.5, "n": 2, "domain": "in_domain", "samples": 3,
        "pass@1": pytest.approx(0.5), "pass@3": 1.0, "maj@3": 0.5, "maj@1": 1.0,
    }  # fmt: skip
    assert summary["math500"] == {
        "accuracy": 1.0, "n": 2, "domain": "out_of_domain", "samples": 3,
        "pass@1": pytest.approx(0.5), "pass@3": 1.0, "maj@3": 1.0, "maj@1": 0.5,
    }  # fmt: skip
    assert predictions["sample_answers"][0] == ["24", "20", "24"]
    assert [p["problem"] for p in predictions][2:] == ["What is $2^{10}$?", "What is $\\frac{1}{2} + \\frac{1}{3}$?"]
