"""The pairs stage's recipe section: a strategy, gates and selections, reward augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import described
from prefopt.pairing.registry import STRATEGIES
from prefopt.registry import Entry, lookup


@dataclass(frozen=True)
class DeltaFilterConfig:
    """Sample-level delta: keep pairs by judged gap. Leave both knobs unset to keep every pair."""

    dimension: str = described("'aggregate' or a judge dimension whose gap is ranked.", default="aggregate")
    top_fraction: float | None = described("Keep this top fraction of pairs by gap (0 < p <= 1).", default=None)
    min_gap: float | None = described("Keep pairs whose gap is at least this.", default=None)

    def __post_init__(self):
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")

    @property
    def active(self) -> bool:
        return self.top_fraction is not None or self.min_gap is not None


@dataclass(frozen=True)
class GeneratorPair:
    """One generator-level pairing: traces of ``chosen`` are preferred over those of ``rejected``."""

    chosen: str = described("Generator whose traces are chosen (the stronger one).")
    rejected: str = described("Generator whose traces are rejected (the weaker one).")

    def __post_init__(self):
        if self.chosen == self.rejected:
            raise ValueError(f"a generator pair needs two different generators, got {self.chosen!r} twice")


@dataclass(frozen=True)
class SweetSpotConfig:
    """Reward positions of Finding the Sweet Spot: mu + k sigma of each prompt's reward distribution."""

    chosen_k: float | None = described(
        "Chosen is the candidate nearest mu + chosen_k sigma; null takes the maximum.", default=None
    )
    rejected_k: float = described(
        "Rejected is the candidate nearest mu + rejected_k sigma (the paper: -2).", default=-2.0
    )


@dataclass(frozen=True)
class KTOLabelConfig:
    """Desirable / undesirable labels from absolute scores, for strategy ``kto_unpaired``."""

    desirable_min: float = described("A candidate whose aggregate is at least this is desirable.", default=0.5)
    undesirable_max: float | None = described(
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

    model: str = described("The proxy's SFT model (pi_s): 'world:<name>' or a local model directory.")
    seed_pairs: int = described("Random pairs the proxy is DPO-trained on (the paper: 2,000).", default=2000)
    accelerate_config: str = described(
        "accelerate config for the proxy's training.", default="accelerate_configs/cpu.yaml"
    )
    trl: dict[str, Any] = described(
        "PrefDPOConfig fields of the proxy's DPO training (any trl.DPOConfig field).", default_factory=dict
    )
    batch_size: int = described(
        "Pairs per forward pass on each device (every visible GPU, one rank each) when scoring the implicit margins.",
        default=32,
    )

    def __post_init__(self):
        if self.seed_pairs < 1 or self.batch_size < 1:
            raise ValueError("seed_pairs and batch_size must be >= 1")


@dataclass(frozen=True)
class MarginBayesConfig:
    """Less is More (Deng et al.): fuse calibrated external and implicit margins, keep the top fraction."""

    top_fraction: float = described("Fraction of the pairs to keep by fused score (the paper: 0.1).", default=0.1)
    fusion: Literal["mul", "add"] = described(
        "'mul': P_ex P_im / (P_ex P_im + (1-P_ex)(1-P_im)) (DM-MUL); 'add': m_ex + m_im (DM-ADD).", default="mul"
    )
    dimension: str = described("External margin: 'aggregate' or a judge dimension.", default="aggregate")
    external_low: float = described("M1 of the external margin's calibration.", default=-2.0)
    external_high: float | None = described(
        "M2 of the external margin's calibration; null sets it from the data.", default=None
    )
    implicit_low: float = described("M1 of the implicit margin's calibration.", default=-2.0)
    implicit_high: float | None = described(
        "M2 of the implicit margin's calibration; null sets it from the data.", default=None
    )
    min_tail: int = described(
        "Dynamic M2: the highest value with at least this many margins at or above it (and "
        "at least as many as its distance to the maximum).",
        default=30,
    )
    proxy: ProxyConfig = described(
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

    template: str = described(
        "Conditioning text: '{score}' is replaced by the score on the printed scale, '{low}' and "
        "'{high}' by target_range (every template states its scale).",
        default=REWARD_AUGMENTED_TEMPLATE,
    )
    placement: Literal["system", "prefix"] = described(
        "'system': a system message (column 'system'); 'prefix': prepended to the prompt, then a blank line.",
        default="system",
    )
    score_range: list[float] | None = described(
        "[low, high] of the aggregate score (the judge's scale), mapped linearly onto target_range, scores outside "
        "it clipped (counted in stats); null prints the score unchanged, which needs every score within "
        "target_range.",
        default=None,
    )
    target_range: list[float] = described(
        "[low, high] of the printed scale, stated by the template's {low}/{high}.", default_factory=lambda: [1.0, 10.0]
    )
    decimals: int = described("Decimals of the printed score (an integral value prints without them).", default=1)

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

    strategy: str = described(
        "'generator_delta': chosen from the stronger generator of each generator_pairs entry, sample i against "
        "sample i. Within each prompt's candidates (from `generators`): 'max_min' (best vs worst), 'max_random' "
        "(best vs a random other), 'sweet_spot' (positions mu + k sigma, see sweet_spot), 'kto_unpaired' (every "
        "candidate labelled desirable or not by absolute score, see kto); any name in "
        "prefopt.pairing.registry.STRATEGIES.",
        default="generator_delta",
    )
    generator_pairs: list[GeneratorPair] = described(
        "generator_delta: (chosen, rejected) generator pairings, each paired over every prompt.",
        default_factory=lambda: [GeneratorPair(chosen="strong", rejected="weak")],
    )
    generators: list[str] = described(
        "Within-prompt strategies: generators whose candidates are pooled (empty: all).", default_factory=list
    )
    max_samples: int | None = described(
        "Use only each generator's first this many samples per prompt (sample_index < "
        "max_samples): sweep N over one generation at the largest N.",
        default=None,
    )
    sweet_spot: SweetSpotConfig = described("Positions for strategy sweet_spot.", default_factory=SweetSpotConfig)
    kto: KTOLabelConfig = described("Label thresholds for strategy kto_unpaired.", default_factory=KTOLabelConfig)
    drop_ties: bool = described(
        "Drop pairs whose judged aggregate gap is zero (they are counted either way).", default=True
    )
    require_judge_agreement: bool = described("Drop pairs where the judge scores rejected >= chosen.", default=False)
    filter: DeltaFilterConfig = described("Sample-level delta filter.", default_factory=DeltaFilterConfig)
    margin_bayes: MarginBayesConfig | None = described(
        "Less-is-More selection by fused external and implicit margins.", default=None
    )
    reward_augmented: RewardAugmentConfig | None = described(
        "Reward-augmented relabelling, applied last.", default=None
    )
    seed: int = described("Seed for random choices and tie-breaks.", default=0)

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
