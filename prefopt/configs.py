"""Typed recipe configuration, loaded from YAML and validated on load.

Every section is a dataclass whose fields carry ``metadata["help"]``. :func:`load_recipe` rejects unknown
keys, wrong types and bad values with a :class:`ConfigError` naming the file and the dotted field path
(``recipes/x.yaml: generation.generators[1].temperature: expected a number, got 'hot'``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prefopt.cache import is_secret_key
from prefopt.errors import ConfigError
from prefopt.generation.registry import ENGINES
from prefopt.judging.registry import JUDGES
from prefopt.pairing.registry import STRATEGIES
from prefopt.registry import Entry, lookup
from prefopt.user_data import DatasetSpec
from prefopt.world.specs import TinyModelSpec
from prefopt.world.tasks import Difficulty


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # becomes a path segment or a shell word as it is


def check_name(value: str, what: str) -> None:
    """A name that becomes a directory or a shell word: letters, digits and ``_ . + -``, not starting with a dot."""
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(
            f"{what}: {value!r} is not a safe name (expected letters, digits and _ . + -, starting with "
            "a letter or digit, at most 100 characters): it becomes a directory name"
        )


@dataclass(frozen=True)
class WorldConfig:
    """The tiny arithmetic world: its splits and the models built in it."""

    in_domain: Difficulty = _help("Problems of the in-domain split.", default_factory=Difficulty)
    out_of_domain: Difficulty = _help(
        "Problems of the out-of-domain split; by default chains with operands never seen in training (0, 10-12).",
        default_factory=lambda: Difficulty(min_ops=1, max_ops=3, min_operand=0, max_operand=12),
    )
    models: dict[str, TinyModelSpec] = _help(
        "Tiny models to build by name; refer to one elsewhere as 'world:<name>'.", default_factory=dict
    )


@dataclass(frozen=True)
class PromptSource:
    """Where generation prompts come from."""

    source: Literal["tiny_world", "file"] = _help(
        "'tiny_world' samples problems; 'file' reads a dataset.", default="tiny_world"
    )
    split: Literal["in_domain", "out_of_domain"] = _help("Tiny-world split to sample.", default="in_domain")
    num_prompts: int = _help("Tiny-world problems to sample.", default=128)
    seed: int = _help("Seed of the tiny-world prompt sample.", default=1)
    path: str | None = _help(
        "A .jsonl, .json, .parquet file or a saved dataset directory (source 'file').", default=None
    )
    prompt_field: str = _help("Column holding the prompt text (source 'file').", default="prompt")
    reference_field: str | None = _help("Column holding the gold answer, if any (source 'file').", default=None)

    def __post_init__(self):
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs a path")
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")


@dataclass(frozen=True)
class GeneratorConfig:
    """One generator of a pool: a model, how it samples, and how many samples per prompt."""

    name: str = _help("Name recorded on every candidate it writes (e.g. 'strong').")
    model: str = _help("'world:<name>' for a tiny-world model, or a local model directory.")
    n: int = _help("Samples per prompt.", default=4)
    temperature: float = _help("Sampling temperature; 0 is greedy.", default=1.0)
    top_p: float = _help("Nucleus sampling mass.", default=1.0)
    max_new_tokens: int = _help("Most tokens per completion.", default=64)
    seed: int = _help("Base seed of this generator's samples.", default=0)
    stop: list[str] = _help("Strings that end a completion (not included in its text).", default_factory=list)
    logprobs: bool = _help(
        "Record each generated token's log-probability (columns token_logprobs and cumulative_logprob).", default=False
    )
    engine_options: dict[str, Any] = _help(
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

    prompts: PromptSource = _help("Prompt source.", default_factory=PromptSource)
    engine: str = _help(
        "'vllm' (offline vllm.LLM), 'server' (an OpenAI-compatible server) or 'transformers' (generate); any name in "
        "prefopt.generation.registry.ENGINES.",
        default="transformers",
    )
    engine_options: dict[str, Any] = _help(
        "Engine arguments: vllm.LLM keywords (tensor_parallel_size, max_model_len, gpu_memory_utilization, "
        "...) or, for 'server', base_url, api_key_env (the environment variable holding the key, default "
        "OPENAI_API_KEY), max_concurrency, max_retries, timeout, structured_outputs ('vllm' or 'openai').",
        default_factory=dict,
    )
    batch_size: int = _help("Prompts per engine call.", default=64)
    shard_size: int = _help("Prompts per output shard: the unit of resume and of sharding.", default=256)
    data_parallel_size: int = _help(
        "Worker processes, each with its own engine and GPUs (tensor_parallel_size of them); 1 runs in this process.",
        default=1,
    )
    generators: list[GeneratorConfig] = _help("The generator pool.", default_factory=list)

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        if min(self.batch_size, self.shard_size, self.data_parallel_size) < 1:
            raise ValueError("batch_size, shard_size and data_parallel_size must be >= 1")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")


@dataclass(frozen=True)
class PairwiseAuditConfig:
    """Pairwise comparisons, each asked in both orders, to measure the LLM judge's position bias."""

    generators: list[str] = _help("Two generators; sample i of the first is compared with sample i of the second.")
    max_pairs: int = _help("Most pairs compared (a seeded random subset).", default=256)

    def __post_init__(self):
        if len(self.generators) != 2 or self.generators[0] == self.generators[1]:
            raise ValueError(f"generators must name two different generators, got {self.generators}")
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")


