"""``prefopt export pairs | model``: a run's data and trained model as files for use elsewhere, with a card.

- **pairs**: a pairs stage's output (from a recipe, or any pairs directory) in TRL's preference format,
  ``prompt``/``chosen``/``rejected`` (KTO examples: ``prompt``/``completion``/``label``), plain text, or chat
  messages where the data has a system message; every other column (the judged gap ``margin`` and ``margins``,
  the scores, generators, ids) kept as it is. ``train.jsonl`` or ``train.parquet`` (what ``datasets.load_dataset``
  reads as the train split), ``README.md`` (a dataset card: recipe, generators, judge, strategy, every count of
  ``stats.json``, a gap histogram) and ``gap_histogram.png`` (``score_histogram.png`` for KTO examples).
- **model**: a train stage's ``model/`` as safetensors, its tokenizer (with its chat template), generation config
  and ``README.md`` (a model card: base model, data, recipe, method and loss, the results table where the recipe's
  evaluations are done). A LoRA adapter (``adapter_config.json``) is exported as it is, or with ``merge_lora``
  merged into its base (peft ``merge_and_unload``) as a full model.

Either can then go to the Hugging Face Hub (``huggingface_hub`` ``create_repo`` and ``upload_folder``, with the
token of ``hf auth login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from datasets import Dataset

from prefopt.cache import MANIFEST, is_complete
from prefopt.errors import ConfigError, DataError
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.recipe import Recipe, load_recipe
from prefopt.schemas import TRAIN_PAIRS, TRAIN_UNPAIRED, load_stage_dataset, prompt_conversation, require_columns
from prefopt.tables import num, pct

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
ADAPTER_CONFIG = "adapter_config.json"


# -- where things are ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Source:
    """A stage output to export, and the recipe it belongs to (None for a directory given as such)."""

    path: Path
    recipe: Recipe | None = None
    pipeline: object | None = None


def resolve(target: str, stage: str, overrides: list[str] | None = None, output_dir: str | None = None) -> Source:
    """A recipe's finished ``stage`` output, or ``target`` itself when it is a directory."""
    path = Path(target)
    if path.suffix not in (".yaml", ".yml"):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory (expected a recipe YAML file or a {stage} directory)")
        return Source(path)
    from prefopt.pipeline import Pipeline

    recipe = load_recipe(path, overrides, check_trainers=False)
    if output_dir:
        recipe = dataclasses.replace(recipe, output_dir=output_dir)
    pipeline = Pipeline(recipe)
    out = pipeline.stage_dir(stage, getattr(pipeline, f"{stage}_key")())
    if not is_complete(out):
        raise FileNotFoundError(f"{out}: the {stage} stage has not run for {path}; run `prefopt {stage}` first")
    return Source(out, recipe, pipeline)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_input(stage_dir: Path) -> Path | None:
    """The directory a finished stage read (recorded in its manifest), if any."""
    given = (_json(stage_dir / MANIFEST) or {}).get("input")
    return Path(given) if given else None


def empty_output(output: str | Path) -> Path:
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--output {out}: exists and is not an empty directory (the export writes a "
            "directory: give a new path or remove it)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def push_to_hub(folder: Path, repo_id: str, repo_type: str) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` into it; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, commit_message="Upload with prefopt export"
        )
    except HfHubHTTPError as err:
        raise ConfigError(
            f"--push-to-hub {repo_id}: {str(err).splitlines()[0]} (the export is in {folder}; log in "
            "with `hf auth login` or set HF_TOKEN)"
        ) from None
    return str(getattr(commit, "commit_url", commit))


# -- pairs --------------------------------------------------------------------------------------------------
def to_trl_format(data: Dataset, source: str) -> tuple[Dataset, bool]:
    """Pairs (or KTO examples) in TRL's preference (unpaired) format, every other column kept; and whether the
    rows are conversational (they are when a ``system`` column holds a message, or a ``prompt_messages`` column a
    conversation of more than the user's turn: then the prompt is that conversation)."""
    unpaired = "label" in data.column_names and "chosen" not in data.column_names
    answers = ["completion"] if unpaired else ["chosen", "rejected"]
    require_columns(data, TRAIN_UNPAIRED if unpaired else TRAIN_PAIRS, source, "exported pairs")
    context = [c for c in ("system", "prompt_messages") if c in data.column_names]
    if not context:
        return data, False
    systems = "system" in context and any(data["system"])
    chats = "prompt_messages" in context and any(m is not None and len(m) > 1 for m in data["prompt_messages"])
    if not systems and not chats:
        return data.remove_columns(context), False

    def convert(row: dict) -> dict:
        return {
            "prompt": prompt_conversation(row["prompt"], row.get("prompt_messages"), row.get("system")),
            **{a: [{"role": "assistant", "content": row[a]}] for a in answers},
        }

    return data.map(convert, remove_columns=context, desc="conversational"), True


def text_histogram(values: pd.Series, bins: int = 10) -> list[str]:
    """A Markdown table of counts per value range."""
    counts, edges = np.histogram(values.dropna(), bins=bins)
    return ["| range | rows |", "| --- | --- |"] + [
        f"| [{lo:.3g}, {hi:.3g}{']' if i == bins - 1 else ')'} | {n} |"
        for i, (lo, hi, n) in enumerate(zip(edges, edges[1:], counts))
    ]


