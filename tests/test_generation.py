import json

import pytest

from prefopt.engines.base import SamplingParams
from prefopt.engines.transformers import TransformersEngine
from prefopt.generation.config import GenerationConfig, GeneratorConfig, PromptSource
from prefopt.generation.generate import load_prompts, run_generation
from prefopt.schemas import CANDIDATES, DataError
from prefopt.world.config import WorldConfig


@pytest.fixture(scope="module")
def engine(tiny_models):
    eng = TransformersEngine(tiny_models["strong"])
    yield eng
    eng.close()


def test_engine_returns_n_seeded_samples_per_prompt(engine):
    prompts = ["1+2", "3*4-1", "9-8"]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=11)
    first = engine.generate(prompts, params)
    assert [len(g) for g in first] == [3, 3, 3]
    assert engine.generate(prompts, params) == first
    other = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=12))
    assert other != first


def test_greedy_decoding_answers_and_finish_reasons(engine):
    [[short]] = engine.generate(["2+2"], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    assert short.finish_reason == "length" and len(short.text) <= 2
    [[full]] = engine.generate(["2+2"], SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    assert full.finish_reason == "stop" and "=" in full.text


def test_stop_strings_and_logprobs_with_transformers(engine):
    import math

    [[full]] = engine.generate(["7*3+4"], SamplingParams(n=1, temperature=0.0, max_new_tokens=40, logprobs=True))
    [[cut]] = engine.generate(
        ["7*3+4"], SamplingParams(n=1, temperature=0.0, max_new_tokens=40, stop=("=",), logprobs=True)
    )
    assert "=" in full.text and cut.text == full.text.split("=")[0] and cut.finish_reason == "stop"
    # every generated token has a log-probability (end-of-sequence included), matching the greedy choice
    assert len(full.token_logprobs) == len(full.text) + 1 and all(lp <= 0 for lp in full.token_logprobs)
    assert full.cumulative_logprob == pytest.approx(sum(full.token_logprobs))
    assert cut.token_logprobs == pytest.approx(full.token_logprobs[: len(cut.token_logprobs)])
    assert math.isfinite(cut.cumulative_logprob)


def test_generate_stage_writes_the_candidate_schema(tiny_models, tmp_path):
    from datasets import load_from_disk

    cfg = GenerationConfig(
        batch_size=2,
        shard_size=3,
        generators=[
            GeneratorConfig(name="strong", model="world:strong", n=2, max_new_tokens=30),
            GeneratorConfig(name="weak", model="world:weak", n=3, max_new_tokens=30, logprobs=True),
        ],
    )
    prompts = load_prompts(PromptSource(num_prompts=5), WorldConfig())
    assert run_generation(cfg, prompts, lambda ref: tiny_models[ref.split(":")[1]], tmp_path)
    ds = load_from_disk(str(tmp_path / "data"))
    assert sorted(p.name for p in (tmp_path / "shards" / "weak").iterdir()) == ["00000.parquet", "00001.parquet"]
    assert set(CANDIDATES) <= set(ds.column_names)
    assert len(ds) == 5 * (2 + 3) == len(set(ds["candidate_id"]))
    assert ds.filter(lambda r: r["generator"] == "weak")["sample_index"].count(2) == 5
    assert all(r["reference"] for r in ds) and ds[0]["sampling"]["max_new_tokens"] == 30
    for row in ds:
        if row["generator"] == "weak":  # logprobs: true
            assert (
                row["cumulative_logprob"] == pytest.approx(sum(row["token_logprobs"])) and row["cumulative_logprob"] < 0
            )
        else:
            assert row["token_logprobs"] is None and row["cumulative_logprob"] is None


def test_prompts_from_a_jsonl_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"question": q, "gold": a}) for q, a in [("1+1", 2), ("2*3", 6)]))
    rows = load_prompts(
        PromptSource(source="file", path=str(path), prompt_field="question", reference_field="gold"), WorldConfig()
    )
    assert [(r["prompt"], r["reference"]) for r in rows] == [("1+1", "2"), ("2*3", "6")]
    with pytest.raises(DataError, match=r"prompts.jsonl: column prompt: missing \(generation.prompts.prompt_field"):
        load_prompts(PromptSource(source="file", path=str(path)), WorldConfig())
    path.write_text(json.dumps({"prompt": "1+1"}) + "\n" + json.dumps({"prompt": ""}))
    with pytest.raises(DataError, match=r"prompts.jsonl: row 1, column prompt: empty text"):
        load_prompts(PromptSource(source="file", path=str(path)), WorldConfig())