@dataclass(frozen=True)
class LLMJudgeConfig:
    """An LLM that scores every candidate on a rubric's dimensions."""

    model: str = _help("'world:<name>' (a tiny judge), a local model directory, or the model a server serves.")
    engine: str = _help("Engine that runs the judge: a name in prefopt.generation.registry.ENGINES.", default="vllm")
    engine_options: dict[str, Any] = _help(
        "Engine arguments, as in generation.engine_options (for vLLM e.g. enable_prefix_caching, max_model_len).",
        default_factory=dict,
    )
    rubric: str = _help("A preset (reasoning5, reasoning3, tiny_world) or a rubric YAML file.", default="reasoning5")
    samples: int = _help(
        "Judgments per candidate; their mean is the score, their spread the self-consistency.", default=1
    )
    temperature: float = _help("Judge sampling temperature; 0 is greedy.", default=0.0)
    top_p: float = _help("Nucleus sampling mass.", default=1.0)
    max_new_tokens: int = _help("Most tokens per judgment.", default=256)
    structured_output: bool = _help(
        "Constrain answers to the rubric's JSON schema where the engine can (vLLM, "
        "servers); transformers always answers free text.",
        default=True,
    )
    max_retries: int = _help(
        "Times an unparseable answer is asked again; after that the failure is recorded.", default=2
    )
    retry_temperature: float = _help(
        "Temperature of retries when the judge is greedy (a greedy retry repeats itself).", default=0.7
    )
    batch_size: int = _help("Candidates per engine call.", default=64)
    seed: int = _help("Base seed of the judge's sampling.", default=0)

    def __post_init__(self):
        lookup(ENGINES, self.engine, "engine", ValueError)
        if self.samples < 1 or self.max_retries < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("need samples >= 1, max_retries >= 0, batch_size >= 1 and max_new_tokens >= 1")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy samples are identical)")


@dataclass(frozen=True)
class RewardModelConfig:
    """A sequence-classification reward model: one score per candidate."""

    model: str = _help("'world:<name>' or a local AutoModelForSequenceClassification directory (one label).")
    batch_size: int = _help("Candidates per forward pass.", default=16)
    max_length: int = _help("Most tokens per (prompt, response); longer ones lose their start.", default=1024)
    dimension: str = _help("Name of the score's dimension.", default="reward")


