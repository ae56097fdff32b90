"""The eval stage's recipe section: the tiny world's splits and local benchmark files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import described
from prefopt.generation.registry import ENGINES
from prefopt.registry import lookup


@dataclass(frozen=True)
class BenchmarkFile:
    """A local evaluation set (GSM8K, MATH-500 or alike: .jsonl, .json, .parquet or a saved dataset), scored by
    the math verifier against its answer column."""

    name: str = described("Column name in the results table, e.g. 'gsm8k'.")
    path: str = described("The file or saved dataset directory.")
    prompt_field: str = described("Column holding the problem.", default="question")
    answer_field: str = described(
        "Column holding the gold answer (a bare answer or a solution ending in '#### x' or \\boxed{x}).",
        default="answer",
    )
    domain: Literal["in_domain", "out_of_domain"] = described("Which mean the set counts towards.", default="in_domain")
    prompt_template: str = described("How a problem is asked; '{prompt}' is replaced by it.", default="{prompt}")
    limit: int | None = described("Evaluate only the first this many problems.", default=None)

    def __post_init__(self):
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}'")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class EvaluationConfig:
    """The eval stage: greedy accuracy on the tiny world's splits and on local benchmark files."""

    tiny_world: bool = described("Evaluate the tiny world's in-domain and out-of-domain splits.", default=True)
    num_problems: int = described("Tiny-world problems per split.", default=200)
    seed: int = described("Seed of the tiny-world problems (keep it apart from the prompt seed).", default=12345)
    benchmarks: list[BenchmarkFile] = described(
        "Local benchmark files, scored by the math verifier.", default_factory=list
    )
    system_prompt: str | None = described(
        "A system message before every problem, for every model evaluated.", default=None
    )
    trained_system_prompt: str | None = described(
        "A system message for the trained policy only, in place of system_prompt (e.g. a reward-augmented policy's "
        "conditioning on the top score; the models it is compared with are asked as they were trained).",
        default=None,
    )
    max_new_tokens: int = described("Most tokens per answer.", default=96)
    batch_size: int = described("Problems per engine call.", default=100)
    engine: str = described(
        "Engine for greedy decoding: one that loads the model's weights itself ('transformers', 'vllm').",
        default="transformers",
    )
    engine_options: dict[str, Any] = described(
        "Engine arguments (as in generation.engine_options).", default_factory=dict
    )

    def __post_init__(self):
        if not lookup(ENGINES, self.engine, "engine", ValueError).runs_local_weights:
            raise ValueError(
                f"engine: {self.engine!r} does not load the evaluated model; expected one of "
                f"{ENGINES.names(runs_local_weights=True)}"
            )
        if not self.tiny_world and not self.benchmarks:
            raise ValueError("nothing to evaluate: set tiny_world: true or list benchmarks")
        names = [b.name for b in self.benchmarks] + (["in_domain", "out_of_domain"] if self.tiny_world else [])
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation set names must be unique, got {names}")
