"""Benchmarks straight from the Hub (`path: openai/gsm8k`, config, split, revision), offline: the datasets cache holds
tiny GSM8K- and MATH-500-format datasets as `load_dataset` leaves them after reading the Hub at a commit, and the
Hub cache's refs name that commit (tests/test_hub_revisions.py); evaluation reads them, math-verify scores them, and
the eval stage's key follows the commit."""

import json
import shutil

import datasets
import pytest
import yaml
from datasets import Dataset
from datasets.load import dataset_module_factory, get_dataset_builder_class
from datasets.naming import camelcase_to_snakecase
from huggingface_hub import constants

from prefopt import hub
from prefopt.cli import main
from prefopt.evaluation.accuracy import benchmark_set
from prefopt.evaluation.config import BenchmarkFile
from prefopt.judging.math_verifier import score_math
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe
from prefopt.schemas import DataError

from conftest import CI_RECIPE

A, B = "a" * 40, "b" * 40
GSM8K = [  # openai/gsm8k, config main: question, answer (the worked solution ending '#### n')
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5 apples.\n#### 5"},
    {"question": "Half of 12?", "answer": "12/2=<<12/2=6>>6\n#### 6"},
    {"question": "7 minus 4?", "answer": "7-4=<<7-4=3>>3\n#### 3"},
]
MATH500 = [  # HuggingFaceH4/MATH-500, its one config: problem, solution, answer, subject, level, unique_id
    {
        "problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?",
        "solution": "$\\frac12+\\frac14=\\boxed{\\frac{3}{4}}$.",
        "answer": "\\frac{3}{4}",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
    {
        "problem": "Solve $x+2=5$.",
        "solution": "$x=\\boxed{3}$.",
        "answer": "3",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "test/algebra/2.json",
    },
]
GSM8K_BENCH = {"name": "gsm8k", "preset": "gsm8k", "path": "openai/gsm8k", "config": "main", "split": "test"}
MATH_BENCH = {"name": "math500", "preset": "math500", "path": "HuggingFaceH4/MATH-500", "split": "test"}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Empty Hugging Face caches (the Hub's and datasets'), offline."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    hub.resolve_revision.cache_clear()
    yield tmp_path
    hub.resolve_revision.cache_clear()


def publish(cache, repo: str, config: str | None, splits: dict[str, list[dict]], commit: str) -> None:
    """What ``load_dataset(repo, config)`` leaves on disk after reading a script-free Hub repository at ``commit``:
    the prepared Arrow splits under ``<datasets cache>/<org>___<name>/<config>/0.0.0/<commit>/`` (where an offline
    load finds them) and the Hub cache's ``refs/main``."""
    config = config or "default"
    repo_dir = cache / "repos" / repo / commit  # the repository: data files and a card declaring the config
    files = ""
    for split, rows in splits.items():
        (repo_dir / config).mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows).to_parquet(repo_dir / config / f"{split}-00000-of-00001.parquet")
        files += f"  - split: {split}\n    path: {config}/{split}-*\n"
    (repo_dir / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")
    module = dataset_module_factory(str(repo_dir))
    org, name = repo.split("/")
    builder = get_dataset_builder_class(module)(
        cache_dir=str(repo_dir / "built"),
        config_name=config,
        hash=commit,
        **{**module.builder_kwargs, "dataset_name": name},
    )
    builder.download_and_prepare()
    shutil.copytree(
        builder.cache_dir, cache / "datasets" / f"{org}___{camelcase_to_snakecase(name)}" / config / "0.0.0" / commit
    )
    refs = cache / "hub" / f"datasets--{org}--{name}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(commit)
    hub.resolve_revision.cache_clear()


def recipe_file(tmp_path, *benchmarks: dict) -> str:
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["evaluation"] = {"tiny_world": False, "benchmarks": list(benchmarks), "max_new_tokens": 12}
    data["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "hub_benchmarks.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_hub_benchmarks_are_read_scored_by_math_verify_and_keyed_by_commit(hub_cache, tiny_models, capsys):
    publish(hub_cache, "openai/gsm8k", "main", {"train": GSM8K[:1], "test": GSM8K}, A)
    publish(hub_cache, "HuggingFaceH4/MATH-500", None, {"test": MATH500}, A)
    recipe = recipe_file(hub_cache, GSM8K_BENCH, MATH_BENCH)
    assert main(["eval", recipe, "--model", tiny_models["strong"]]) == 0
    assert "| gsm8k accuracy | math500 accuracy |" in capsys.readouterr().out

    pipeline = Pipeline(load_recipe(recipe))
    key = pipeline.eval_key(pipeline.model_key(tiny_models["strong"]))
    out = pipeline.stage_dir("eval", key)
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["n"] for k, v in summary.items()} == {"gsm8k": 3, "math500": 2}  # the test split, every row
    rows = datasets.load_from_disk(str(out / "data")).to_list()
    assert [r["problem"] for r in rows] == [r["question"] for r in GSM8K] + [r["problem"] for r in MATH500]
    assert [r["answer"] for r in rows] == [r["answer"] for r in GSM8K] + [r["answer"] for r in MATH500]
    for r in rows:  # the tiny model's answers, scored by math-verify against the reference
        assert r["correct"] == bool(score_math(r["problem"], r["completion"], r["answer"]).scores["correctness"])

    gsm, math = (benchmark_set(BenchmarkFile(**b)) for b in (GSM8K_BENCH, MATH_BENCH))
    assert gsm.prompts[0].startswith(GSM8K[0]["question"]) and "\\boxed{}" in gsm.prompts[0]  # the preset's prompt
    right = ["So he has \\boxed{5} apples.", "The answer is 6.", "#### 4"]
    assert [gsm.judge(p, c, a)[0] for p, c, a in zip(gsm.problems, right, gsm.answers)] == [True, True, False]
    assert [math.judge(p, c, a)[0] for p, c, a in zip(math.problems, ["$0.75$", "x = 4"], math.answers)] == [
        True,
        False,
    ]

    def eval_key(*benchmarks):
        return Pipeline(load_recipe(recipe_file(hub_cache, *benchmarks))).eval_key("m")

    pinned = dict(MATH_BENCH, revision=A)  # a commit given: already resolved
    before, before_pinned = eval_key(GSM8K_BENCH, MATH_BENCH), eval_key(pinned)
    assert eval_key(GSM8K_BENCH, MATH_BENCH) == before  # stable while main stays
    publish(hub_cache, "HuggingFaceH4/MATH-500", None, {"test": MATH500[:1]}, B)  # a new push to main
    assert eval_key(GSM8K_BENCH, MATH_BENCH) != before and eval_key(pinned) == before_pinned


def test_the_split_slice_and_limit_choose_the_rows(hub_cache):
    publish(hub_cache, "openai/gsm8k", "main", {"train": GSM8K[:1], "test": GSM8K}, A)
    assert benchmark_set(BenchmarkFile(**dict(GSM8K_BENCH, split="train"))).problems == [GSM8K[0]["question"]]
    assert benchmark_set(BenchmarkFile(**dict(GSM8K_BENCH, split="test[1:]"))).problems == [
        r["question"] for r in GSM8K[1:]
    ]
    assert len(benchmark_set(BenchmarkFile(**dict(GSM8K_BENCH, limit=2))).problems) == 2


@pytest.mark.parametrize(
    "change, names",
    [
        ({"split": "validation"}, ["openai/gsm8k", "validation", "'test'", "'train'"]),  # the splits it has
        ({"answer_field": "final"}, ["openai/gsm8k", "missing column 'final'", "question", "answer"]),
        ({"config": "socratic"}, ["openai/gsm8k", "socratic", "main"]),  # offline: the configs cached
    ],
)
def test_hub_benchmark_errors_are_one_line_before_any_model(hub_cache, tmp_path, capsys, change, names):
    publish(hub_cache, "openai/gsm8k", "main", {"train": GSM8K[:1], "test": GSM8K}, A)
    capsys.readouterr()
    assert main(["eval", recipe_file(tmp_path, dict(GSM8K_BENCH, **change))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prefopt: error: openai/gsm8k") and "\n" not in err
    assert all(name in err for name in names), err
    with pytest.raises(DataError):  # and read by the eval stage itself the same way
        benchmark_set(BenchmarkFile(**dict(GSM8K_BENCH, **change)))


def test_a_hub_benchmark_needs_its_split_and_a_local_one_takes_no_hub_fields(tmp_path, capsys):
    for bench, names in (
        ({"name": "g", "path": "openai/gsm8k", "config": "main"}, ["split", "openai/gsm8k", "split: test"]),
        ({"name": "g", "path": str(tmp_path / "g.jsonl"), "config": "main"}, ["config", "local path"]),
    ):
        with pytest.raises(ValueError) as err:
            BenchmarkFile(**bench)
        assert all(name in str(err.value) for name in names), err.value
        assert main(["plan", recipe_file(tmp_path, bench)]) == 2
        assert "evaluation.benchmarks[0]" in capsys.readouterr().err
