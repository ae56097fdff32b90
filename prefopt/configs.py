"""Typed recipe configuration, loaded from YAML and validated on load.

Every section is a dataclass whose fields carry ``metadata["help"]``. :func:`load_recipe` rejects unknown
keys, wrong types and bad values with a :class:`ConfigError` naming the file and the dotted field path
(``recipes/x.yaml: generation.generators[1].temperature: expected a number, got 'hot'``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prefopt.world.models import TinyModelSpec
from prefopt.world.tasks import Difficulty


class ConfigError(ValueError):
    """A recipe or stage config that cannot be used; the message names the file and the field."""


def _help(text: str, **kwargs) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class WorldConfig:
    """The tiny arithmetic world: its splits and the models built in it."""

    in_domain: Difficulty = _help("Problems of the in-domain split.", default_factory=Difficulty)
    out_of_domain: Difficulty = _help(
        "Problems of the out-of-domain split.", default_factory=lambda: Difficulty(min_ops=4, max_ops=4)
    )
    models: dict[str, TinyModelSpec] = _help(
        "Tiny models to build by name; refer to one elsewhere as 'world:<name>'.", default_factory=dict
    )


@dataclass(frozen=True)
class PromptSource:
    """Where generation prompts come from."""

    source: Literal["tiny_world", "file"] = _help("'tiny_world' samples problems; 'file' reads a dataset.",
                                                  default="tiny_world")
    split: Literal["in_domain", "out_of_domain"] = _help("Tiny-world split to sample.", default="in_domain")
    num_prompts: int = _help("Tiny-world problems to sample.", default=128)
    seed: int = _help("Seed of the tiny-world prompt sample.", default=1)
    path: str | None = _help("A .jsonl, .json, .parquet file or a saved dataset directory (source 'file').",
                             default=None)
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
    engine_options: dict[str, Any] = _help("Engine arguments for this generator; merged over generation's.",
                                           default_factory=dict)

    def __post_init__(self):
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
    engine: Literal["transformers", "vllm", "server"] = _help(
        "'vllm' (offline vllm.LLM), 'server' (an OpenAI-compatible server) or 'transformers' (generate).",
        default="transformers")
    engine_options: dict[str, Any] = _help(
        "Engine arguments: vllm.LLM keywords (tensor_parallel_size, max_model_len, gpu_memory_utilization, "
        "...) or, for 'server', base_url, api_key, max_concurrency, max_retries, timeout.", default_factory=dict)
    batch_size: int = _help("Prompts per engine call.", default=64)
    shard_size: int = _help("Prompts per output shard: the unit of resume and of sharding.", default=256)
    data_parallel_size: int = _help("Worker processes, each with its own engine and GPUs (tensor_parallel_size "
                                    "of them); 1 runs in this process.", default=1)
    generators: list[GeneratorConfig] = _help("The generator pool.", default_factory=list)

    def __post_init__(self):
        if min(self.batch_size, self.shard_size, self.data_parallel_size) < 1:
            raise ValueError("batch_size, shard_size and data_parallel_size must be >= 1")
        if not self.generators:
            raise ValueError("generators: list at least one generator")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique, got {names}")


@dataclass(frozen=True)
class JudgingConfig:
    """The judge stage: which judge scores candidates and how dimensions combine into the aggregate."""

    judge: Literal["tiny_world_verifier"] = _help("Judge that scores every candidate.",
                                                  default="tiny_world_verifier")
    aggregate: str = _help("'mean', 'weighted' (uses weights), or one dimension's name.", default="mean")
    weights: dict[str, float] = _help("Per-dimension weights for aggregate 'weighted'.", default_factory=dict)


@dataclass(frozen=True)
class DeltaFilterConfig:
    """Sample-level delta: keep pairs by judged gap. Leave both knobs unset to keep every pair."""

    dimension: str = _help("'aggregate' or a judge dimension whose gap is ranked.", default="aggregate")
    top_fraction: float | None = _help("Keep this top fraction of pairs by gap (0 < p <= 1).", default=None)
    min_gap: float | None = _help("Keep pairs whose gap is at least this.", default=None)

    def __post_init__(self):
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")


@dataclass(frozen=True)
class PairingConfig:
    """The pairs stage: a pairing strategy, then an optional sample-level delta filter."""

    strategy: Literal["generator_delta"] = _help("Pairing strategy.", default="generator_delta")
    chosen_generator: str = _help("Generator whose traces are chosen.", default="strong")
    rejected_generator: str = _help("Generator whose traces are rejected.", default="weak")
    require_judge_agreement: bool = _help("Drop pairs where the judge scores rejected >= chosen.", default=False)
    filter: DeltaFilterConfig = _help("Sample-level delta filter.", default_factory=DeltaFilterConfig)
    seed: int = _help("Seed for any random choice and the output order.", default=0)


@dataclass(frozen=True)
class TrainingConfig:
    """The train stage: prefopt's DPO or KTO trainer (TRL subclasses) under ``accelerate launch``."""

    method: Literal["dpo", "kto"] = _help("'dpo' (PrefDPOTrainer) or 'kto' (PrefKTOTrainer, pairs given unpaired).",
                                         default="dpo")
    model: str = _help("Policy to align: 'world:<name>' or a local model directory.", default="world:policy")
    accelerate_config: str = _help("accelerate config file (relative to the repository or absolute).",
                                   default="accelerate_configs/cpu.yaml")
    trl: dict[str, Any] = _help("Fields of PrefDPOConfig (method dpo: any trl.DPOConfig field and prefopt's "
                                "pref_loss, gap_transform, sft_route_*, curriculum, ...) or PrefKTOConfig (method "
                                "kto: any trl.KTOConfig field and score_weighting, auto_class_balance, ...).",
                                default_factory=dict)
    gap_column: str = _help("Pairs column whose judged gap the loss uses: 'margin' or 'margins.<dimension>'.",
                            default="margin")


