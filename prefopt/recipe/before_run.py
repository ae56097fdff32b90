"""Checks before any stage runs, beyond the recipe's own values: the files, models and GPUs the stages about to run
need (:func:`preflight`), and the trainers' configs built with TRL itself (:func:`check_trainer_configs`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefopt.errors import ConfigError
from prefopt.recipe.checks import check_gap_column, engine_options

if TYPE_CHECKING:
    from prefopt.recipe.config import Recipe


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
            if bench.dataset_spec().is_local and not Path(bench.path).expanduser().exists():
                raise ConfigError(f"evaluation.benchmarks[{i}].path: {bench.path}: no such file or directory")
        from prefopt.evaluation.accuracy import benchmark_set

        for bench in recipe.evaluation.benchmarks:  # read now, not after hours of generation and training
            benchmark_set(bench)
    configs = [("training.accelerate_config", recipe.training.accelerate_config)] if "train" in stages else []
    mb = recipe.pairing.margin_bayes
    if "pairs" in stages and mb is not None:
        configs.append(("pairing.margin_bayes.proxy.accelerate_config", mb.proxy.accelerate_config))
    root = Path(__file__).resolve().parents[2]
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
        for e in engine_options(recipe)
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


def check_trainer_configs(recipe: Recipe) -> None:
    """Build the trainers' configs as the train stage will (TRL's own cross-field checks, prefopt's loss names),
    the LoRA config, and compile the chat template: what needs torch and TRL, before any stage runs."""
    from prefopt.engines.base import read_chat_template
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
