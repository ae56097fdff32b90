"""The eval stage's recipe section: the tiny world's splits, benchmarks (files or Hub datasets), greedy and sampled
decoding."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import described
from prefopt.engines.registry import ENGINES
from prefopt.registry import lookup
from prefopt.tasks.registry import TASKS
from prefopt.user_data import DatasetSpec

# Benchmark formats as their Hub datasets ship them (read from the Hub, or a split saved as .jsonl/.parquet or with
# save_to_disk): the columns, and the prompt the papers use (the final answer in \boxed{}, read by math-verify).
BOXED = "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
PRESETS = {
    "gsm8k": {"prompt_field": "question", "answer_field": "answer", "prompt_template": BOXED},  # openai/gsm8k main
    "math500": {
        "prompt_field": "problem",
        "answer_field": "answer",
        "prompt_template": BOXED,
    },  # HuggingFaceH4/MATH-500
}


@dataclass(frozen=True)
class BenchmarkFile:
    """An evaluation set (GSM8K, MATH-500 or alike): a local file, a saved dataset or a Hub dataset, read as
    generation.prompts is read (``datasets.load_dataset``), scored by the math verifier against its answer column."""

    name: str = described("Column name in the results table, e.g. 'gsm8k'.")
    path: str = described(
        "A .jsonl/.json, .parquet or .csv file, a saved dataset directory, or a Hub dataset id (e.g. openai/gsm8k)."
    )
    config: str | None = described("Hub dataset: its config (subset), e.g. 'main' for openai/gsm8k.", default=None)
    split: str | None = described(
        "The split to evaluate (slices work: 'test[:100]'); needed for a Hub dataset (e.g. 'test'); a single "
        "local file is the split 'train'.",
        default=None,
    )
    revision: str | None = described(
        "Hub dataset: a commit, tag or branch (default: main); the eval stage's key follows the commit it resolves to.",
        default=None,
    )
    prompt_field: str = described("Column holding the problem.", default="question")
    answer_field: str = described(
        "Column holding the gold answer (a bare answer or a solution ending in '#### x' or \\boxed{x}).",
        default="answer",
    )
    domain: Literal["in_domain", "out_of_domain"] = described("Which mean the set counts towards.", default="in_domain")
    prompt_template: str = described("How a problem is asked; '{prompt}' is replaced by it.", default="{prompt}")
    limit: int | None = described("Evaluate only the first this many problems.", default=None)
    preset: Literal["gsm8k", "math500"] | None = described(
        "A known benchmark's format: its problem and answer columns and its prompt (reason step by step, the final "
        "answer in \\boxed{}), for the fields left at their defaults. gsm8k: openai/gsm8k (question, answer ending "
        "'#### n'); math500: HuggingFaceH4/MATH-500 (problem, answer).",
        default=None,
    )

    def __post_init__(self):
        for name, value in PRESETS.get(self.preset, {}).items():
            if getattr(self, name) == _DEFAULTS[name]:
                object.__setattr__(self, name, value)
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}'")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.dataset_spec().is_local and (self.config or self.revision):
            raise ValueError(f"config, revision: for a Hub dataset id; {self.path} is a local path")
        if not self.dataset_spec().is_local and self.split is None:
            raise ValueError(f"split: {self.path} is read from the Hub: name the split to evaluate, e.g. split: test")

    def dataset_spec(self) -> DatasetSpec:
        """Where the set lies, as prefopt.user_data reads it (a single local file's split is 'train')."""
        return DatasetSpec(self.path, self.config, self.split or "train", self.revision)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BenchmarkFile)}


@dataclass(frozen=True)
class EvaluationConfig:
    """The eval stage: greedy accuracy on the tiny world's splits and on benchmarks, and with
    ``samples > 1`` pass@1, pass@k and maj@k of sampled answers."""

    tiny_world: bool = described("Evaluate the tiny world's in-domain and out-of-domain splits.", default=True)
    num_problems: int = described("Tiny-world problems per split.", default=200)
    seed: int = described("Seed of the tiny-world problems (keep it apart from the prompt seed).", default=12345)
    benchmarks: list[BenchmarkFile] = described(
        "Benchmarks (local files or Hub datasets), scored by the math verifier.", default_factory=list
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
    samples: int = described(
        "Sampled answers per problem besides the greedy one: 1 evaluates greedily only (accuracy); n > 1 adds "
        "pass@1 (the mean correctness of the n samples), unbiased pass@k and maj@k for each of k.",
        default=1,
    )
    temperature: float = described("Sampling temperature of the sampled answers (samples > 1).", default=1.0)
    top_p: float = described("Nucleus sampling of the sampled answers (samples > 1).", default=1.0)
    k: list[int] = described(
        "The k of pass@k and maj@k (each <= samples; default: samples itself).", default_factory=list
    )
    batch_size: int = described("Problems per engine call.", default=100)
    engine: str = described(
        "Engine for greedy decoding: one that loads the model's weights itself ('transformers', 'vllm').",
        default="transformers",
    )
    engine_options: dict[str, Any] = described(
        "Engine arguments (as in generation.engine_options).", default_factory=dict
    )

    @property
    def tasks(self) -> list[str]:
        """The tasks (prefopt.tasks) whose own evaluation sets are evaluated: the tiny world's, where ``tiny_world``
        (the recipe's switch for them) is on."""
        return ["tiny_world"] if self.tiny_world else []

    @property
    def ks(self) -> list[int]:
        """The k of pass@k and maj@k: ``k``, or ``[samples]``; none when evaluating greedily only."""
        return [] if self.samples == 1 else sorted(set(self.k or [self.samples]))

    def __post_init__(self):
        if not lookup(ENGINES, self.engine, "engine", ValueError).runs_local_weights:
            raise ValueError(
                f"engine: {self.engine!r} does not load the evaluated model; expected one of "
                f"{ENGINES.names(runs_local_weights=True)}"
            )
        for name in ("num_problems", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 to sample {self.samples} answers, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.k and self.samples == 1:
            raise ValueError(f"k {self.k} needs samples > 1 (pass@k and maj@k are over sampled answers)")
        bad = [k for k in self.k if not 1 <= k <= self.samples]
        if bad:
            raise ValueError(f"k must be between 1 and samples ({self.samples}), got {bad}")
        if not self.tasks and not self.benchmarks:
            raise ValueError("nothing to evaluate: set tiny_world: true or list benchmarks")
        names = [b.name for b in self.benchmarks] + [s for t in self.tasks for s in TASKS.get(t).eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation set names must be unique, got {names}")
