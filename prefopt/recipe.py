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
from prefopt.config_base import check_name, described, did_you_mean, from_dict
from prefopt.errors import ConfigError
from prefopt.evaluation.config import EvaluationConfig
from prefopt.generation.config import GenerationConfig
from prefopt.generation.vllm_options import check_vllm_options
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
    seeds: list[int] = described(
        "Train every run (arm) once per seed: the seed sets training.trl.seed and pairing.seed (generation and "
        "judging stay shared); tables give each arm's mean with a 95% interval over problems and seeds.",
        default_factory=list,
    )
    baseline: str | None = described(
        "The arm (its label) every other arm's difference is measured from, paired on the same problems "
        "(default: the first).",
        default=None,
    )

    def __post_init__(self):
        check_name(self.name, "name")
        if any(not isinstance(v, list) or not v for v in self.parameters.values()) or not (
            self.parameters or self.seeds
        ):
            raise ValueError("parameters must map each field to a non-empty list of values")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        clash = [k for k in self.parameters if k in ("training.trl.seed", "pairing.seed")]
        if clash and self.seeds:
            raise ValueError(f"seeds sets {clash[0]}: drop it from parameters, or seeds")
        sizes = [len(v) for v in self.parameters.values()] or [1]
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
        if self.baseline is not None and self.labels and self.baseline not in self.labels:
            raise ValueError(f"baseline {self.baseline!r} is not one of the labels {self.labels}")


# A value written into an #SBATCH line as it is (sbatch reads those lines without a shell): one plain word.
_SBATCH_WORD = re.compile(r"[\w.:,=+%/@-]+")
_SLURM_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+")
_SLURM_MEM = re.compile(r"\d+[KMGT]?")


def _check_slurm(owner: Any) -> None:
    """The Slurm fields shared by the resources section and its stages: plain words, Slurm's formats."""
    if isinstance(owner.time, int) and not isinstance(owner.time, bool):
        raise ValueError(
            f'time: got the number {owner.time}: quote it (time: "12:00:00"); YAML reads 12:00:00 unquoted as seconds'
        )
    if owner.time is not None and (not isinstance(owner.time, str) or not _SLURM_TIME.fullmatch(owner.time)):
        raise ValueError(f"time: expected Slurm's minutes, MM:SS, HH:MM:SS or D-HH:MM:SS, got {owner.time!r}")
    if owner.mem is not None and not _SLURM_MEM.fullmatch(owner.mem):
        raise ValueError(f"mem: expected a size such as 200G or 64000M, got {owner.mem!r}")
    if owner.partition is not None and not _SBATCH_WORD.fullmatch(owner.partition):
        raise ValueError(f"partition: expected letters, digits and _ . , - only, got {owner.partition!r}")
    for name in ("gpus", "cpus_per_task"):
        value = getattr(owner, name)
        if value is not None and value < (0 if name == "gpus" else 1):
            raise ValueError(f"{name}: expected {'>= 0' if name == 'gpus' else '>= 1'}, got {value}")
    for arg in owner.sbatch_args:
        if not isinstance(arg, str) or not arg.startswith("-") or not _SBATCH_WORD.fullmatch(arg):
            raise ValueError(
                f"sbatch_args: each item is one option word such as --account=abc or --qos=high (no spaces, quotes "
                f"or $), got {arg!r}"
            )


