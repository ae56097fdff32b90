"""The judge stage's recipe section: the judge, its model or rubric, and how scores combine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefopt.config_base import described
from prefopt.generation.registry import ENGINES
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


@dataclass(frozen=True)
class LLMJudgeConfig:
    """An LLM that scores every candidate on a rubric's dimensions."""

    model: str = described("'world:<name>' (a tiny judge), a local model directory, or the model a server serves.")
    engine: str = described(
        "Engine that runs the judge: a name in prefopt.generation.registry.ENGINES.", default="vllm"
    )
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

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        if self.samples < 1 or self.max_retries < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("need samples >= 1, max_retries >= 0, batch_size >= 1 and max_new_tokens >= 1")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy samples are identical)")


@dataclass(frozen=True)
class RewardModelConfig:
    """A sequence-classification reward model: one score per candidate."""

    model: str = described("'world:<name>' or a local AutoModelForSequenceClassification directory (one label).")
    batch_size: int = described("Candidates per forward pass.", default=16)
    max_length: int = described("Most tokens per (prompt, response); longer ones lose their start.", default=1024)
    dimension: str = described("Name of the score's dimension.", default="reward")


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
