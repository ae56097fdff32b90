"""The judge stage's recipe section: the judge, its model or rubric, and how scores combine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefopt.config_base import described
from prefopt.engines.registry import ENGINES
from prefopt.errors import ConfigError
from prefopt.judging.parsing import REASONING_MODES
from prefopt.judging.registry import JUDGES
from prefopt.registry import Entry, lookup


@dataclass(frozen=True)
class PairwiseAuditConfig:
    """Pairwise comparisons, each asked in both orders, to measure the LLM judge's position bias."""

    generators: list[str] = described("Two generators; sample i of the first is compared with sample i of the second.")
    max_pairs: int = described("Most pairs compared (a seeded random subset).", default=256)

    def __post_init__(self):
        if len(self.generators) != 2 or self.generators[0] == self.generators[1]:
            raise ValueError(f"generators must name two different generators, got {self.generators}")
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")  # as vLLM's server takes them


@dataclass(frozen=True)
class LLMJudgeConfig:
    """An LLM that scores every candidate on a rubric's dimensions."""

    model: str = described("'world:<name>' (a tiny judge), a local model directory, or the model a server serves.")
    engine: str = described("Engine that runs the judge: a name in prefopt.engines.registry.ENGINES.", default="vllm")
    engine_options: dict[str, Any] = described(
        "Engine arguments, as in generation.engine_options (for vLLM e.g. enable_prefix_caching, max_model_len).",
        default_factory=dict,
    )
    rubric: str = described(
        "A preset (reasoning5, reasoning3, tiny_world) or a rubric YAML file.", default="reasoning5"
    )
    samples: int = described(
        "Judgments per candidate; their mean is the score, their spread the self-consistency.", default=1
    )
    temperature: float = described("Judge sampling temperature; 0 is greedy.", default=0.0)
    top_p: float = described("Nucleus sampling mass.", default=1.0)
    max_new_tokens: int = described("Most tokens per judgment.", default=256)
    structured_output: bool = described(
        "Constrain answers to the rubric's JSON schema where the engine can (vLLM, "
        "servers); transformers always answers free text.",
        default=True,
    )
    max_retries: int = described(
        "Times an unparseable answer is asked again; after that the failure is recorded.", default=2
    )
    retry_temperature: float = described(
        "Temperature of retries when the judge is greedy (a greedy retry repeats itself).", default=0.7
    )
    batch_size: int = described("Candidates per engine call.", default=64)
    seed: int = described("Base seed of the judge's sampling.", default=0)
    reasoning: str = described(
        "How a reasoning judge's thoughts are removed before parsing, so only its final answer is read: 'auto' "
        "removes <think>...</think> blocks (R1, Qwen) and gpt-oss's harmony analysis channel where present; 'think' "
        "also requires a closing </think> (templates that open the block in the prompt: R1 distills, QwQ); 'none' "
        "parses the text as it is. Reasoning that never ends (cut off, never closed) is a recorded failure "
        "(reasoning_unterminated), never parsed. A server's separate reasoning_content is never parsed.",
        default="auto",
    )
    reasoning_effort: str | None = described(
        "Reasoning effort of a reasoning judge (low, medium, high; also none, minimal, xhigh, max where the model "
        "takes them): the OpenAI client's reasoning_effort for servers; for vLLM and transformers, as a vLLM server "
        "does, the chat template's reasoning_effort variable (gpt-oss's template reads it) and enable_thinking "
        "(effort not none; Qwen3's template reads it).",
        default=None,
    )
    reasoning_budget: int = described(
        "Tokens a reasoning judge may think, on top of max_new_tokens for its answer: each request's token limit "
        "is their sum. With structured_output, constrain only the answer (a server with --reasoning-parser, or "
        "vLLM's structured_outputs_config.reasoning_parser), or turn it off.",
        default=0,
    )
    chat_template_kwargs: dict[str, Any] = described(
        "Extra variables for the judge's chat template (e.g. {enable_thinking: false} for Qwen3); servers get them "
        "as the request's chat_template_kwargs (vLLM, SGLang).",
        default_factory=dict,
    )

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        if self.samples < 1 or self.max_retries < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("need samples >= 1, max_retries >= 0, batch_size >= 1 and max_new_tokens >= 1")
        if self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning: expected one of {list(REASONING_MODES)}, got {self.reasoning!r}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(
                f"reasoning_effort: expected one of {list(REASONING_EFFORTS)}, got {self.reasoning_effort!r}"
            )
        if self.reasoning_budget < 0:
            raise ValueError(f"reasoning_budget: expected >= 0 tokens, got {self.reasoning_budget}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy samples are identical)")