@dataclass(frozen=True)
class StageResources:
    """What one stage's Slurm jobs ask for; a field left unset takes the resources section's own value."""

    gpus: int | None = described(
        "GPUs per task (per node for training). Unset: from the recipe: tensor_parallel_size x data_parallel_size "
        "of the engine for generation (per array task: tensor_parallel_size), the judge's engine (a reward model: "
        "1), for training and margin_bayes's proxy the accelerate config's num_processes (none given: 8, a whole "
        "node), 0 for CPU-only stages and tiny-world models.",
        default=None,
    )
    time: Any = described('Wall-clock limit, as Slurm takes it (quoted: "12:00:00", "2-00:00:00").', default=None)
    mem: str | None = described("Memory per node, e.g. 200G.", default=None)
    partition: str | None = described("Slurm partition.", default=None)
    cpus_per_task: int | None = described("CPU cores per task.", default=None)
    nodes: int | None = described("train only: nodes of the multi-node accelerate launch (default 1).", default=None)
    shards: int | None = described(
        "generate only: array tasks, each `prefopt generate --shard i --num-shards shards` (default 1). The count is "
        "written into the script, so any subset of the array can be resubmitted.",
        default=None,
    )
    sbatch_args: list[str] = described(
        "More sbatch options, one word each (--account=abc, --qos=high), after the section's own.",
        default_factory=list,
    )

    def __post_init__(self):
        _check_slurm(self)
        for name in ("nodes", "shards"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")


SLURM_STAGES = ("generate", "judge", "pairs", "train", "eval")


@dataclass(frozen=True)
class ResourcesConfig:
    """What the Slurm jobs of `prefopt run --slurm` and `prefopt sweep --slurm` ask for: defaults for every job,
    then per stage. Nothing here changes what a stage computes (no stage key hashes it)."""

    gpus: int | None = described("GPUs per job for every stage that sets none (unset: from the recipe).", default=None)
    time: Any = described('Wall-clock limit of every job (quoted: "24:00:00").', default=None)
    mem: str | None = described("Memory per node of every job, e.g. 200G.", default=None)
    partition: str | None = described("Slurm partition of every job.", default=None)
    cpus_per_task: int | None = described("CPU cores per task of every job.", default=None)
    sbatch_args: list[str] = described(
        "More sbatch options for every job, one word each (--account=abc).", default_factory=list
    )
    log_dir: str = described(
        "Where the jobs' logs go (relative: under the directory the scripts are written from); created on submit.",
        default="logs",
    )
    generate: StageResources = described("The generate array (and its merge job).", default_factory=StageResources)
    judge: StageResources = described("The judge job.", default_factory=StageResources)
    pairs: StageResources = described(
        "The pairs job (margin_bayes: with its proxy training).", default_factory=StageResources
    )
    train: StageResources = described("The (multi-node) training job.", default_factory=StageResources)
    eval: StageResources = described("The evaluation job.", default_factory=StageResources)

    def __post_init__(self):
        _check_slurm(self)
        if not self.log_dir or "\n" in self.log_dir:
            raise ValueError(f"log_dir: expected a directory, got {self.log_dir!r}")
        for stage in SLURM_STAGES:
            section = getattr(self, stage)
            if section.nodes is not None and stage != "train":
                raise ValueError(f"{stage}.nodes: only the train stage runs on several nodes")
            if section.shards is not None and stage != "generate":
                raise ValueError(f"{stage}.shards: only the generate stage is split into shards")

    def stage(self, name: str) -> dict[str, Any]:
        """One stage's request: its own values over the section's (``gpus`` None: the renderer derives it)."""
        own = getattr(self, name)
        merged = {
            key: getattr(own, key) if getattr(own, key) is not None else getattr(self, key)
            for key in ("gpus", "time", "mem", "partition", "cpus_per_task")
        }
        return {
            **merged,
            "nodes": own.nodes or 1,
            "shards": own.shards or 1,
            "sbatch_args": [*self.sbatch_args, *own.sbatch_args],
        }


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
        for where, ref in self.model_refs():
            if ref.startswith("world:") and ref[len("world:") :] not in self.world.models:
                hint = did_you_mean(ref[len("world:") :], self.world.models)
                raise ConfigError(
                    f"{where}: model {ref!r} is not defined under world.models{hint} "
                    f"(defined: {sorted(self.world.models)})"
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

    def model_refs(self) -> list[tuple[str, str]]:
        """(field, model reference) of every model the recipe names."""
        refs = [(f"generation.generators[{i}].model", g.model) for i, g in enumerate(self.generation.generators)]
        refs.append(("training.model", self.training.model))
        if self.judging.entry.is_model:
            refs.append((f"judging.{self.judging.entry.config_section}.model", self.judging.section.model))
        if self.pairing.margin_bayes is not None:
            refs.append(("pairing.margin_bayes.proxy.model", self.pairing.margin_bayes.proxy.model))
        return refs


def judge_dimensions(judging: JudgingConfig) -> tuple[str, ...] | None:
    """The dimensions the configured judge scores, where the recipe fixes them (None: known only once it runs)."""
    entry = judging.entry
    if entry.dimensions is not None:
        return tuple(entry.dimensions)
    if entry.config_section == "reward_model" and judging.reward_model is not None:
        return tuple(judging.reward_model.dimensions) or (judging.reward_model.dimension,)
    if entry.config_section == "llm" and judging.llm is not None:
        from prefopt.judging.rubrics import load_rubric

        try:
            return load_rubric(judging.llm.rubric).names
        except ConfigError:  # reported as judging.llm.rubric when the recipe loads
            return None
    return None


POSITIVE_TRL_INTS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")


def _engine_options(recipe: Recipe) -> list[tuple[str, str, dict]]:
    """(field, engine, options) of every engine the recipe configures."""
    g, j = recipe.generation, recipe.judging
    out = [("generation.engine_options", g.engine, g.engine_options)]
    out += [
        (f"generation.generators[{i}].engine_options", g.engine, {**g.engine_options, **gen.engine_options})
        for i, gen in enumerate(g.generators)
    ]
    if j.llm is not None:
        out.append(("judging.llm.engine_options", j.llm.engine, j.llm.engine_options))
    out.append(("evaluation.engine_options", recipe.evaluation.engine, recipe.evaluation.engine_options))
    return out


def check_cross_fields(recipe: Recipe) -> None:
    """Checks between sections, when the recipe loads: the aggregate, weights and selections name dimensions the
    judge produces; engine and TRL sizes are in range. (The gap column and the GPUs: :func:`preflight`.)"""
    judging, pairing, training = recipe.judging, recipe.pairing, recipe.training
    dims = judge_dimensions(judging)
    of_judge = f"judge {judging.judge!r}"
    if dims is not None:
        rules = ["mean", "weighted", *dims]
        if judging.aggregate not in rules:
            raise ConfigError(
                f"judging.aggregate: {judging.aggregate!r} is not 'mean', 'weighted' or a dimension of {of_judge}"
                f"{did_you_mean(judging.aggregate, rules)} (expected one of {rules})"
            )
        if judging.aggregate == "weighted":
            unknown = [d for d in judging.weights if d not in dims]
            if unknown:
                raise ConfigError(
                    f"judging.weights.{unknown[0]}: not a dimension of {of_judge}{did_you_mean(unknown[0], dims)} "
                    f"(dimensions: {list(dims)})"
                )
            if not judging.weights or sum(judging.weights.values()) <= 0:
                raise ConfigError(
                    f"judging.weights: aggregate 'weighted' needs weights of the dimensions {list(dims)} with a "
                    f"positive sum, got {judging.weights}"
                )
        selections = []
        if pairing.filter.active:
            selections.append(("pairing.filter.dimension", pairing.filter.dimension))
        if pairing.margin_bayes is not None:
            selections.append(("pairing.margin_bayes.dimension", pairing.margin_bayes.dimension))
        for where, dim in selections:
            if dim != "aggregate" and dim not in dims:
                raise ConfigError(
                    f"{where}: {dim!r} is not 'aggregate' or a dimension of {of_judge}"
                    f"{did_you_mean(dim, ['aggregate', *dims])} (dimensions: {list(dims)})"
                )
    for where, engine, options in _engine_options(recipe):
        if engine == "vllm":  # read from vLLM's source, not imported
            check_vllm_options(options, where)
        tp = options.get("tensor_parallel_size")
        if tp is not None and (isinstance(tp, bool) or not isinstance(tp, int) or tp < 1):
            raise ConfigError(f"{where}.tensor_parallel_size: expected an integer >= 1, got {tp!r}")
    mb = pairing.margin_bayes
    for where, trl in (("training.trl", training.trl), ("pairing.margin_bayes.proxy.trl", mb.proxy.trl if mb else {})):
        for key in POSITIVE_TRL_INTS:
            value = trl.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ConfigError(f"{where}.{key}: expected an integer >= 1, got {value}")
        try:
            rate = float(trl.get("learning_rate", 0.0))
        except (TypeError, ValueError):  # the type check of TRL fields reports it
            rate = 0.0
        if rate < 0:
            raise ConfigError(f"{where}.learning_rate: expected a number >= 0, got {trl['learning_rate']!r}")


def check_gap_column(recipe: Recipe) -> None:
    """training.gap_column names a gap column of the pairs stage's pairs: 'margin' or 'margins.<a judge dimension>'
    (pairs given by hand, or a training.dataset, name their own column)."""
    gap, dims = recipe.training.gap_column, judge_dimensions(recipe.judging)
    if gap != "margin" and not gap.startswith("margins."):
        raise ConfigError(
            f"training.gap_column: {gap!r} is not a gap column of the pairs (expected 'margin' or "
            "'margins.<dimension>')"
        )
    dim = gap[len("margins.") :]
    if gap.startswith("margins.") and dims is not None and dim not in dims:
        raise ConfigError(
            f"training.gap_column: {dim!r} is not a dimension of judge {recipe.judging.judge!r}"
            f"{did_you_mean(dim, dims)} (expected 'margin' or one of {['margins.' + d for d in dims]})"
        )


def _looks_local(ref: str) -> bool:
    """A model reference that can only be a local directory (not a hub id 'org/name' or a served model's name)."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1


def preflight(recipe: Recipe, stages: tuple[str, ...], given: dict[str, str] | None = None) -> None:
    """What the stages about to run on this machine need beyond the recipe's own values, checked before any of them
    starts: the files the recipe names (prompts, benchmarks, accelerate configs, the training dataset, local models)
    and their GPUs. ``given``: stages whose input is given by hand (their recipe inputs are not read).
    (``plan``, ``--slurm`` and sweeps load recipes on machines without the data or the GPUs: they skip these.)"""
    from prefopt.user_data import BUILDERS, DatasetSpec

    given = given or {}
    own_data = recipe.training.dataset is not None
    g, j = recipe.generation, recipe.judging
    if "generate" in stages and not own_data and g.prompts.source == "file":
        path = Path(g.prompts.path).expanduser()
        if DatasetSpec(g.prompts.path).is_local and not path.exists():
            raise ConfigError(f"generation.prompts.path: {g.prompts.path}: no such file or directory")
        if path.is_file() and path.suffix not in BUILDERS:
            raise ConfigError(
                f"generation.prompts.path: {g.prompts.path}: unsupported file type {path.suffix!r} (expected one of "
                f"{sorted(BUILDERS)}, a dataset directory or a Hub dataset id)"
            )
    if "eval" in stages:
        for i, bench in enumerate(recipe.evaluation.benchmarks):
            if not Path(bench.path).exists():
                raise ConfigError(f"evaluation.benchmarks[{i}].path: {bench.path}: no such file or directory")
        from prefopt.evaluation.accuracy import benchmark_set

        for bench in recipe.evaluation.benchmarks:  # read now, not after hours of generation and training
            benchmark_set(bench)
    configs = [("training.accelerate_config", recipe.training.accelerate_config)] if "train" in stages else []
    mb = recipe.pairing.margin_bayes
    if "pairs" in stages and mb is not None:
        configs.append(("pairing.margin_bayes.proxy.accelerate_config", mb.proxy.accelerate_config))
    root = Path(__file__).resolve().parents[1]
    for where, config in configs:
        if not (Path(config).is_file() or (root / config).is_file()):
            raise ConfigError(f"{where}: {config} not found (looked in . and {root})")
    spec = recipe.training.dataset
    if "train" in stages and spec is None and "train" not in given:  # the pairs stage's pairs
        check_gap_column(recipe)
    if "train" in stages and spec is not None and "train" not in given:
        if spec.is_local and not Path(spec.path).expanduser().exists():
            raise ConfigError(f"training.dataset.path: {spec.path}: no such file or directory")
    runs = {
        "generate": [w for w, _ in recipe.model_refs() if w.startswith("generation.")] if g.engine != "server" else [],
        "judge": [w for w, _ in recipe.model_refs() if w.startswith("judging.")]
        if j.llm is None or j.llm.engine != "server"
        else [],
        "pairs": ["pairing.margin_bayes.proxy.model"],
        "train": ["training.model"],
        "eval": [w for w, _ in recipe.model_refs() if w.startswith(("generation.", "training."))],
    }
    needed = {w for stage in stages for w in runs[stage]}
    for where, ref in recipe.model_refs():
        if where in needed and _looks_local(ref) and not Path(ref).expanduser().exists():
            raise ConfigError(f"{where}: {ref}: no such model directory (and not a hub id 'org/name')")
    check_devices(recipe, stages)


def check_devices(recipe: Recipe, stages: tuple[str, ...]) -> None:
    """vLLM's tensor_parallel_size (x generation.data_parallel_size) fits the GPUs this process sees."""
    engines = [
        e
        for e in _engine_options(recipe)
        if e[1] == "vllm"
        and (
            ("generate" in stages and e[0].startswith("generation."))
            or ("judge" in stages and e[0].startswith("judging."))
            or ("eval" in stages and e[0].startswith("evaluation."))
        )
    ]
    wanted = [
        (where, tp * (recipe.generation.data_parallel_size if where.startswith("generation.") else 1), tp)
        for where, _, options in engines
        if (tp := options.get("tensor_parallel_size", 1)) > 1
        or (where.startswith("generation.") and recipe.generation.data_parallel_size > 1)
    ]
    if not wanted:
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for where, need, tp in wanted:
        if gpus == 0 and tp > 1:
            raise ConfigError(
                f"{where}.tensor_parallel_size: {tp} needs {tp} GPUs; this machine has no CUDA GPU (use 1 on the CPU)"
            )
        if gpus and need > gpus:
            raise ConfigError(
                f"{where}.tensor_parallel_size: {tp} x generation.data_parallel_size "
                f"{recipe.generation.data_parallel_size if where.startswith('generation.') else 1} needs {need} GPUs; "
                f"{gpus} are visible"
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
            value = load_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({yaml_problem(err)})") from None
        try:
            set_path(data, key, value)
        except ConfigError as err:
            raise ConfigError(f"--set {item!r}: {err}") from None
    return data


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
            except TypeError:  # an unhashable key: construct_mapping says so
                break
            if twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, from 1) and what."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = " ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join((what or str(err)).split())


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The raw mapping of a recipe file, with ``dotted.key=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a recipe is a YAML text file") from None
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
