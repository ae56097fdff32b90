"""``prefopt export model``: a train stage's model (full weights, a LoRA adapter, or the adapter merged into its
base) with its tokenizer, generation config and a model card."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import yaml

from prefopt.cache import MANIFEST, is_complete
from prefopt.errors import ConfigError, DataError
from prefopt.export.common import Source, empty_output, read_json
from prefopt.layout import FINAL_MODEL_DIR

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def model_dir(path: Path) -> Path:
    """The saved model of a train directory (its ``model/``), or ``path`` itself if it holds one."""
    for candidate in (path / FINAL_MODEL_DIR, path):
        if (candidate / "config.json").is_file() or (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    raise DataError(
        f"{path}: no saved model here (expected config.json or {ADAPTER_CONFIG}, or a {FINAL_MODEL_DIR}/ "
        "directory holding one)"
    )


@dataclasses.dataclass
class TrainInfo:
    """What the model card says about how the model was made."""

    method: str | None
    base_model: str  # the directory or hub id trained from
    base_ref: str | None  # as the recipe names it (e.g. world:policy)
    settings: dict
    data: Path | None
    recipe: str | None = None
    results: str | None = None


def train_info(source: Source, model: Path) -> TrainInfo:
    """Method, base model and settings from the train directory (its manifest and ``train_config.yaml``)."""
    train_dir = model.parent if model.name == FINAL_MODEL_DIR else model
    settings = (
        yaml.safe_load((train_dir / "train_config.yaml").read_text())
        if (train_dir / "train_config.yaml").is_file()
        else {}
    )
    config = (read_json(train_dir / MANIFEST) or {}).get("config") or {}
    method = source.recipe.training.method if source.recipe else config.get("method")
    if method is None and settings:
        method = "dpo" if "gap_column" in settings else "kto"  # the train stage writes gap_column for DPO only
    base = settings.get("model_name_or_path") or config.get("model") or "unknown"
    data = settings.get("pairs_path")
    ref = source.recipe.training.model if source.recipe else config.get("model")
    info = TrainInfo(method, base, ref if ref != base else None, settings, Path(data) if data else None)
    if source.recipe is not None:
        info.recipe = source.recipe.name
        info.results = recipe_results(source)
    return info


def recipe_results(source: Source) -> str | None:
    """The recipe's results table from its finished evaluations (those not run yet are left out)."""
    from prefopt.evaluation.report import results_markdown

    pipeline, recipe = source.pipeline, source.recipe
    before, after = pipeline.model_labels()
    dirs = {label: pipeline.stage_dir("eval", key) for label, key in pipeline.eval_keys().items()}
    accuracies = {label: read_json(d / "summary.json") for label, d in dirs.items() if is_complete(d)}
    if after not in accuracies:
        return None
    pairs = (
        [(p.chosen, p.rejected) for p in recipe.pairing.generator_pairs]
        if recipe.pairing.strategy_entry.needs_generator_labels
        else []
    )
    stats = read_json(pipeline.stage_dir("pairs", pipeline.pairs_key()) / "stats.json")
    return results_markdown(recipe.name, pairs, accuracies, stats, (before, after))


def loss_description(method: str | None, settings: dict) -> list[str]:
    """The loss settings the trainer used: its config class's fields as set, else its defaults."""
    if method not in ("dpo", "kto"):
        return ["unknown (no train config or manifest)"]
    from prefopt.training.dpo_trainer import PrefDPOConfig
    from prefopt.training.kto_trainer import PrefKTOConfig

    cls = PrefDPOConfig if method == "dpo" else PrefKTOConfig
    names = {f.name: f for f in dataclasses.fields(cls)}
    keys = ["loss_type", "loss_weights", "beta"] + (
        ["pref_loss", "gap_transform", "sft_route_threshold", "sft_route_quantile"]
        if method == "dpo"
        else ["desirable_weight", "undesirable_weight", "score_weighting", "auto_class_balance"]
    )
    out = []
    for key in [k for k in keys if k in names]:
        f = names[key]
        value = settings.get(
            key,
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else None,
        )
        out.append(f"`{key}`: {value}")
    return out


