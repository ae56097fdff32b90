"""The generate stage's recipe section: prompts, an engine, a pool of generators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import check_name, described
from prefopt.engines.registry import ENGINES
from prefopt.registry import lookup
from prefopt.tasks.registry import TASKS
from prefopt.user_data import DatasetSpec


@dataclass(frozen=True)
class PromptSource:
    """Where generation prompts come from: a task (prefopt.tasks), e.g. the tiny world or the user's dataset (text or
    chat messages)."""

    source: str = described(
        "The task whose prompts are generated from: 'tiny_world' samples problems; 'file' reads the user's dataset "
        "(path: a file, a directory or a Hub id); any name in prefopt.tasks.registry.TASKS that supplies prompts.",
        default="tiny_world",
    )
    split: Literal["in_domain", "out_of_domain"] = described("Tiny-world split to sample.", default="in_domain")
    num_prompts: int = described("Tiny-world problems to sample.", default=128)
    seed: int = described("Seed of the tiny-world prompt sample.", default=1)
    path: str | None = described(
        "Source 'file': a .jsonl/.json, .parquet, .csv or .arrow file, a directory (save_to_disk, or a folder of data "
        "files) or a Hub dataset id, read with datasets.load_dataset.",
        default=None,
    )
    dataset_config: str | None = described("Hub dataset: its config (subset) name.", default=None)
    dataset_split: str = described("The split to read (slices work: 'train[:1000]').", default="train")
    dataset_revision: str | None = described(
        "Hub dataset: a commit, tag or branch (pin a commit: the stage's key follows the id and this revision).",
        default=None,
    )
    prompt_field: str = described(
        "Column holding each prompt: text (the user's message) or a list of {role, content} messages (TRL's "
        "conversational form: optional system turns, then user and assistant turns, ending with the user's).",
        default="prompt",
    )
    reference_field: str | None = described("Column holding the gold answer, if any (source 'file').", default=None)
    system_prompt: str | None = described(
        "A system message before every prompt that has none (a row's own system turn is kept and wins).", default=None
    )

    def __post_init__(self):
        if not lookup(TASKS, self.source, "source", ValueError).prompts:
            raise ValueError(
                f"source: task {self.source!r} supplies no prompts; expected one of {TASKS.names(prompts=True)}"
            )
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs a path")
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if not self.prompt_field:
            raise ValueError("prompt_field: expected a column name, got ''")
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise ValueError("system_prompt: empty text (leave it out for no system message)")

    def dataset_spec(self) -> DatasetSpec:
        """The user's dataset (source 'file')."""
        return DatasetSpec(self.path, self.dataset_config, self.dataset_split, self.dataset_revision)


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
        "Engine arguments for this generator; merged over generation's. Its tensor_parallel_size (x "
        "pipeline_parallel_size) is the GPUs each of its data-parallel replicas takes.",
        default_factory=dict,
    )

    def __post_init__(self):
        check_name(self.name, "name")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) gives identical samples; use n: 1")


@dataclass(frozen=True)
class GenerationConfig:
    """The generate stage: prompts, an engine, and a pool of generators run one after another."""

    prompts: PromptSource = described("Prompt source.", default_factory=PromptSource)
    engine: str = described(
        "'vllm' (offline vllm.LLM), 'server' (an OpenAI-compatible server) or 'transformers' (generate); any name in "
        "prefopt.engines.registry.ENGINES.",
        default="transformers",
    )
    engine_options: dict[str, Any] = described(
        "Engine arguments: vllm.LLM keywords, checked against the installed vLLM when the recipe loads "
        "(tensor_parallel_size, gpu_memory_utilization, max_model_len, enable_prefix_caching, quantization, dtype, "
        "seed: vLLM's global seed; samples are seeded per prompt either way, so replicas match one process), or, "
        "for 'transformers', dtype, device, chat_template, or, for 'server', base_url, api_key_env (the "
        "environment variable holding the key, default "
        "OPENAI_API_KEY), max_concurrency, max_retries, timeout, structured_outputs ('vllm' or 'openai').",
        default_factory=dict,
    )
    batch_size: int = described("Prompts per engine call.", default=64)
    shard_size: int = described("Prompts per output shard: the unit of resume and of sharding.", default=256)
    data_parallel_size: int = described(
        "Worker processes per generator, each with its own engine and GPUs (its tensor_parallel_size x "
        "pipeline_parallel_size of them; generators needing different numbers run one group after another); 1 runs "
        "in this process.",
        default=1,
    )
    generators: list[GeneratorConfig] = described("The generator pool.", default_factory=list)

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        for name in ("batch_size", "shard_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")
