"""The generate stage's recipe section: prompts, an engine, a pool of generators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import check_name, described
from prefopt.generation.registry import ENGINES
from prefopt.registry import lookup


@dataclass(frozen=True)
class PromptSource:
    """Where generation prompts come from."""

    source: Literal["tiny_world", "file"] = described(
        "'tiny_world' samples problems; 'file' reads a dataset.", default="tiny_world"
    )
    split: Literal["in_domain", "out_of_domain"] = described("Tiny-world split to sample.", default="in_domain")
    num_prompts: int = described("Tiny-world problems to sample.", default=128)
    seed: int = described("Seed of the tiny-world prompt sample.", default=1)
    path: str | None = described(
        "A .jsonl, .json, .parquet file or a saved dataset directory (source 'file').", default=None
    )
    prompt_field: str = described("Column holding the prompt text (source 'file').", default="prompt")
    reference_field: str | None = described("Column holding the gold answer, if any (source 'file').", default=None)

    def __post_init__(self):
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs a path")
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")


@dataclass(frozen=True)
class GeneratorConfig:
    """One generator of a pool: a model, how it samples, and how many samples per prompt."""

    name: str = described("Name recorded on every candidate it writes (e.g. 'strong').")
    model: str = described("'world:<name>' for a tiny-world model, or a local model directory.")
    n: int = described("Samples per prompt.", default=4)
    temperature: float = described("Sampling temperature; 0 is greedy.", default=1.0)
    top_p: float = described("Nucleus sampling mass.", default=1.0)
    max_new_tokens: int = described("Most tokens per completion.", default=64)
    seed: int = described("Base seed of this generator's samples.", default=0)
    stop: list[str] = described("Strings that end a completion (not included in its text).", default_factory=list)
    logprobs: bool = described(
        "Record each generated token's log-probability (columns token_logprobs and cumulative_logprob).", default=False
    )
    engine_options: dict[str, Any] = described(
        "Engine arguments for this generator; merged over generation's.", default_factory=dict
    )

    def __post_init__(self):
        check_name(self.name, "name")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need temperature >= 0 and 0 < top_p <= 1")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) gives identical samples; use n: 1")


@dataclass(frozen=True)
class GenerationConfig:
    """The generate stage: prompts, an engine, and a pool of generators run one after another."""

    prompts: PromptSource = described("Prompt source.", default_factory=PromptSource)
    engine: str = described(
        "'vllm' (offline vllm.LLM), 'server' (an OpenAI-compatible server) or 'transformers' (generate); any name in "
        "prefopt.generation.registry.ENGINES.",
        default="transformers",
    )
    engine_options: dict[str, Any] = described(
        "Engine arguments: vllm.LLM keywords (tensor_parallel_size, max_model_len, gpu_memory_utilization, "
        "...) or, for 'server', base_url, api_key_env (the environment variable holding the key, default "
        "OPENAI_API_KEY), max_concurrency, max_retries, timeout, structured_outputs ('vllm' or 'openai').",
        default_factory=dict,
    )
    batch_size: int = described("Prompts per engine call.", default=64)
    shard_size: int = described("Prompts per output shard: the unit of resume and of sharding.", default=256)
    data_parallel_size: int = described(
        "Worker processes, each with its own engine and GPUs (tensor_parallel_size of them); 1 runs in this process.",
        default=1,
    )
    generators: list[GeneratorConfig] = described("The generator pool.", default_factory=list)

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        if min(self.batch_size, self.shard_size, self.data_parallel_size) < 1:
            raise ValueError("batch_size, shard_size and data_parallel_size must be >= 1")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")