def shard_recipe(ci_recipe, **generation):
    import dataclasses

    gen = dataclasses.replace(ci_recipe.generation, **generation)
    return dataclasses.replace(ci_recipe, generation=gen)


def read_candidates(stage_dir):
    from datasets import load_from_disk

    return load_from_disk(str(stage_dir / "data")).to_pandas()


@pytest.fixture(scope="module")
def sharded_reference(ci_recipe, tiny_models, tmp_path_factory):
    """The candidates of an uninterrupted, unsharded run with 8-prompt units."""
    from prefopt.pipeline import Pipeline

    recipe = shard_recipe(ci_recipe, shard_size=8, batch_size=8)
    out = Pipeline(recipe).generate(tmp_path_factory.mktemp("gen") / "reference")
    return recipe, read_candidates(out)


def test_workers_share_units_and_the_last_one_merges(sharded_reference, tmp_path):
    from prefopt.cache import is_complete
    from prefopt.pipeline import Pipeline

    recipe, reference = sharded_reference
    out = tmp_path / "sharded"
    Pipeline(recipe).generate(out, shard=1, num_shards=2)
    assert not is_complete(out) and not (out / "data").exists()
    Pipeline(recipe).generate(out, shard=0, num_shards=2)
    assert is_complete(out)
    assert read_candidates(out).equals(reference)


def test_data_parallel_workers_match_a_single_process(sharded_reference, tmp_path):
    from prefopt.pipeline import Pipeline

    recipe, reference = sharded_reference
    out = Pipeline(shard_recipe(recipe, data_parallel_size=2)).generate(tmp_path / "dp")
    assert read_candidates(out).equals(reference)


def test_a_killed_run_resumes_without_redoing_or_duplicating(tiny_models, tmp_path):
    """Kill a real `prefopt generate` mid-way; the rerun keeps finished shards and adds each candidate once."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from conftest import CI_RECIPE

    recipe_data = yaml.safe_load(CI_RECIPE.read_text())
    recipe_data["generation"].update(shard_size=4, batch_size=4)
    recipe_data["generation"]["prompts"]["num_prompts"] = 96  # 2 generators x 24 units
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_data))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "prefopt.cli", "generate", str(recipe_path), "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("shards/*/*.parquet"))) < 2:
        assert process.poll() is None and time.time() < deadline, "generation ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("shards/*/*.parquet")}
    assert 2 <= len(done_before) < 48 and not (out / "data").exists()

    assert subprocess.run(command, capture_output=True).returncode == 0
    for path, stamp in done_before.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was regenerated"
    from prefopt.pipeline import Pipeline
    from prefopt.recipe import load_recipe

    reference = read_candidates(Pipeline(load_recipe(recipe_path)).generate(tmp_path / "uninterrupted"))
    resumed = read_candidates(out)
    assert resumed["candidate_id"].is_unique and len(resumed) == len(reference)
    assert resumed.equals(reference)
    assert not list(out.glob("**/.*tmp*")), "temporary files left behind"


def test_compact_json_regex_matches_exactly_the_compact_objects_of_a_flat_schema():
    import json
    import re

    from prefopt.engines.server import compact_json_regex

    schema = {
        "type": "object",
        "required": ["b", "a", "c"],
        "properties": {
            "a": {"type": "integer", "minimum": 1, "maximum": 10},
            "b": {"type": "number"},
            "c": {"enum": ["A", "B"]},
        },
    }
    regex = compact_json_regex(schema)
    compact = json.dumps({"b": -2.5, "a": 10, "c": "B"}, separators=(",", ":"))
    assert re.fullmatch(regex, compact)
    for bad in (
        compact.replace(":10", ":11"),
        compact.replace(",", ", "),
        compact.replace('"B"', '"C"'),
        json.dumps({"a": 10, "b": -2.5, "c": "B"}, separators=(",", ":")),
        compact + " ",
    ):
        assert not re.fullmatch(regex, bad), bad
    assert compact_json_regex({"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}}) is None
    assert (
        compact_json_regex(
            {
                "type": "object",
                "required": ["x"],
                "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 10**6}},
            }
        )
        is None
    )