@dataclass(frozen=True)
class RewardModelConfig:
    """A sequence-classification reward model: one score per candidate."""

    model: str = described(
        "'world:<name>' or a local AutoModelForSequenceClassification directory: one output (a reward) or several "
        "(a multi-objective reward model: name them in dimensions)."
    )
    batch_size: int = described(
        "Candidates per forward pass on each device; batches are spread over every visible GPU (one replica each).",
        default=16,
    )
    max_length: int = described("Most tokens per (prompt, response); longer ones lose their start.", default=1024)
    dimension: str = described("Name of the score's dimension (a model with one output).", default="reward")
    dimensions: list[str] = described(
        "A multi-objective model's output heads, named in order (e.g. [head_0, head_1, head_2], or helpfulness, "
        "...): each is a dimension, chosen or combined by judging.aggregate and judging.weights. Required when the "
        "model has several outputs; its length must be their number.",
        default_factory=list,
    )

    def __post_init__(self):
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("need batch_size >= 1 and max_length >= 1")
        if len(set(self.dimensions)) != len(self.dimensions) or not all(self.dimensions):
            raise ValueError(f"dimensions: expected distinct, non-empty names, got {self.dimensions}")

    def head_names(self, num_labels: int, where: str) -> tuple[str, ...]:
        """The dimension of each of a model's ``num_labels`` outputs; a one-line error if they are not named."""
        if not self.dimensions and num_labels == 1:
            return (self.dimension,)
        if not self.dimensions:
            example = ", ".join(f"head_{i}" for i in range(num_labels))
            raise ConfigError(
                f"judging.reward_model.dimensions: {where} has {num_labels} output heads and none is named (expected "
                f"{num_labels} names, e.g. [{example}], combined by judging.aggregate / weights)"
            )
        if len(self.dimensions) != num_labels:
            raise ConfigError(
                f"judging.reward_model.dimensions: {len(self.dimensions)} names given {self.dimensions}, but {where} "
                f"has {num_labels} output heads"
            )
        return tuple(self.dimensions)


@dataclass(frozen=True)
class JudgingConfig:
    """The judge stage: which judge scores candidates and how dimensions combine into the aggregate."""

    judge: str = described(
        "A name in prefopt.judging.registry.JUDGES: 'tiny_world_verifier' (step checker), 'math_verifier' (final "
        "answer against the reference, with math-verify), 'llm' (see llm), 'reward_model' (see reward_model).",
        default="tiny_world_verifier",
    )
    aggregate: str = described("'mean', 'weighted' (uses weights), or one dimension's name.", default="mean")
    weights: dict[str, float] = described("Per-dimension weights for aggregate 'weighted'.", default_factory=dict)
    llm: LLMJudgeConfig | None = described("The LLM judge (judge: llm).", default=None)
    reward_model: RewardModelConfig | None = described("The reward model (judge: reward_model).", default=None)
    pairwise: PairwiseAuditConfig | None = described(
        "LLM judge only: pairwise comparisons for position bias.", default=None
    )
    reference_judge: str | None = described(
        "A verifier (a JUDGES name with is_verifier: tiny_world_verifier, math_verifier) also run as ground truth, "
        "to report how well the judge agrees with it.",
        default=None,
    )
    shard_size: int = described("Candidates per judged shard: the unit a killed run resumes from.", default=4096)

    def __post_init__(self):
        entry = lookup(JUDGES, self.judge, "judge", ValueError)
        if entry.config_section is not None and getattr(self, entry.config_section) is None:
            raise ValueError(f"judge {self.judge!r} needs its section (judging.{entry.config_section})")
        if self.pairwise is not None and not entry.supports_pairwise:
            raise ValueError(f"pairwise comparisons need judge: {' or '.join(JUDGES.names(supports_pairwise=True))}")
        if self.reference_judge is not None and self.reference_judge not in JUDGES.names(is_verifier=True):
            raise ValueError(
                f"reference_judge: expected a verifier, one of {JUDGES.names(is_verifier=True)}, got "
                f"{self.reference_judge!r}"
            )
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    @property
    def entry(self) -> Entry:
        """The judge's registry entry (its capabilities)."""
        return JUDGES.get(self.judge)

    @property
    def section(self) -> Any:
        """The judge's own config section (judging.llm, judging.reward_model), or None."""
        return None if self.entry.config_section is None else getattr(self, self.entry.config_section)

    @property
    def model_refs(self) -> list[str]:
        """Models the judge runs (world references are built by the pipeline)."""
        return [self.section.model] if self.entry.is_model else []
