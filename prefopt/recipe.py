"""A whole recipe: the stages' sections together, loaded from YAML with overrides and validated on load.

:func:`load_recipe` rejects unknown keys, wrong types and bad values with a :class:`ConfigError` naming the file
and the dotted field path (``recipes/x.yaml: generation.generators[1].temperature: expected a number, got 'hot'``);
cross-stage checks (generator names, models defined in the world, KTO pairing with a KTO trainer) live here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from prefopt.cache import is_secret_key
from prefopt.config_base import check_name, described, from_dict
from prefopt.errors import ConfigError
from prefopt.evaluation.config import EvaluationConfig
from prefopt.generation.config import GenerationConfig
from prefopt.judging.config import JudgingConfig
from prefopt.pairing.config import PairingConfig
from prefopt.training.config import TrainingConfig
from prefopt.world.config import WorldConfig


@dataclass(frozen=True)
class SweepConfig:
    """Runs that differ in a few recipe fields; they share every stage whose inputs they share."""

    name: str = described("Sweep name: results go to <output_dir>/sweeps/<name>/.")
    parameters: dict[str, list[Any]] = described(
        "Dotted recipe field (list items as name[i]) -> the values it takes, e.g. "
        "{pairing.filter.top_fraction: [0.1, 0.3, 1.0]}."
    )
    mode: Literal["product", "zip"] = described(
        "'product': every combination; 'zip': the i-th value of every list together (lists of equal length).",
        default="product",
    )
    labels: list[str] = described("A label per run for tables and plots (default: the values).", default_factory=list)
    x: str | None = described("The parameter on the plot's x axis (default: the first).", default=None)
    x_values: list[float] = described(
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

    name: str = described("Run name, used in logs and the results table.")
    output_dir: str = described("Where stage outputs go (each under <stage>/<config hash>/).", default="runs")
    world: WorldConfig = described("The tiny world.", default_factory=WorldConfig)
    generation: GenerationConfig = described("Generate stage.", default_factory=GenerationConfig)
    judging: JudgingConfig = described("Judge stage.", default_factory=JudgingConfig)
    pairing: PairingConfig = described("Pairs stage.", default_factory=PairingConfig)
    training: TrainingConfig = described("Train stage.", default_factory=TrainingConfig)
    evaluation: EvaluationConfig = described("Eval stage.", default_factory=EvaluationConfig)
    sweep: SweepConfig | None = described("Run the recipe over lists of values (`prefopt sweep`).", default=None)

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
    """A validated recipe from its raw mapping: types and values, the names and types of TRL fields (against a
    snapshot of TRL's configs, see :mod:`prefopt.training.trl_fields`), the judge's rubric, the chat template
    file. Imports no torch; :func:`check_trainer_configs` adds what needs TRL itself."""
    from prefopt.generation.templates import chat_template_text
    from prefopt.training.trl_fields import check_model_args, check_trl_section

    recipe = from_dict(Recipe, data)
    t = recipe.training
    config = "PrefKTOConfig" if t.method == "kto" else "PrefDPOConfig"
    training = dataclasses.replace(
        t,
        trl=check_trl_section(t.trl, config, "training.trl"),
        model_args=check_model_args(t.model_args, "training.model_args"),
        chat_template=None
        if t.chat_template is None
        else chat_template_text(t.chat_template, "training.chat_template"),
    )
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
            mb.proxy, trl=check_trl_section(mb.proxy.trl, "PrefDPOConfig", "pairing.margin_bayes.proxy.trl")
        )
        recipe = dataclasses.replace(
            recipe, pairing=dataclasses.replace(recipe.pairing, margin_bayes=dataclasses.replace(mb, proxy=proxy))
        )
    return recipe


def check_trainer_configs(recipe: Recipe) -> None:
    """Build the trainers' configs as the train stage will (TRL's own cross-field checks, prefopt's loss names),
    the LoRA config, and compile the chat template: what needs torch and TRL, before any stage runs."""
    from prefopt.generation.engines import read_chat_template
    from prefopt.training.dpo_trainer import PrefDPOConfig
    from prefopt.training.kto_trainer import PrefKTOConfig
    from prefopt.training.launch import check_model_setup, trl_defaults

    def build(config_cls: type, trl: dict, where: str) -> None:
        try:
            config_cls(output_dir="unused", **{**trl_defaults(), **trl})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{where}: {err}") from None

    t = recipe.training
    build(PrefKTOConfig if t.method == "kto" else PrefDPOConfig, t.trl, "training.trl")
    check_model_setup(t.model_args, "training.model_args")
    if t.chat_template is not None:
        read_chat_template(t.chat_template, "training.chat_template")
    if recipe.pairing.margin_bayes is not None:
        build(PrefDPOConfig, recipe.pairing.margin_bayes.proxy.trl, "pairing.margin_bayes.proxy.trl")


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_trainers: bool = True) -> Recipe:
    """Load and validate a recipe YAML file, with optional ``dotted.key=value`` overrides. ``check_trainers``:
    also build the trainers' configs (:func:`check_trainer_configs`; imports torch and TRL, about 8 s)."""
    data = read_recipe_data(path, overrides)
    try:
        recipe = recipe_from_data(data)
        if check_trainers:
            check_trainer_configs(recipe)
        return recipe
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