def pairs_card(
    title: str,
    data: Dataset,
    conversational: bool,
    data_file: str,
    stats: dict | None,
    judge: str | None,
    generators: dict[str, str | None],
    image: str,
) -> str:
    """The dataset card (README.md) of exported pairs."""
    frame = data.select_columns([c for c in ("label", "score", "margin") if c in data.column_names]).to_pandas()
    unpaired = "label" in frame.columns
    kind = "KTO examples (unpaired)" if unpaired else "preference pairs"
    header = {
        "tags": ["prefopt", "trl", "kto" if unpaired else "dpo"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
    }
    columns = ["prompt", "completion", "label"] if unpaired else ["prompt", "chosen", "rejected"]
    shape = (
        "conversational: lists of chat messages, the system message first" if conversational else "standard: plain text"
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {title}",
        "",
        f"{len(data)} {kind} built by prefopt from judged generations, in TRL's "
        f"{'unpaired ' if unpaired else ''}preference format ({', '.join(f'`{c}`' for c in columns)}; {shape}). "
        f"The other columns are prefopt's own (`margin`: the judged gap chosen - rejected; `*_score(s)`: the "
        f"judge's scores).",
        "",
        "| | |",
        "| --- | --- |",
        f"| strategy | `{(stats or {}).get('strategy', 'unknown (no stats.json)')}` |",
        f"| judge | `{judge or 'unknown (no judge output recorded)'}` |",
        "| generators | "
        + (", ".join(f"`{g}`" + (f" ({m})" if m else "") for g, m in generators.items()) or "unknown")
        + " |",
        f"| rows | {len(data)} |",
        "",
        "```python",
        "from datasets import load_dataset",
        f'data = load_dataset("{"json" if data_file.endswith(".jsonl") else "parquet"}", '
        f'data_files="{data_file}", split="train")',
        "```",
        "",
    ]
    if stats:
        lines += [
            "## Counts (`stats.json` of the pairs stage)",
            "",
            "What was built, and what was dropped on the way (`unjudged_candidates`, "
            "`prompts_too_few_candidates`, `ties_dropped`, `dropped_by_*`):",
            "",
            "| count | value |",
            "| --- | --- |",
        ]
        lines += [
            f"| {k} | {num(v) if isinstance(v, float) else v} |"
            for k, v in stats.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        lines.append("")
    if unpaired:
        lines += [
            "## Judged scores",
            "",
            f"Desirable: {int(frame['label'].sum())}, undesirable: {int((~frame['label']).sum())}.",
            "",
            f"![scores by label]({image})",
            "",
        ]
        lines += text_histogram(frame["score"]) if "score" in frame.columns else []
    elif "margin" in frame.columns:
        lines += [
            "## Judged gap (chosen - rejected)",
            "",
            f"Mean {num(float(frame['margin'].mean()))}, judge agrees "
            f"(gap > 0) on {pct(float((frame['margin'] > 0).mean()))}.",
            "",
            f"![gap histogram]({image})",
            "",
        ]
        lines += text_histogram(frame["margin"])
    return "\n".join(lines) + "\n"


def pairs_generators(source: Source, data: Dataset) -> dict[str, str | None]:
    """Generator name -> model: from the recipe, else from the judgments, else the names in the data."""
    if source.recipe is not None:
        return {g.name: g.model for g in source.recipe.generation.generators}
    judge_dir = stage_input(source.path)
    if judge_dir is not None and judge_dir.is_dir():
        frame = load_stage_dataset(judge_dir, {}, "judgments").select_columns(["generator", "model"]).to_pandas()
        return dict(frame.drop_duplicates("generator").itertuples(index=False, name=None))
    names = [c for c in ("generator", "chosen_generator", "rejected_generator") if c in data.column_names]
    return {g: None for c in names for g in dict.fromkeys(data[c])}


def export_pairs(source: Source, fmt: str, output: str | Path) -> Path:
    """Write the pairs of ``source`` as ``train.<fmt>``, its card and histogram into ``output``; returns it."""
    from prefopt import plots

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {list(FORMATS)}")
    data = load_stage_dataset(source.path, {}, "pairs")
    exported, conversational = to_trl_format(data, str(source.path))
    out = empty_output(output)
    data_file = f"train.{fmt}"
    if fmt == "jsonl":  # json.dumps writes every float exactly (pandas' to_json rounds to 10 digits)
        with open(out / data_file, "w", encoding="utf-8") as f:
            for batch in exported.iter(batch_size=1000):
                for row in (dict(zip(batch, values)) for values in zip(*batch.values())):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        exported.to_parquet(str(out / data_file))
    flat = data.flatten().to_pandas()
    if "label" in flat.columns:
        image = plots.plot_label_scores(flat, out / "score_histogram.png").name
    else:
        image = plots.plot_margins(flat, out / "gap_histogram.png").name
    stats = _json(source.path / "stats.json")
    judge_dir = stage_input(source.path)
    quality = _json(judge_dir / "quality.json") if judge_dir else None
    judge = quality["judge"] if quality else source.recipe.judging.judge if source.recipe else None
    title = f"{source.recipe.name}: pairs" if source.recipe else f"prefopt pairs ({source.path.name})"
    (out / "README.md").write_text(
        pairs_card(title, data, conversational, data_file, stats, judge, pairs_generators(source, data), image)
    )
    logger.info("Exported %d rows (%s) to %s", len(exported), "conversational" if conversational else "standard", out)
    return out


# -- model --------------------------------------------------------------------------------------------------
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
    config = (_json(train_dir / MANIFEST) or {}).get("config") or {}
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
    accuracies = {label: _json(d / "summary.json") for label, d in dirs.items() if is_complete(d)}
    if after not in accuracies:
        return None
    pairs = (
        [(p.chosen, p.rejected) for p in recipe.pairing.generator_pairs]
        if recipe.pairing.strategy_entry.needs_generator_labels
        else []
    )
    stats = _json(pipeline.stage_dir("pairs", pipeline.pairs_key()) / "stats.json")
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
    stats = _json(info.data / "stats.json") if info.data else None
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
    adapter = _json(model / ADAPTER_CONFIG)
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