@dataclass(frozen=True)
class JudgingConfig:
    """The judge stage: which judge scores candidates and how dimensions combine into the aggregate."""

    judge: str = _help(
        "A name in prefopt.judging.registry.JUDGES: 'tiny_world_verifier' (step checker), 'math_verifier' (final "
        "answer against the reference, with math-verify), 'llm' (see llm), 'reward_model' (see reward_model).",
        default="tiny_world_verifier",
    )
    aggregate: str = _help("'mean', 'weighted' (uses weights), or one dimension's name.", default="mean")
    weights: dict[str, float] = _help("Per-dimension weights for aggregate 'weighted'.", default_factory=dict)
    llm: LLMJudgeConfig | None = _help("The LLM judge (judge: llm).", default=None)
    reward_model: RewardModelConfig | None = _help("The reward model (judge: reward_model).", default=None)
    pairwise: PairwiseAuditConfig | None = _help(
        "LLM judge only: pairwise comparisons for position bias.", default=None
    )
    reference_judge: str | None = _help(
        "A verifier (a JUDGES name with is_verifier: tiny_world_verifier, math_verifier) also run as ground truth, "
        "to report how well the judge agrees with it.",
        default=None,
    )
    shard_size: int = _help("Candidates per judged shard: the unit a killed run resumes from.", default=4096)

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


@dataclass(frozen=True)
class DeltaFilterConfig:
    """Sample-level delta: keep pairs by judged gap. Leave both knobs unset to keep every pair."""

    dimension: str = _help("'aggregate' or a judge dimension whose gap is ranked.", default="aggregate")
    top_fraction: float | None = _help("Keep this top fraction of pairs by gap (0 < p <= 1).", default=None)
    min_gap: float | None = _help("Keep pairs whose gap is at least this.", default=None)

    def __post_init__(self):
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")

    @property
    def active(self) -> bool:
        return self.top_fraction is not None or self.min_gap is not None


@dataclass(frozen=True)
class GeneratorPair:
    """One generator-level pairing: traces of ``chosen`` are preferred over those of ``rejected``."""

    chosen: str = _help("Generator whose traces are chosen (the stronger one).")
    rejected: str = _help("Generator whose traces are rejected (the weaker one).")

    def __post_init__(self):
        if self.chosen == self.rejected:
            raise ValueError(f"a generator pair needs two different generators, got {self.chosen!r} twice")


@dataclass(frozen=True)
class SweetSpotConfig:
    """Reward positions of Finding the Sweet Spot: mu + k sigma of each prompt's reward distribution."""

    chosen_k: float | None = _help(
        "Chosen is the candidate nearest mu + chosen_k sigma; null takes the maximum.", default=None
    )
    rejected_k: float = _help("Rejected is the candidate nearest mu + rejected_k sigma (the paper: -2).", default=-2.0)


@dataclass(frozen=True)
class KTOLabelConfig:
    """Desirable / undesirable labels from absolute scores, for strategy ``kto_unpaired``."""

    desirable_min: float = _help("A candidate whose aggregate is at least this is desirable.", default=0.5)
    undesirable_max: float | None = _help(
        "A candidate whose aggregate is below this is undesirable; null uses desirable_min. Candidates in "
        "[undesirable_max, desirable_min) get no label and are counted as dropped.",
        default=None,
    )

    def __post_init__(self):
        if self.undesirable_max is not None and self.undesirable_max > self.desirable_min:
            raise ValueError(
                f"undesirable_max ({self.undesirable_max}) must be <= desirable_min ({self.desirable_min})"
            )


@dataclass(frozen=True)
class ProxyConfig:
    """The small proxy of Less is More: an SFT model, DPO-trained on a random seed set of the pairs."""

    model: str = _help("The proxy's SFT model (pi_s): 'world:<name>' or a local model directory.")
    seed_pairs: int = _help("Random pairs the proxy is DPO-trained on (the paper: 2,000).", default=2000)
    accelerate_config: str = _help("accelerate config for the proxy's training.", default="accelerate_configs/cpu.yaml")
    trl: dict[str, Any] = _help(
        "PrefDPOConfig fields of the proxy's DPO training (any trl.DPOConfig field).", default_factory=dict
    )
    batch_size: int = _help("Sequences per forward pass when scoring log-probabilities.", default=32)

    def __post_init__(self):
        if self.seed_pairs < 1 or self.batch_size < 1:
            raise ValueError("seed_pairs and batch_size must be >= 1")


