"""The vLLM engines for real: offline vllm.LLM (CPU build here) and a real OpenAI-compatible vLLM server."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from prefopt.engines.base import SamplingParams
from prefopt.engines.server import ServerEngine

PROMPTS = ["1+2", "3*4-1", "9-8*2", "7*7+7", "5-9", "2*3*4", "8+1-6", "6*6"]


def test_greedy_tokens_match_transformers(vllm_engine, hf_engine):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    ours = vllm_engine.generate(PROMPTS, params)
    reference = hf_engine.generate(PROMPTS, params)
    assert [g[0].text for g in ours] == [g[0].text for g in reference]
    assert [g[0].finish_reason for g in ours] == [g[0].finish_reason for g in reference]


def test_token_logprobs_and_stop_strings_match_transformers(vllm_engine, hf_engine):
    for params in (
        SamplingParams(n=1, temperature=0.0, max_new_tokens=40, logprobs=True),
        SamplingParams(n=1, temperature=0.0, max_new_tokens=40, logprobs=True, stop=(";", ". =")),
    ):
        ours, reference = vllm_engine.generate(PROMPTS, params), hf_engine.generate(PROMPTS, params)
        for [a], [b] in zip(ours, reference):
            assert (a.text, a.finish_reason) == (b.text, b.finish_reason)
            assert len(a.token_logprobs) == len(b.token_logprobs) > 0
            assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)
            if params.stop:
                assert not any(stop in a.text for stop in params.stop)
    [[plain]] = vllm_engine.generate(["7*7+7"], SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    [[stopped]] = vllm_engine.generate(["7*7+7"], SamplingParams(n=1, temperature=0.0, max_new_tokens=40, stop=(";",)))
    assert ";" in plain.text and stopped.text == plain.text.split(";")[0] and stopped.finish_reason == "stop"
    assert plain.token_logprobs is None


def test_decoding_constrained_to_a_json_schema_or_to_choices(vllm_engine):
    import json

    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["correctness", "format"],
        "properties": {
            "correctness": {"type": "integer", "minimum": 1, "maximum": 5},
            "format": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        },
    }
    outputs = vllm_engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=60, json_schema=schema))
    for group in outputs:
        for completion in group:
            value = json.loads(completion.text)  # a model that never saw JSON writes valid JSON
            assert set(value) == {"correctness", "format"} and all(1 <= v <= 5 for v in value.values())
    picks = vllm_engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=4, choices=("A", "B")))
    assert {c.text for group in picks for c in group} <= {"A", "B"}


def test_samples_are_seeded_per_request(vllm_engine):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=30, seed=100)
    full = vllm_engine.generate(PROMPTS, params)
    assert [len(g) for g in full] == [4] * len(PROMPTS)
    assert vllm_engine.generate(PROMPTS, params) == full
    # Prompt i is seeded with seed + i: the same prompt gives the same samples in another batch.
    tail = vllm_engine.generate(PROMPTS[3:], SamplingParams(n=4, temperature=1.0, max_new_tokens=30, seed=103))
    assert tail == full[3:]
    assert len({c.text for g in full for c in g}) > len(PROMPTS)  # sampling, not greedy


def test_length_limit_is_reported(vllm_engine):
    [[out]] = vllm_engine.generate(["1+2*3-4"], SamplingParams(n=1, temperature=0.0, max_new_tokens=3))
    assert out.finish_reason == "length" and len(out.text) <= 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_models, tmp_path_factory):
    """A real vLLM OpenAI-compatible server on loopback (`vllm serve`'s module entry point: the console
    script of the CPU package cannot find its own distribution metadata)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        tiny_models["strong"],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "256",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(256 * 2**20),
    ]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            deadline = time.time() + 300
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"vLLM server did not start:\n{log.read_text()[-3000:]}") from None
                    time.sleep(2)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_server_engine_against_a_real_vllm_server(vllm_server, tiny_models, hf_engine):
    engine = ServerEngine(tiny_models["strong"], base_url=vllm_server, max_concurrency=4)
    greedy = engine.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    assert [g[0].text for g in greedy] == [
        g[0].text for g in hf_engine.generate(PROMPTS, SamplingParams(n=1, temperature=0.0, max_new_tokens=40))
    ]
    sampled = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=5))
    assert [len(g) for g in sampled] == [3] * len(PROMPTS)
    assert engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=30, seed=5)) == sampled
    chosen = engine.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, max_new_tokens=4, choices=("7", "8")))
    assert {c.text for g in chosen for c in g} <= {"7", "8"}
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["a"],
        "additionalProperties": False,
    }
    judged = engine.generate(PROMPTS, SamplingParams(n=1, temperature=1.0, max_new_tokens=24, json_schema=schema))
    for [answer] in judged:  # vLLM's form: no free whitespace, so nothing is padded up to the token limit
        assert answer.finish_reason == "stop" and json.loads(answer.text)["a"] in range(1, 6), answer
        assert not any(ch.isspace() for ch in answer.text), answer.text


def test_server_engine_retries_then_names_the_server():
    engine = ServerEngine("m", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=2)
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:\d+/v1: no answer after 3 tries"):
        engine.generate(["1+1"], SamplingParams())


def test_the_whole_loop_with_vllm_generation(tmp_path, vllm_engine):
    """The CI recipe end to end with the vLLM engine chosen from the command line."""
    import json

    from datasets import load_from_disk

    from prefopt.cli import main

    from conftest import CI_RECIPE

    args = [
        "run",
        str(CI_RECIPE),
        "--output-dir",
        str(tmp_path),
        "--set",
        "generation.engine=vllm",
        "--set",
        "generation.engine_options={kv_cache_memory_bytes: 268435456, max_model_len: 256}",
    ]
    assert main(args) == 0
    [generated] = list((tmp_path / "generate").iterdir())
    candidates = load_from_disk(str(generated / "data"))
    assert len(candidates) == 24 * 4 and len(set(candidates["candidate_id"])) == 24 * 4
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pairs"]["pairs_built"] == 48 and "policy (after DPO)" in results["accuracy"]