@dataclass(frozen=True)
class EvaluationConfig:
    """The eval stage: greedy accuracy in-domain and out-of-domain."""

    num_problems: int = _help("Problems per split.", default=200)
    seed: int = _help("Seed of the evaluation problems (keep it apart from the prompt seed).", default=12345)
    max_new_tokens: int = _help("Most tokens per answer.", default=96)
    batch_size: int = _help("Problems per engine call.", default=100)
    engine: Literal["transformers", "vllm"] = _help("Engine for greedy decoding.", default="transformers")
    engine_options: dict[str, Any] = _help("Engine arguments (as in generation.engine_options).",
                                           default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A whole prefopt run."""

    name: str = _help("Run name, used in logs and the results table.")
    output_dir: str = _help("Where stage outputs go (each under <stage>/<config hash>/).", default="runs")
    world: WorldConfig = _help("The tiny world.", default_factory=WorldConfig)
    generation: GenerationConfig = _help("Generate stage.", default_factory=GenerationConfig)
    judging: JudgingConfig = _help("Judge stage.", default_factory=JudgingConfig)
    pairing: PairingConfig = _help("Pairs stage.", default_factory=PairingConfig)
    training: TrainingConfig = _help("Train stage.", default_factory=TrainingConfig)
    evaluation: EvaluationConfig = _help("Eval stage.", default_factory=EvaluationConfig)

    def __post_init__(self):
        refs = [g.model for g in self.generation.generators] + [self.training.model]
        for ref in refs:
            if ref.startswith("world:") and ref[len("world:"):] not in self.world.models:
                raise ValueError(f"model {ref!r} is not defined under world.models "
                                 f"(defined: {sorted(self.world.models)})")
        names = {g.name for g in self.generation.generators}
        for role in ("chosen_generator", "rejected_generator"):
            if getattr(self.pairing, role) not in names:
                raise ValueError(f"pairing.{role} {getattr(self.pairing, role)!r} is not a generator "
                                 f"(generators: {sorted(names)})")


# --------------------------------------------------------------------------------------------------------
# Generic, strict conversion of YAML values into typed dataclasses.

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


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
        for arg in (a for a in args if a is not type(None)):
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
        raise ConfigError(f"{label}: {err}") from None


def validate_trl_fields(trl: dict[str, Any], config_cls: type, where: str) -> dict[str, Any]:
    """Check keys and simple types of a TRL config section against the TRL config dataclass."""
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    resolved = typing.get_type_hints(config_cls)
    out = {}
    for key, value in trl.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field of {config_cls.__name__} (trl.DPOConfig + prefopt)")
        if key == "output_dir":
            raise ConfigError(f"{where}.output_dir: set by prefopt (the train stage's directory); remove it")
        converted = _convert(value, resolved.get(key, Any), f"{where}.{key}")
        out[key] = converted.value if isinstance(converted, enum.Enum) else converted  # stays YAML-safe
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw recipe mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe YAML file, with optional ``dotted.key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        data = apply_overrides(data, overrides or [])
        recipe = from_dict(Recipe, data)
        from prefopt.training.launch import trl_defaults
        from prefopt.training.trainers import PrefDPOConfig, PrefKTOConfig  # imported late: heavy

        config_cls = PrefKTOConfig if recipe.training.method == "kto" else PrefDPOConfig
        trl = validate_trl_fields(recipe.training.trl, config_cls, "training.trl")
        try:  # the values too, as the trainer will see them
            config_cls(output_dir="unused", **{**trl_defaults(), **trl})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"training.trl: {err}") from None
        recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, trl=trl))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return recipe