@dataclass(frozen=True)
class MarginBayesConfig:
    """Less is More (Deng et al.): fuse calibrated external and implicit margins, keep the top fraction."""

    top_fraction: float = _help("Fraction of the pairs to keep by fused score (the paper: 0.1).", default=0.1)
    fusion: Literal["mul", "add"] = _help(
        "'mul': P_ex P_im / (P_ex P_im + (1-P_ex)(1-P_im)) (DM-MUL); 'add': m_ex + m_im (DM-ADD).", default="mul"
    )
    dimension: str = _help("External margin: 'aggregate' or a judge dimension.", default="aggregate")
    external_low: float = _help("M1 of the external margin's calibration.", default=-2.0)
    external_high: float | None = _help(
        "M2 of the external margin's calibration; null sets it from the data.", default=None
    )
    implicit_low: float = _help("M1 of the implicit margin's calibration.", default=-2.0)
    implicit_high: float | None = _help(
        "M2 of the implicit margin's calibration; null sets it from the data.", default=None
    )
    min_tail: int = _help(
        "Dynamic M2: the highest value with at least this many margins at or above it (and "
        "at least as many as its distance to the maximum).",
        default=30,
    )
    proxy: ProxyConfig = _help(
        "The proxy model whose log-ratios give the implicit margin.",
        default_factory=lambda: ProxyConfig(model="world:proxy"),
    )

    def __post_init__(self):
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        for name in ("external", "implicit"):
            low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
            if high is not None and high <= low:
                raise ValueError(f"{name}_high ({high}) must be above {name}_low ({low})")
        if self.min_tail < 1:
            raise ValueError(f"min_tail must be >= 1, got {self.min_tail}")


# The conditioning text of Zhang et al.'s reward_augmentation.py, verbatim at the default target_range [1, 10].
REWARD_AUGMENTED_TEMPLATE = (
    "You are an assistant that generates responses for the instruction while implicitly achieving the following "
    "target scores (on a scale of {low}-{high}, where {low} is lowest and {high} is highest):\nOverall score: {score}."
)


@dataclass(frozen=True)
class RewardAugmentConfig:
    """Reward-augmented data (Zhang et al.): every pair twice, conditioned on the chosen and on the rejected score,
    the second copy with chosen and rejected swapped."""

    template: str = _help(
        "Conditioning text: '{score}' is replaced by the score on the printed scale, '{low}' and "
        "'{high}' by target_range (every template states its scale).",
        default=REWARD_AUGMENTED_TEMPLATE,
    )
    placement: Literal["system", "prefix"] = _help(
        "'system': a system message (column 'system'); 'prefix': prepended to the prompt, then a blank line.",
        default="system",
    )
    score_range: list[float] | None = _help(
        "[low, high] of the aggregate score (the judge's scale), mapped linearly onto target_range, scores outside "
        "it clipped (counted in stats); null prints the score unchanged, which needs every score within "
        "target_range.",
        default=None,
    )
    target_range: list[float] = _help(
        "[low, high] of the printed scale, stated by the template's {low}/{high}.", default_factory=lambda: [1.0, 10.0]
    )
    decimals: int = _help("Decimals of the printed score (an integral value prints without them).", default=1)

    def __post_init__(self):
        missing = [p for p in ("{score}", "{low}", "{high}") if p not in self.template]
        if missing:
            raise ValueError(
                f"template: must contain '{{score}}', '{{low}}' and '{{high}}' (the scale it uses); "
                f"missing {missing} in {self.template!r}"
            )
        for name in ("score_range", "target_range"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or value[0] >= value[1]):
                raise ValueError(f"{name} must be [low, high] with low < high, got {value}")
        if self.decimals < 0:
            raise ValueError(f"decimals must be >= 0, got {self.decimals}")
        if any(round(v, self.decimals) != v for v in self.target_range):
            raise ValueError(f"target_range: {self.target_range} must print exactly with decimals={self.decimals}")