def model_card(info: TrainInfo, adapter: dict | None, merged: bool, chat_template: bool) -> str:
    """The model card (README.md) of an exported model."""
    base = adapter["base_model_name_or_path"] if adapter else info.base_model
    named = f"`{info.base_ref}` (`{base}`)" if info.base_ref and not adapter else f"`{base}`"
    method = (info.method or "unknown").upper()
    header = {
        "library_name": "peft" if adapter and not merged else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["prefopt", "trl", (info.method or "preference")],
    }
    if not Path(base).exists() and base != "unknown":
        header["base_model"] = base  # a hub id (a local path is no base_model the Hub knows)
    kind = (
        (
            "a LoRA adapter merged into its base"
            if merged
            else "a LoRA adapter (load it over its base with peft's AutoPeftModelForCausalLM)"
        )
        if adapter
        else "full weights"
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {info.recipe or 'prefopt model'} ({method})",
        "",
        f"A policy aligned with {method} by prefopt (TRL subclasses); {kind}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | {named} |",
        f"| recipe | `{info.recipe or 'unknown'}` |",
        f"| method | {method} |",
        "| loss | " + "; ".join(loss_description(info.method, info.settings)) + " |",
        f"| data | `{info.data or 'unknown'}` |",
        f"| chat template | {'saved with the tokenizer' if chat_template else 'none (the tokenizer has none)'} |",
        "",
    ]
    if adapter and Path(base).exists():
        lines += [
            f"The adapter's base is a local directory (`{base}`): publish it too, or export with `--merge-lora`.",
            "",
        ]
    stats = read_json(info.data / "stats.json") if info.data else None
    if stats:
        kept = (
            f"{stats['examples_kept']} KTO examples"
            if "examples_kept" in stats
            else f"{stats['pairs_kept']} of {stats['pairs_built']} pairs built"
        )
        lines += ["## Data", "", f"{kept}, strategy `{stats['strategy']}`.", ""]
    if info.results:
        lines += ["## Results", "", info.results.replace("## prefopt results: ", "Run: "), ""]
    if info.settings:
        lines += [
            "## Training settings (`train_config.yaml`)",
            "",
            "```yaml",
            yaml.safe_dump(info.settings, sort_keys=True).strip(),
            "```",
            "",
        ]
    return "\n".join(lines) + "\n"


def export_model(source: Source, output: str | Path, merge_lora: bool = False) -> Path:
    """Write the trained model of ``source`` (safetensors, tokenizer, generation config, card) into ``output``."""
    from transformers import AutoTokenizer, GenerationConfig

    model = model_dir(source.path)
    adapter = read_json(model / ADAPTER_CONFIG)
    if merge_lora and adapter is None:
        raise ConfigError(f"--merge-lora: {model} holds full weights, no LoRA adapter ({ADAPTER_CONFIG}) to merge")
    base = adapter["base_model_name_or_path"] if adapter else None
    if merge_lora and not Path(base).exists() and base.startswith(("/", ".", "~")):
        raise FileNotFoundError(
            f"{model / ADAPTER_CONFIG}: base_model_name_or_path {base} does not exist (the "
            "adapter's base is needed to merge it)"
        )
    out = empty_output(output)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    if adapter and not merge_lora:
        for file in sorted(model.glob("adapter_model.*")) + [model / ADAPTER_CONFIG]:
            shutil.copy2(file, out / file.name)
        try:  # the adapter's own, else its base's
            GenerationConfig.from_pretrained(
                str(model) if (model / "generation_config.json").is_file() else base
            ).save_pretrained(str(out))
        except OSError:
            logger.warning("Neither %s nor its base %s has a generation config; the export has none", model, base)
    else:
        if adapter:
            from peft import AutoPeftModelForCausalLM

            weights = AutoPeftModelForCausalLM.from_pretrained(str(model)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            weights = AutoModelForCausalLM.from_pretrained(str(model))
        weights.save_pretrained(str(out))  # safetensors, config.json and generation_config.json
    tokenizer.save_pretrained(str(out))
    if tokenizer.chat_template is None:
        logger.warning("%s: the tokenizer has no chat template; the export has none either", model)
    (out / "README.md").write_text(
        model_card(train_info(source, model), adapter, merge_lora, tokenizer.chat_template is not None)
    )
    logger.info(
        "Exported %s to %s", "the merged model" if merge_lora else "the adapter" if adapter else "the model", out
    )
    return out
