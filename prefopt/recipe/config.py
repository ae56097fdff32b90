"""The whole recipe: the stages' sections together, with the checks between them that run when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from prefopt.config_base import described, did_you_mean
from prefopt.errors import ConfigError
from prefopt.evaluation.config import EvaluationConfig
from prefopt.generation.config import GenerationConfig
from prefopt.judging.config import JudgingConfig
from prefopt.pairing.config import PairingConfig
from prefopt.recipe.checks import check_cross_fields, check_rounds
from prefopt.recipe.resources import ResourcesConfig
from prefopt.recipe.sections import RoundsConfig, SweepConfig
from prefopt.tasks.registry import TASKS, model_task, task, task_settings
from prefopt.training.config import TrainingConfig
from prefopt.world.config import WorldConfig


@dataclass(frozen=True)
class Recipe:
    """A whole prefopt run (or, with a sweep section, a family of runs)."""

    name: str = described("Run name, used in logs and the results table.")
    output_dir: str = described("Where stage outputs go (each under <stage>/<config hash>/).", default="runs")
    world: WorldConfig = described("The tiny world.", default_factory=WorldConfig)
    generation: GenerationConfig = described("Generate stage.", default_factory=GenerationConfig)
    judging: JudgingConfig = described("Judge stage.", default_factory=JudgingConfig)
    pairing: PairingConfig = described("Pairs stage.", default_factory=PairingConfig)
    training: TrainingConfig = described("Train stage.", default_factory=TrainingConfig)
    evaluation: EvaluationConfig = described("Eval stage.", default_factory=EvaluationConfig)
    sweep: SweepConfig | None = described("Run the recipe over lists of values (`prefopt sweep`).", default=None)
    rounds: RoundsConfig = described(
        "Iterative on-policy rounds: {count: K, keep_generators: true}; each round's stages are cached like any.",
        default_factory=RoundsConfig,
    )
    resources: ResourcesConfig = described(
        "What each stage's Slurm job asks for (`prefopt run --slurm`, `prefopt sweep --slurm`).",
        default_factory=ResourcesConfig,
    )

    def __post_init__(self):
        own_data = self.training.dataset is not None  # training on the user's data: no generate, judge or pairs
        if not own_data and not self.generation.generators:
            raise ValueError(
                "generation: list at least one generator under generators (or set training.dataset to "
                "train on your own preference data)"
            )
        for where, ref in self.model_refs():  # a task's model (world:<name>) is one its section defines
            owner = model_task(ref)
            if owner is None:
                continue
            entry = TASKS.get(owner)
            name = ref[len(entry.model_prefix) :]
            names = task(owner).model_names(task_settings(self, owner))
            if name not in names:
                raise ConfigError(
                    f"{where}: model {ref!r} is not defined under {entry.section}.models{did_you_mean(name, names)} "
                    f"(defined: {names})"
                )
        names = {g.name for g in self.generation.generators}
        used = (
            [
                (f"pairing.generator_pairs[{i}].{side}", getattr(pair, side))
                for i, pair in enumerate(self.pairing.generator_pairs)
                for side in ("chosen", "rejected")
            ]
            if self.pairing.strategy_entry.needs_generator_labels
            else [(f"pairing.generators[{i}]", name) for i, name in enumerate(self.pairing.generators)]
        )
        if self.judging.pairwise is not None:
            used += [(f"judging.pairwise.generators[{i}]", n) for i, n in enumerate(self.judging.pairwise.generators)]
        for where, name in [] if own_data else used:
            if name not in names:
                raise ConfigError(
                    f"{where}: generator {name!r} is not in generation.generators{did_you_mean(name, names)} "
                    f"(generators: {sorted(names)})"
                )
        if self.pairing.unpaired and self.training.method != "kto":
            raise ConfigError(
                f"training.method: {self.training.method!r}, but pairing.strategy {self.pairing.strategy} makes "
                "unpaired examples: it must be 'kto'"
            )
        check_cross_fields(self)
        check_rounds(self)

    def model_refs(self) -> list[tuple[str, str]]:
        """(field, model reference) of every model the recipe names."""
        refs = [(f"generation.generators[{i}].model", g.model) for i, g in enumerate(self.generation.generators)]
        refs.append(("training.model", self.training.model))
        if self.judging.entry.is_model:
            refs.append((f"judging.{self.judging.entry.config_section}.model", self.judging.section.model))
        if self.pairing.margin_bayes is not None:
            refs.append(("pairing.margin_bayes.proxy.model", self.pairing.margin_bayes.proxy.model))
        return refs