@dataclass(frozen=True)
class PairingConfig:
    """The pairs stage: a strategy builds pairs; ties are dropped; optional gates and selections follow in order
    (judge agreement, sample-level delta filter, margin_bayes), then optional reward augmentation."""

    strategy: str = _help(
        "'generator_delta': chosen from the stronger generator of each generator_pairs entry, sample i against "
        "sample i. Within each prompt's candidates (from `generators`): 'max_min' (best vs worst), 'max_random' "
        "(best vs a random other), 'sweet_spot' (positions mu + k sigma, see sweet_spot), 'kto_unpaired' (every "
        "candidate labelled desirable or not by absolute score, see kto); any name in "
        "prefopt.pairing.registry.STRATEGIES.",
        default="generator_delta",
    )
    generator_pairs: list[GeneratorPair] = _help(
        "generator_delta: (chosen, rejected) generator pairings, each paired over every prompt.",
        default_factory=lambda: [GeneratorPair(chosen="strong", rejected="weak")],
    )
    generators: list[str] = _help(
        "Within-prompt strategies: generators whose candidates are pooled (empty: all).", default_factory=list
    )
    max_samples: int | None = _help(
        "Use only each generator's first this many samples per prompt (sample_index < "
        "max_samples): sweep N over one generation at the largest N.",
        default=None,
    )
    sweet_spot: SweetSpotConfig = _help("Positions for strategy sweet_spot.", default_factory=SweetSpotConfig)
    kto: KTOLabelConfig = _help("Label thresholds for strategy kto_unpaired.", default_factory=KTOLabelConfig)
    drop_ties: bool = _help(
        "Drop pairs whose judged aggregate gap is zero (they are counted either way).", default=True
    )
    require_judge_agreement: bool = _help("Drop pairs where the judge scores rejected >= chosen.", default=False)
    filter: DeltaFilterConfig = _help("Sample-level delta filter.", default_factory=DeltaFilterConfig)
    margin_bayes: MarginBayesConfig | None = _help(
        "Less-is-More selection by fused external and implicit margins.", default=None
    )
    reward_augmented: RewardAugmentConfig | None = _help("Reward-augmented relabelling, applied last.", default=None)
    seed: int = _help("Seed for random choices and tie-breaks.", default=0)

    def __post_init__(self):
        entry = lookup(STRATEGIES, self.strategy, "strategy", ValueError)
        pairs = [(p.chosen, p.rejected) for p in self.generator_pairs]
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if entry.needs_generator_labels and not pairs:
            raise ValueError(f"strategy {self.strategy} needs at least one entry in generator_pairs")
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"generator_pairs has a repeated pairing: {pairs}")
        if entry.unpaired:
            extras = [
                name
                for name, on in (
                    ("filter", self.filter.active),
                    ("margin_bayes", self.margin_bayes),
                    ("reward_augmented", self.reward_augmented),
                    ("require_judge_agreement", self.require_judge_agreement),
                )
                if on
            ]
            if extras:
                raise ValueError(f"strategy {self.strategy} makes unpaired examples; {extras} apply to pairs only")

    @property
    def strategy_entry(self) -> Entry:
        """The strategy's registry entry: ask it for capabilities (``needs_generator_labels``, ``unpaired``)."""
        return STRATEGIES.get(self.strategy)

    @property
    def unpaired(self) -> bool:
        return self.strategy_entry.unpaired


@dataclass(frozen=True)
class TrainingConfig:
    """The train stage: prefopt's DPO or KTO trainer (TRL subclasses) under ``accelerate launch``."""

    method: Literal["dpo", "kto"] = _help(
        "'dpo' (PrefDPOTrainer) or 'kto' (PrefKTOTrainer, pairs given unpaired).", default="dpo"
    )
    model: str = _help("Policy to align: 'world:<name>' or a local model directory.", default="world:policy")
    model_args: dict[str, Any] = _help(
        "How the policy loads and trains: any trl.ModelConfig field but model_name_or_path (dtype, "
        "attn_implementation, model_revision, use_peft, lora_r, lora_alpha, lora_dropout, lora_target_modules, "
        "lora_task_type, load_in_4bit, ...). dtype unset: bfloat16 on CUDA, float32 on CPU. trust_remote_code is "
        "a training.trl field.",
        default_factory=dict,
    )
    chat_template: str | None = _help(
        "The policy's chat template, replacing its tokenizer's (a Jinja string or a .jinja file): used in training "
        "and saved with the trained model.",
        default=None,
    )
    accelerate_config: str = _help(
        "accelerate config file (relative to the repository or absolute).", default="accelerate_configs/cpu.yaml"
    )
    trl: dict[str, Any] = _help(
        "Fields of PrefDPOConfig (method dpo: any trl.DPOConfig field and prefopt's "
        "pref_loss, gap_transform, sft_route_*, curriculum, ...) or PrefKTOConfig (method "
        "kto: any trl.KTOConfig field and score_weighting, auto_class_balance, ...).",
        default_factory=dict,
    )
    gap_column: str = _help(
        "Pairs column whose judged gap the loss uses: 'margin' or 'margins.<dimension>' (data "
        "without it trains with losses that need no gap).",
        default="margin",
    )
    dataset: DatasetSpec | None = _help(
        "Your own training data (pairs or KTO examples in TRL's formats, see docs/schemas.md): {path, config, split, "
        "revision, columns}. Set, `prefopt run` and `prefopt train` train on it, skipping generate, judge and pairs.",
        default=None,
    )


