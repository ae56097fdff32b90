import json

import pytest

from prefopt.configs import GenerationConfig, GeneratorConfig, PromptSource, WorldConfig
from prefopt.generation.engines import SamplingParams, TransformersEngine
from prefopt.generation.generate import generate_candidates, load_prompts
from prefopt.schemas import CANDIDATES, DataError


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


def test_generate_stage_writes_the_candidate_schema(tiny_models):
    cfg = GenerationConfig(batch_size=4, generators=[
        GeneratorConfig(name="strong", model="world:strong", n=2, max_new_tokens=30),
        GeneratorConfig(name="weak", model="world:weak", n=3, max_new_tokens=30),
    ])
    prompts = load_prompts(PromptSource(num_prompts=5), WorldConfig())
    ds = generate_candidates(cfg, prompts, {"strong": tiny_models["strong"], "weak": tiny_models["weak"]})
    assert set(CANDIDATES) <= set(ds.column_names)
    assert len(ds) == 5 * (2 + 3) == len(set(ds["candidate_id"]))
    assert ds.filter(lambda r: r["generator"] == "weak")["sample_index"].count(2) == 5
    assert all(r["reference"] for r in ds) and ds[0]["sampling"]["max_new_tokens"] == 30


def test_prompts_from_a_jsonl_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"question": q, "gold": a}) for q, a in [("1+1", 2), ("2*3", 6)]))
    rows = load_prompts(PromptSource(source="file", path=str(path), prompt_field="question",
                                     reference_field="gold"), WorldConfig())
    assert [(r["prompt"], r["reference"]) for r in rows] == [("1+1", "2"), ("2*3", "6")]
    with pytest.raises(DataError, match=r"prompts.jsonl: missing column 'prompt'"):
        load_prompts(PromptSource(source="file", path=str(path)), WorldConfig())
    path.write_text(json.dumps({"prompt": "1+1"}) + "\n" + json.dumps({"prompt": ""}))
    with pytest.raises(DataError, match=r"prompts.jsonl: row 1: column 'prompt' must be non-empty text"):
        load_prompts(PromptSource(source="file", path=str(path)), WorldConfig())