@dataclass(frozen=True)
class BenchmarkFile:
    """A local evaluation set (GSM8K, MATH-500 or alike: .jsonl, .json, .parquet or a saved dataset), scored by
    the math verifier against its answer column."""

    name: str = _help("Column name in the results table, e.g. 'gsm8k'.")
    path: str = _help("The file or saved dataset directory.")
    prompt_field: str = _help("Column holding the problem.", default="question")
    answer_field: str = _help(
        "Column holding the gold answer (a bare answer or a solution ending in '#### x' or \\boxed{x}).",
        default="answer",
    )
    domain: Literal["in_domain", "out_of_domain"] = _help("Which mean the set counts towards.", default="in_domain")
    prompt_template: str = _help("How a problem is asked; '{prompt}' is replaced by it.", default="{prompt}")
    limit: int | None = _help("Evaluate only the first this many problems.", default=None)

    def __post_init__(self):
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{prompt}'")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class EvaluationConfig:
    """The eval stage: greedy accuracy on the tiny world's splits and on local benchmark files."""

    tiny_world: bool = _help("Evaluate the tiny world's in-domain and out-of-domain splits.", default=True)
    num_problems: int = _help("Tiny-world problems per split.", default=200)
    seed: int = _help("Seed of the tiny-world problems (keep it apart from the prompt seed).", default=12345)
    benchmarks: list[BenchmarkFile] = _help("Local benchmark files, scored by the math verifier.", default_factory=list)
    system_prompt: str | None = _help("A system message before every problem, for every model evaluated.", default=None)
    trained_system_prompt: str | None = _help(
        "A system message for the trained policy only, in place of system_prompt (e.g. a reward-augmented policy's "
        "conditioning on the top score; the models it is compared with are asked as they were trained).",
        default=None,
    )
    max_new_tokens: int = _help("Most tokens per answer.", default=96)
    batch_size: int = _help("Problems per engine call.", default=100)
    engine: str = _help(
        "Engine for greedy decoding: one that loads the model's weights itself ('transformers', 'vllm').",
        default="transformers",
    )
    engine_options: dict[str, Any] = _help("Engine arguments (as in generation.engine_options).", default_factory=dict)

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


@dataclass(frozen=True)
class SweepConfig:
    """Runs that differ in a few recipe fields; they share every stage whose inputs they share."""

    name: str = _help("Sweep name: results go to <output_dir>/sweeps/<name>/.")
    parameters: dict[str, list[Any]] = _help(
        "Dotted recipe field (list items as name[i]) -> the values it takes, e.g. "
        "{pairing.filter.top_fraction: [0.1, 0.3, 1.0]}."
    )
    mode: Literal["product", "zip"] = _help(
        "'product': every combination; 'zip': the i-th value of every list together (lists of equal length).",
        default="product",
    )
    labels: list[str] = _help("A label per run for tables and plots (default: the values).", default_factory=list)
    x: str | None = _help("The parameter on the plot's x axis (default: the first).", default=None)
    x_values: list[float] = _help(
        "Numeric x positions per run when the values themselves are not numbers (e.g. each run's generator gap).",
        default_factory=list,
    )

    def __post_init__(self):
        check_name(self.name, "name")
        if not self.parameters or any(not isinstance(v, list) or not v for v in self.parameters.values()):
            raise ValueError("parameters must map each field to a non-empty list of values")
        sizes = [len(v) for v in self.parameters.values()]
        if self.mode == "zip" and len(set(sizes)) != 1:
            raise ValueError(f"mode zip needs lists of equal length, got {sizes}")
        runs = sizes[0] if self.mode == "zip" else math.prod(sizes)
        for name in ("labels", "x_values"):
            if getattr(self, name) and len(getattr(self, name)) != runs:
                raise ValueError(f"{name} needs one entry per run ({runs}), got {len(getattr(self, name))}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        if self.x is not None and self.x not in self.parameters:
            raise ValueError(f"x {self.x!r} is not one of the parameters {list(self.parameters)}")


@dataclass(frozen=True)
class Recipe:
    """A whole prefopt run (or, with a sweep section, a family of runs)."""

    name: str = _help("Run name, used in logs and the results table.")
    output_dir: str = _help("Where stage outputs go (each under <stage>/<config hash>/).", default="runs")
    world: WorldConfig = _help("The tiny world.", default_factory=WorldConfig)
    generation: GenerationConfig = _help("Generate stage.", default_factory=GenerationConfig)
    judging: JudgingConfig = _help("Judge stage.", default_factory=JudgingConfig)
    pairing: PairingConfig = _help("Pairs stage.", default_factory=PairingConfig)
    training: TrainingConfig = _help("Train stage.", default_factory=TrainingConfig)
    evaluation: EvaluationConfig = _help("Eval stage.", default_factory=EvaluationConfig)
    sweep: SweepConfig | None = _help("Run the recipe over lists of values (`prefopt sweep`).", default=None)

    def __post_init__(self):
        own_data = self.training.dataset is not None  # training on the user's data: no generate, judge or pairs
        if not own_data and not self.generation.generators:
            raise ValueError(
                "generation: list at least one generator under generators (or set training.dataset to "
                "train on your own preference data)"
            )
        refs = [g.model for g in self.generation.generators] + [self.training.model] + self.judging.model_refs
        if self.pairing.margin_bayes is not None:
            refs.append(self.pairing.margin_bayes.proxy.model)
        for ref in refs:
            if ref.startswith("world:") and ref[len("world:") :] not in self.world.models:
                raise ValueError(
                    f"model {ref!r} is not defined under world.models (defined: {sorted(self.world.models)})"
                )
        names = {g.name for g in self.generation.generators}
        used = (
            [name for pair in self.pairing.generator_pairs for name in (pair.chosen, pair.rejected)]
            if self.pairing.strategy_entry.needs_generator_labels
            else list(self.pairing.generators)
        )
        for name in [] if own_data else used:
            if name not in names:
                raise ValueError(
                    f"pairing: generator {name!r} is not in generation.generators (generators: {sorted(names)})"
                )
        if self.judging.pairwise is not None and not own_data:
            for name in self.judging.pairwise.generators:
                if name not in names:
                    raise ValueError(
                        f"judging.pairwise: generator {name!r} is not in generation.generators "
                        f"(generators: {sorted(names)})"
                    )
        if self.pairing.unpaired and self.training.method != "kto":
            raise ValueError(
                f"pairing.strategy {self.pairing.strategy} makes unpaired examples: training.method must be 'kto'"
            )


# --------------------------------------------------------------------------------------------------------
# Generic, strict conversion of YAML values into typed dataclasses.

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional value: its own type's error says more than a list of types
            return _convert(value, options[0], where)
        for arg in options:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {' or '.join(_describe(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: expected one of {[m.value for m in tp]}, got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 5e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and tp in (dict, list):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys, missing fields and wrong types."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field; expected one of {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required field ({f.metadata.get('help', '')})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        name, sep, rest = str(err).partition(": ")
        if sep and name in fields:  # "field: what is wrong" names the field itself
            raise ConfigError(f"{where}.{name}: {rest}" if where else f"{name}: {rest}") from None
        raise ConfigError(f"{label}: {err}") from None


def validate_trl_fields(trl: dict[str, Any], config_cls: type, where: str) -> dict[str, Any]:
    """Check keys and simple types of a TRL config section against the TRL config dataclass."""
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    resolved = typing.get_type_hints(config_cls)
    out = {}
    for key, value in trl.items():
        if key not in known:
            raise ConfigError(
                f"{where}.{key}: unknown field of {config_cls.__name__} "
                f"(trl.{config_cls.__mro__[1].__name__} + prefopt)"
            )
        if key == "output_dir":
            raise ConfigError(f"{where}.output_dir: set by prefopt (the train stage's directory); remove it")
        converted = _convert(value, resolved.get(key, Any), f"{where}.{key}")
        out[key] = converted.value if isinstance(converted, enum.Enum) else converted  # stays YAML-safe
    return out


def checked_trl(trl: dict[str, Any], config_cls: type, where: str) -> dict[str, Any]:
    """A TRL config section with its keys, types and values checked as the trainer will see them."""
    from prefopt.tracking import check_report_to
    from prefopt.training.launch import trl_defaults

    checked = validate_trl_fields(trl, config_cls, where)
    check_report_to(checked.get("report_to"), f"{where}.report_to")
    try:
        config_cls(output_dir="unused", **{**trl_defaults(), **checked})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return checked


_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")


def set_path(data: dict, path: str, value: Any) -> None:
    """Set ``value`` at a dotted path of a raw recipe mapping; ``name[i]`` indexes a list
    (``generation.generators[0].n``). Missing mappings on the way are created."""
    node: Any = data
    steps: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise ConfigError(f"{path}: {part!r} is not a field name (with optional [index])")
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\d+", match.group(2))]

    def named(upto: int) -> str:  # the path up to a step, for errors
        return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:upto]).lstrip(".")

    for i, step in enumerate(steps[:-1]):
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise ConfigError(f"{path}: {named(i + 1)} is not an item of a list")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: {named(i + 1)} is not a mapping")
            node = node.setdefault(step, [] if isinstance(steps[i + 1], int) else {})
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"{path}: no item {last} to set")
    elif not isinstance(node, dict):
        raise ConfigError(f"{path}: the parent of {last!r} is not a mapping")
    node[last] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw recipe mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            set_path(data, key, yaml.safe_load(raw))
        except ConfigError as err:
            raise ConfigError(f"--set {item!r}: {err}") from None
    return data


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The raw mapping of a recipe file, with ``dotted.key=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping, got {type(data).__name__}")
    try:
        data = apply_overrides(data, overrides or [])
        reject_secrets(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return data


def reject_secrets(data: Any, where: str = "") -> None:
    """Refuse a secret written into a recipe (it would end up in version control, logs and run manifests)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        path = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        if is_secret_key(key) and value not in (None, ""):
            raise ConfigError(
                f"{path}: a secret does not belong in a recipe (it would be written to logs and "
                "manifests); put it in an environment variable (servers: engine_options.api_key_env "
                "names it, default OPENAI_API_KEY)"
            )
        reject_secrets(value, path)


def recipe_from_data(data: dict) -> Recipe:
    """A validated recipe from its raw mapping: types and values, TRL fields as the trainers will see them,
    the judge's rubric."""
    recipe = from_dict(Recipe, data)
    from prefopt.training.trainers import PrefDPOConfig, PrefKTOConfig  # imported late: heavy

    config_cls = PrefKTOConfig if recipe.training.method == "kto" else PrefDPOConfig
    training = dataclasses.replace(recipe.training, trl=checked_trl(recipe.training.trl, config_cls, "training.trl"))
    from prefopt.training.launch import checked_model_fields

    training = checked_model_fields(training, "training")
    recipe = dataclasses.replace(recipe, training=training)
    if recipe.judging.llm is not None:
        from prefopt.judging.rubrics import load_rubric

        try:
            load_rubric(recipe.judging.llm.rubric)
        except ConfigError as err:
            raise ConfigError(f"judging.llm.rubric: {err}") from None
    mb = recipe.pairing.margin_bayes
    if mb is not None:
        proxy = dataclasses.replace(
            mb.proxy, trl=checked_trl(mb.proxy.trl, PrefDPOConfig, "pairing.margin_bayes.proxy.trl")
        )
        recipe = dataclasses.replace(
            recipe, pairing=dataclasses.replace(recipe.pairing, margin_bayes=dataclasses.replace(mb, proxy=proxy))
        )
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe YAML file, with optional ``dotted.key=value`` overrides."""
    data = read_recipe_data(path, overrides)
    try:
        return recipe_from_data(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
