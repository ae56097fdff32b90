"""Issue #14's bad-input suite: malformed recipes, datasets and command lines, each one user error.

Every case runs ``prefopt.cli.main`` in-process and must end with exit code 2 and exactly one line on stderr,
``prefopt: error: ...``, naming the file (the recipe or the data) and the field, row or column; no traceback; and
nothing written but logs. A case never reaches a model, a generation or a training run: those are replaced by a
stand-in that raises :class:`WouldRun`, so a validation gap fails the case at once (as "silently accepted") instead
of starting work.

``PREFOPT_BAD_INPUT_TALLY=FILE`` appends each case's outcome (clear / unclear / traceback / accepted) to FILE as
a JSON line: the counts in the README's "Reliability" section come from it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefopt.cli import main

TESTS = Path(__file__).parent
CI = yaml.safe_load((TESTS / "recipes" / "ci.yaml").read_text())
DELETE = object()  # a mutation that removes the key

PAIRS = [
    {"prompt": "1+2", "chosen": "1+2=3. =3", "rejected": "1+2=4. =4"},
    {"prompt": "2*3", "chosen": "2*3=6. =6", "rejected": "2*3=5. =5"},
    {"prompt": "4-1", "chosen": "4-1=3. =3", "rejected": "4-1=2. =2"},
]
KTO = [
    {"prompt": "1+2", "completion": "1+2=3. =3", "label": True},
    {"prompt": "1+2", "completion": "1+2=4. =4", "label": False},
    {"prompt": "2*3", "completion": "2*3=6. =6", "label": True},
]
PROMPTS = [{"id": "a", "prompt": "1+2", "answer": "3"}, {"id": "b", "prompt": "2*3", "answer": "6"}]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


CHAT = [
    {"prompt": [user("1+2")], "chosen": [assistant("=3")], "rejected": [assistant("=4")]},
    {"prompt": [user("2*3")], "chosen": [assistant("=6")], "rejected": [assistant("=5")]},
]


class WouldRun(BaseException):
    """Raised where a case would load a model, generate, judge, build pairs or train: validation let it through."""


@dataclass
class Case:
    id: str
    argv: list[str]  # {recipe}, {data}, {tmp}, {out} are filled in
    recipe: dict | str | None = None  # the recipe mapping (or raw text) written to {recipe}
    data: Any = None  # rows (list of dicts), or raw text / bytes, written to {data}
    suffix: str = ".jsonl"  # the data file's suffix
    files: dict[str, Any] = field(default_factory=dict)  # other files under {tmp}: rows, text or bytes
    names: tuple[str, ...] = ()  # what the error line must name besides the file
    file: str = "{recipe}"  # the file the error line must name ("" for a command-line error)
    setup: Callable[[Path], None] | None = None


def fill(text: str, tmp: Path, suffix: str) -> str:
    for name, value in {
        "recipe": tmp / "recipe.yaml",
        "data": tmp / f"data{suffix}",
        "tmp": tmp,
        "out": tmp / "out",
    }.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def write_data(path: Path, data: Any) -> None:
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in data))
    elif path.suffix == ".json":
        path.write_text(json.dumps(data))
    elif path.suffix == ".csv":
        import pandas as pd

        pd.DataFrame(data).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(data), path)
    else:
        raise ValueError(path)


def mutated(base: dict, changes: dict[str, Any]) -> dict:
    """``base`` with each dotted path set (``name[i]`` indexes a list) or removed (DELETE)."""
    from prefopt.recipe import set_path

    data = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            del node[last]
        else:
            set_path(data, key, copy.deepcopy(value))
    return data


def own_data(path: str = "{data}", **dataset) -> dict:
    """The CI recipe training on a user's dataset."""
    return mutated(CI, {"training.dataset": {"path": path, **dataset}})


LLM = mutated(CI, {"judging": {"judge": "llm", "llm": {"model": "world:strong", "engine": "transformers"}}})
SWEEP = mutated(CI, {"sweep": {"name": "gap", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}}})


def plan(id: str, changes: dict | None = None, *names: str, base: dict = CI, files=None, command="plan") -> Case:
    """A recipe with one thing changed, loaded by ``prefopt plan`` (which loads and validates it, running nothing)
    or by another command (``generate``: the full check, TRL's configs built, before the stage would start)."""
    return Case(id, [command, "{recipe}"], mutated(base, changes or {}), names=names, files=files or {})


def text(id: str, recipe: str, *names: str) -> Case:
    return Case(id, ["plan", "{recipe}"], recipe, names=names)


def train_input(id: str, data: Any, *names: str, suffix=".jsonl", recipe: dict = CI) -> Case:
    """``prefopt train --input FILE`` with a malformed data file."""
    return Case(id, ["train", "{recipe}", "--input", "{data}"], recipe, data, suffix, names=names, file="{data}")


def dataset(id: str, data: Any, *names: str, suffix=".jsonl", **changes) -> Case:
    """``prefopt train`` of a recipe whose training.dataset is a malformed file."""
    recipe = mutated(own_data(), changes)
    return Case(id, ["train", "{recipe}"], recipe, data, suffix, names=names, file="{data}")


def prompts(id: str, data: Any, *names: str, suffix=".jsonl", **source) -> Case:
    """``prefopt generate`` reading a malformed prompt file."""
    recipe = mutated(CI, {"generation.prompts": {"source": "file", "path": "{data}", **source}})
    return Case(id, ["generate", "{recipe}"], recipe, data, suffix, names=names, file="{data}")


def benchmark(id: str, data: Any, *names: str, suffix=".jsonl", command="eval", **bench) -> Case:
    """``prefopt eval`` (or run) of a recipe whose benchmark file is malformed."""
    recipe = mutated(CI, {"evaluation.benchmarks": [{"name": "gsm", "path": "{data}", **bench}]})
    return Case(id, [command, "{recipe}"], recipe, data, suffix, names=names, file="{data}")


def command(id: str, argv: list[str], *names: str, recipe: dict | None = CI, setup=None) -> Case:
    """A malformed command line."""
    return Case(id, argv, recipe, names=names, file="", setup=setup)


def rows(base: list[dict], index: int, **changes) -> list[dict]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            del out[index][key]
        else:
            out[index][key] = value
    return out


G0 = "generation.generators[0]"
CASES = [
    # -- the recipe file itself ---------------------------------------------------------------------------------
    text("yaml_unclosed_bracket", "name: [ci\n", "not valid YAML"),
    text("yaml_tab_indent", "name: ci\ngeneration:\n\tbatch_size: 3\n", "not valid YAML"),
    text("yaml_bad_indent", "name: ci\n  output_dir: x\n y: 1\n", "not valid YAML"),
    text("yaml_unclosed_quote", 'name: "ci\n', "not valid YAML"),
    text("yaml_list", "- name: ci\n", "mapping"),
    text("yaml_scalar", "just words\n", "mapping"),
    text("yaml_empty", "", "name"),
    text("yaml_duplicate_key", "name: ci\nname: other\n", "name", "twice"),
    text("yaml_duplicate_nested_key", yaml.safe_dump(CI) + "pairing: {seed: 1}\n", "pairing", "twice"),
    text("yaml_int_keys", "name: ci\n1: a\nfoo: b\n", "1"),
    text("yaml_null_key", "name: ci\n~: a\n", "None"),
    Case(
        "yaml_not_utf8",
        ["plan", "{recipe}"],
        None,
        setup=lambda t: (t / "recipe.yaml").write_bytes(b"name: \xff\xfe\n"),
    ),
    command("recipe_missing", ["plan", "{tmp}/nope.yaml"], "nope.yaml", "not found", recipe=None),
    command("recipe_is_directory", ["plan", "{tmp}"], "not found", recipe=None),
    # -- unknown keys, with a did-you-mean --------------------------------------------------------------------
    plan("unknown_top_level", {"nmae": "x"}, "nmae", "did you mean 'name'"),
    plan("unknown_generaton", {"generaton": {}}, "generaton", "did you mean 'generation'"),
    plan("unknown_traning", {"traning": {}}, "traning", "did you mean 'training'"),
    plan("unknown_engine_key", {"generation.enigne": "vllm"}, "generation.enigne", "did you mean 'engine'"),
    plan("unknown_generator_key", {f"{G0}.temprature": 0.5}, "temprature", "did you mean 'temperature'"),
    plan("unknown_prompts_key", {"generation.prompts.num_prompt": 3}, "num_prompt", "did you mean 'num_prompts'"),
    plan("unknown_pairing_key", {"pairing.filtr": {}}, "pairing.filtr", "did you mean 'filter'"),
    plan("unknown_filter_key", {"pairing.filter.top_fractoin": 0.5}, "top_fractoin", "did you mean 'top_fraction'"),
    plan("unknown_judging_key", {"judging.agregate": "mean"}, "judging.agregate", "did you mean 'aggregate'"),
    plan("unknown_training_key", {"training.metod": "dpo"}, "training.metod", "did you mean 'method'"),
    plan("unknown_trl_key", {"training.trl.learnig_rate": 0.1}, "learnig_rate", "did you mean 'learning_rate'"),
    plan("unknown_trl_key_far", {"training.trl.zzz_qqq": 1}, "training.trl.zzz_qqq", "unknown"),
    plan("unknown_model_args_key", {"training.model_args.lora_rr": 8}, "lora_rr", "did you mean 'lora_r'"),
    plan("unknown_eval_key", {"evaluation.num_problem": 3}, "num_problem", "did you mean 'num_problems'"),
    plan("unknown_world_model_key", {"world.models.strong.hiden_size": 64}, "hiden_size", "hidden_size"),
    plan("unknown_difficulty_key", {"world.in_domain.max_op": 2}, "max_op", "did you mean 'max_ops'"),
    plan("unknown_dataset_key", {"training.dataset.pth": "x"}, "pth", "did you mean 'path'", base=own_data("x.jsonl")),
    plan("unknown_sweep_key", {"sweep.paramters": {}}, "paramters", "did you mean 'parameters'", base=SWEEP),
    plan("unknown_llm_key", {"judging.llm.rubrik": "x"}, "rubrik", "did you mean 'rubric'", base=LLM),
    plan(
        "unknown_proxy_trl_key",
        {"pairing.margin_bayes": {"proxy": {"model": "world:weak", "trl": {"bta": 1}}}},
        "proxy.trl.bta",
        "did you mean 'beta'",
    ),
    plan("output_dir_in_trl", {"training.trl.output_dir": "x"}, "training.trl.output_dir"),
    plan("model_name_in_model_args", {"training.model_args.model_name_or_path": "x"}, "model_name_or_path"),
    # -- wrong types, at every depth --------------------------------------------------------------------------
    plan("name_int", {"name": 3}, "name", "expected a string"),
    plan("name_list", {"name": ["a"]}, "name"),
    plan("output_dir_int", {"output_dir": 5}, "output_dir"),
    plan("generation_list", {"generation": []}, "generation", "mapping"),
    plan("generation_string", {"generation": "fast"}, "generation", "mapping"),
    plan("generators_mapping", {"generation.generators": {"strong": {}}}, "generation.generators", "list"),
    plan("generator_string", {G0: "strong"}, "generation.generators[0]", "mapping"),
    plan("generator_n_string", {f"{G0}.n": "two"}, "generators[0].n", "integer"),
    plan("generator_n_float", {f"{G0}.n": 2.5}, "generators[0].n", "integer"),
    plan("generator_n_bool", {f"{G0}.n": True}, "generators[0].n", "integer"),
    plan("temperature_word", {f"{G0}.temperature": "hot"}, "temperature", "number"),
    plan("temperature_list", {f"{G0}.temperature": [1]}, "temperature", "number"),
    plan("top_p_null", {f"{G0}.top_p": None}, "top_p"),
    plan("max_new_tokens_string", {f"{G0}.max_new_tokens": "40"}, "max_new_tokens", "integer"),
    plan("stop_string", {f"{G0}.stop": "\n"}, "stop", "list"),
    plan("stop_list_of_ints", {f"{G0}.stop": [1]}, "stop[0]", "string"),
    plan("logprobs_string", {f"{G0}.logprobs": "yes"}, "logprobs", "true or false"),
    plan("engine_options_list", {"generation.engine_options": [1]}, "engine_options", "mapping"),
    plan("batch_size_float", {"generation.batch_size": 1.5}, "generation.batch_size", "integer"),
    plan("num_prompts_string", {"generation.prompts.num_prompts": "24"}, "num_prompts", "integer"),
    plan("prompt_source_int", {"generation.prompts.source": 7}, "prompts.source"),
    plan("prompt_split_unknown", {"generation.prompts.split": "test"}, "prompts.split", "in_domain"),
    plan("weights_list", {"judging.weights": [1]}, "judging.weights", "mapping"),
    plan(
        "weight_word",
        {"judging.aggregate": "weighted", "judging.weights.correctness": "high"},
        "judging.weights.correctness",
        "number",
    ),
    plan("generator_pairs_string", {"pairing.generator_pairs": "strong>weak"}, "generator_pairs", "list"),
    plan("generator_pair_list", {"pairing.generator_pairs[0]": ["strong", "weak"]}, "generator_pairs[0]", "mapping"),
    plan(
        "generator_pair_missing_rejected", {"pairing.generator_pairs[0]": {"chosen": "strong"}}, "rejected", "missing"
    ),
    plan("top_fraction_word", {"pairing.filter.top_fraction": "half"}, "top_fraction", "number"),
    plan("drop_ties_string", {"pairing.drop_ties": "no"}, "drop_ties", "true or false"),
    plan("pairing_seed_string", {"pairing.seed": "0"}, "pairing.seed", "integer"),
    plan("method_int", {"training.method": 3}, "training.method"),
    plan("trl_list", {"training.trl": [1]}, "training.trl", "mapping"),
    plan("trl_beta_word", {"training.trl.beta": "big"}, "training.trl.beta", "number"),
    plan("trl_max_steps_float", {"training.trl.max_steps": 2.5}, "max_steps", "integer"),
    plan("trl_batch_string", {"training.trl.per_device_train_batch_size": "4"}, "per_device_train_batch_size"),
    plan("trl_report_to_int", {"training.trl.report_to": 3}, "report_to", command="generate"),
    plan("trl_report_to_unknown", {"training.trl.report_to": "mlfloww"}, "report_to", "mlfloww", command="generate"),
    plan("model_args_string", {"training.model_args": "bf16"}, "model_args", "mapping"),
    plan("model_args_dtype_unknown", {"training.model_args.dtype": "float12"}, "dtype", "float12", command="generate"),
    plan(
        "model_args_attn_unknown",
        {"training.model_args.attn_implementation": "spda"},
        "attn_implementation",
        "sdpa",
        command="generate",
    ),
    plan("model_args_lora_r_string", {"training.model_args.lora_r": "8"}, "lora_r", "integer", command="generate"),
    plan("eval_num_problems_string", {"evaluation.num_problems": "16"}, "num_problems", "integer"),
    plan("eval_benchmarks_mapping", {"evaluation.benchmarks": {}}, "evaluation.benchmarks", "list"),
    plan("eval_tiny_world_string", {"evaluation.tiny_world": "yes"}, "tiny_world", "true or false"),
    plan("world_models_list", {"world.models": []}, "world.models", "mapping"),
    plan("world_model_int", {"world.models.strong": 5}, "world.models.strong", "mapping"),
    plan("world_layers_string", {"world.models.strong.num_layers": "1"}, "num_layers", "integer"),
    plan("world_min_ops_float", {"world.in_domain.min_ops": 1.5}, "min_ops", "integer"),
    plan("world_task_unknown", {"world.models.strong.task": "writer"}, "task", "solver"),
    plan("dataset_int", {"training.dataset": 5}, "training.dataset", "mapping"),
    plan("dataset_columns_list", {"training.dataset.columns": ["a"]}, "columns", "mapping", base=own_data("x.jsonl")),
    plan("sweep_parameters_list", {"sweep.parameters": ["a"]}, "sweep.parameters", "mapping", base=SWEEP),
    # -- values out of range: zero, negative, NaN, infinity ---------------------------------------------------
    plan("n_zero", {f"{G0}.n": 0}, "generators[0].n", ">= 1"),
    plan("n_negative", {f"{G0}.n": -1}, "generators[0].n"),
    plan("temperature_negative", {f"{G0}.temperature": -0.5}, "temperature"),
    plan("temperature_nan", {f"{G0}.temperature": float("nan")}, "temperature", "nan"),
    plan("temperature_inf", {f"{G0}.temperature": float("inf")}, "temperature", "inf"),
    plan("temperature_nan_string", {f"{G0}.temperature": "nan"}, "temperature", "nan"),
    plan("top_p_zero", {f"{G0}.top_p": 0}, "top_p"),
    plan("top_p_above_one", {f"{G0}.top_p": 1.5}, "top_p"),
    plan("greedy_with_n", {f"{G0}.temperature": 0}, "generators[0]", "n: 1"),
    plan("max_new_tokens_zero", {f"{G0}.max_new_tokens": 0}, "max_new_tokens"),
    plan("max_new_tokens_negative", {f"{G0}.max_new_tokens": -5}, "max_new_tokens"),
    plan("generation_batch_zero", {"generation.batch_size": 0}, "generation", "batch_size"),
    plan("shard_size_negative", {"generation.shard_size": -1}, "generation", "shard_size"),
    plan("data_parallel_zero", {"generation.data_parallel_size": 0}, "generation", "data_parallel_size"),
    plan("num_prompts_zero", {"generation.prompts.num_prompts": 0}, "num_prompts"),
    plan("judge_shard_size_zero", {"judging.shard_size": 0}, "judging.shard_size"),
    plan("top_fraction_zero", {"pairing.filter.top_fraction": 0}, "top_fraction"),
    plan("top_fraction_above_one", {"pairing.filter.top_fraction": 1.5}, "top_fraction"),
    plan("top_fraction_nan", {"pairing.filter.top_fraction": float("nan")}, "top_fraction"),
    plan("min_gap_nan", {"pairing.filter.min_gap": float("nan")}, "min_gap", "nan"),
    plan("min_gap_inf", {"pairing.filter.min_gap": float("inf")}, "min_gap", "inf"),
    plan("max_samples_zero", {"pairing.max_samples": 0}, "max_samples"),
    plan("kto_desirable_nan", {"pairing.kto.desirable_min": float("nan")}, "desirable_min"),
    plan("kto_thresholds_crossed", {"pairing.kto.undesirable_max": 0.9}, "undesirable_max"),
    plan("sweet_spot_k_nan", {"pairing.sweet_spot.rejected_k": float("nan")}, "rejected_k"),
    plan(
        "margin_bayes_fraction_zero",
        {"pairing.margin_bayes": {"top_fraction": 0, "proxy": {"model": "world:weak"}}},
        "margin_bayes.top_fraction",
    ),
    plan(
        "margin_bayes_seed_pairs_zero",
        {"pairing.margin_bayes": {"proxy": {"model": "world:weak", "seed_pairs": 0}}},
        "proxy",
        "seed_pairs",
    ),
    plan("reward_augmented_decimals", {"pairing.reward_augmented": {"decimals": -1}}, "reward_augmented", "decimals"),
    plan("reward_augmented_range", {"pairing.reward_augmented": {"target_range": [10, 1]}}, "target_range"),
    plan("reward_augmented_template", {"pairing.reward_augmented": {"template": "score {score}"}}, "template"),
    plan("world_hidden_size", {"world.models.strong.hidden_size": 48}, "hidden_size", "32"),
    plan("world_layers_zero", {"world.models.strong.num_layers": 0}, "num_layers"),
    plan("world_lr_negative", {"world.models.strong.learning_rate": -1.0}, "learning_rate"),
    plan("world_lr_nan", {"world.models.strong.learning_rate": float("nan")}, "learning_rate"),
    plan("world_min_ops_zero", {"world.in_domain.min_ops": 0}, "in_domain", "min_ops"),
    plan("world_ops_crossed", {"world.out_of_domain.min_ops": 4}, "out_of_domain", "min_ops"),
    plan("world_operand_negative", {"world.in_domain.min_operand": -1}, "in_domain", "min_operand"),
    plan(
        "trl_batch_zero",
        {"training.trl.per_device_train_batch_size": 0},
        "per_device_train_batch_size",
        command="generate",
    ),
    plan("trl_lr_negative", {"training.trl.learning_rate": -1.0}, "learning_rate", command="generate"),
    plan("trl_beta_nan", {"training.trl.beta": float("nan")}, "beta", command="generate"),
    plan(
        "model_args_lora_dropout",
        {"training.model_args": {"use_peft": True, "lora_dropout": 1.5}},
        "lora_dropout",
        command="generate",
    ),
    plan("eval_num_problems_zero", {"evaluation.num_problems": 0}, "num_problems"),
    plan("eval_batch_size_zero", {"evaluation.batch_size": 0}, "evaluation.batch_size"),
    plan("eval_max_new_tokens_zero", {"evaluation.max_new_tokens": 0}, "evaluation.max_new_tokens"),
    plan("benchmark_limit_zero", {"evaluation.benchmarks": [{"name": "b", "path": "b.jsonl", "limit": 0}]}, "limit"),
    plan(
        "benchmark_template",
        {"evaluation.benchmarks": [{"name": "b", "path": "b.jsonl", "prompt_template": "Q"}]},
        "prompt_template",
        files={"b.jsonl": PROMPTS},
    ),
    plan("llm_samples_zero", {"judging.llm.samples": 0}, "judging.llm", "samples", base=LLM),
    plan("llm_greedy_samples", {"judging.llm.samples": 3}, "judging.llm", "temperature", base=LLM),
    plan(
        "pairwise_max_pairs_zero",
        {"judging.pairwise": {"generators": ["strong", "weak"], "max_pairs": 0}},
        "pairwise",
        "max_pairs",
        base=LLM,
    ),
    # -- unsafe names --------------------------------------------------------------------------------------
    plan(
        "generator_name_path",
        {f"{G0}.name": "../evil", "pairing.generator_pairs[0].chosen": "../evil"},
        "generators[0].name",
        "safe name",
    ),
    plan("generator_name_space", {f"{G0}.name": "a b"}, "generators[0].name", "safe name"),
    plan("generator_name_dot", {f"{G0}.name": ".hidden"}, "generators[0].name", "safe name"),
    plan("generator_name_empty", {f"{G0}.name": ""}, "generators[0].name", "safe name"),
    plan("sweep_name_path", {"sweep.name": "a/b"}, "sweep.name", "safe name", base=SWEEP),
    plan("world_model_name_path", {"world.models": {"a/b": {}}, f"{G0}.model": "world:a/b"}, "world.models"),
    # -- empty lists ---------------------------------------------------------------------------------------
    plan("generators_empty", {"generation.generators": []}, "generation", "generators"),
    plan("generator_pairs_empty", {"pairing.generator_pairs": []}, "generator_pairs"),
    plan("nothing_to_evaluate", {"evaluation.tiny_world": False}, "evaluation", "benchmarks"),
    plan("sweep_values_empty", {"sweep.parameters": {"pairing.seed": []}}, "sweep.parameters", base=SWEEP),
    plan("pairwise_generators_empty", {"judging.pairwise": {"generators": []}}, "pairwise.generators", base=LLM),
    plan(
        "rubric_dimensions_empty",
        {"judging.llm.rubric": "{tmp}/r.yaml"},
        "dimensions",
        base=LLM,
        files={"r.yaml": "name: r\ndimensions: []\npointwise_template: '{rubric}'\n"},
    ),
    # -- unknown registry names --------------------------------------------------------------------------
    plan("engine_unknown", {"generation.engine": "vlm"}, "generation.engine", "did you mean 'vllm'"),
    plan("judge_unknown", {"judging.judge": "llm_judge"}, "judging.judge", "llm_judge", "reward_model"),
    plan("strategy_unknown", {"pairing.strategy": "max_minn"}, "pairing.strategy", "did you mean 'max_min'"),
    plan("pref_loss_unknown", {"training.trl.pref_loss": "offst"}, "pref_loss", "offset", command="generate"),
    plan("gap_transform_unknown", {"training.trl.gap_transform": "lgo"}, "gap_transform", command="generate"),
    plan("method_unknown", {"training.method": "ppo"}, "training.method", "dpo"),
    plan("eval_engine_server", {"evaluation.engine": "server"}, "evaluation.engine", "transformers"),
    plan("llm_engine_unknown", {"judging.llm.engine": "vlm"}, "judging.llm.engine", "vllm", base=LLM),
    plan("reference_judge_not_verifier", {"judging.reference_judge": "llm"}, "reference_judge", base=LLM),
    plan("rubric_preset_unknown", {"judging.llm.rubric": "reasoning4"}, "judging.llm.rubric", "reasoning5", base=LLM),
    plan("fusion_unknown", {"pairing.margin_bayes": {"fusion": "max", "proxy": {"model": "world:weak"}}}, "fusion"),
    # -- cross-field checks ------------------------------------------------------------------------------
    plan(
        "filter_dimension_unknown",
        {"pairing.filter.dimension": "helpfulness"},
        "pairing.filter.dimension",
        "helpfulness",
        "correctness",
    ),
    plan(
        "filter_dimension_misspelt",
        {"pairing.filter.dimension": "corectness"},
        "pairing.filter.dimension",
        "did you mean 'correctness'",
    ),
    plan(
        "filter_dimension_not_in_rubric",
        {"pairing.filter.dimension": "correctness", "judging.llm.rubric": "reasoning3"},
        "pairing.filter.dimension",
        base=LLM,
    ),
    plan(
        "margin_bayes_dimension_unknown",
        {"pairing.margin_bayes": {"dimension": "style", "proxy": {"model": "world:weak"}}},
        "pairing.margin_bayes.dimension",
        "style",
    ),
    plan("aggregate_unknown", {"judging.aggregate": "medain"}, "judging.aggregate", "did you mean 'mean'"),
    plan("aggregate_weighted_no_weights", {"judging.aggregate": "weighted"}, "judging.weights"),
    plan(
        "weights_unknown_dimension",
        {"judging.aggregate": "weighted", "judging.weights": {"style": 1.0}},
        "judging.weights",
        "style",
    ),
    plan(
        "weights_negative",
        {"judging.aggregate": "weighted", "judging.weights": {"correctness": -1.0}},
        "judging.weights",
    ),
    plan(
        "reward_model_dimension_filter",
        {
            "judging": {"judge": "reward_model", "reward_model": {"model": "world:weak"}},
            "pairing.filter.dimension": "correctness",
        },
        "pairing.filter.dimension",
    ),
    plan(
        "generator_pair_unknown",
        {"pairing.generator_pairs[0].rejected": "medium"},
        "generator_pairs",
        "medium",
    ),
    plan("generator_pair_same", {"pairing.generator_pairs[0].rejected": "strong"}, "generator_pairs[0]"),
    plan(
        "generator_pair_repeated",
        {"pairing.generator_pairs": [{"chosen": "strong", "rejected": "weak"}] * 2},
        "generator_pairs",
    ),
    plan(
        "pool_generator_unknown",
        {"pairing.strategy": "max_min", "pairing.generators": ["strong", "meduim"]},
        "pairing.generators",
        "meduim",
    ),
    plan(
        "pairwise_generator_unknown",
        {"judging.pairwise": {"generators": ["strong", "mid"]}},
        "judging.pairwise",
        "mid",
        base=LLM,
    ),
    plan("pairwise_without_llm", {"judging.pairwise": {"generators": ["strong", "weak"]}}, "judging", "pairwise"),
    plan(
        "kto_strategy_dpo_trainer", {"pairing.strategy": "kto_unpaired", "pairing.filter": {}}, "training.method", "kto"
    ),
    plan(
        "kto_strategy_with_filter", {"pairing.strategy": "kto_unpaired", "training.method": "kto"}, "pairing", "filter"
    ),
    plan(
        "kto_field_on_dpo", {"training.trl.desirable_weight": 2.0}, "training.trl.desirable_weight", command="generate"
    ),
    plan(
        "dpo_field_on_kto",
        {"training.method": "kto", "training.trl.pref_loss": "offset"},
        "training.trl.pref_loss",
        command="generate",
    ),
    plan(
        "gap_column_unknown_dimension",
        {"training.gap_column": "margins.helpfulness"},
        "training.gap_column",
        "helpfulness",
        command="train",
    ),
    plan(
        "gap_column_not_a_gap",
        {"training.gap_column": "chosen_score"},
        "training.gap_column",
        "margin",
        command="train",
    ),
    plan(
        "tensor_parallel_on_cpu",
        {"generation.engine": "vllm", "generation.engine_options.tensor_parallel_size": 2},
        "tensor_parallel_size",
        "GPU",
        command="generate",
    ),
    plan(
        "tensor_parallel_zero",
        {"generation.engine": "vllm", "generation.engine_options.tensor_parallel_size": 0},
        "tensor_parallel_size",
    ),
    plan(
        "tensor_parallel_string",
        {"generation.engine": "vllm", "generation.engine_options.tensor_parallel_size": "2"},
        "tensor_parallel_size",
        "integer",
    ),
    plan(
        "generator_tensor_parallel_on_cpu",
        {"generation.engine": "vllm", f"{G0}.engine_options.tensor_parallel_size": 4},
        "tensor_parallel_size",
        command="generate",
    ),
    plan(
        "judge_tensor_parallel_on_cpu",
        {"judging.llm.engine": "vllm", "judging.llm.engine_options.tensor_parallel_size": 2},
        "judging.llm.engine_options.tensor_parallel_size",
        base=LLM,
        command="judge",
    ),
    plan("world_model_undefined", {f"{G0}.model": "world:strongest"}, "world:strongest", "world.models"),
    plan("policy_undefined", {"training.model": "world:polciy"}, "world:polciy", "policy"),
    plan("judge_model_undefined", {"judging.llm.model": "world:judge"}, "world:judge", base=LLM),
    plan("proxy_model_undefined", {"pairing.margin_bayes": {"proxy": {"model": "world:proxy"}}}, "world:proxy"),
    plan("llm_judge_without_section", {"judging.judge": "llm"}, "judging", "judging.llm"),
    plan(
        "generator_names_repeated",
        {
            "generation.generators[1].name": "strong",
            "pairing.generator_pairs": [{"chosen": "strong", "rejected": "strong2"}],
        },
        "generation",
        "unique",
    ),
    plan(
        "eval_names_repeated",
        {"evaluation.benchmarks": [{"name": "in_domain", "path": "b.jsonl"}]},
        "evaluation",
        "unique",
        files={"b.jsonl": PROMPTS},
    ),
    plan(
        "sweep_zip_unequal",
        {"sweep.mode": "zip", "sweep.parameters.pairing.seed": [1, 2, 3]},
        "sweep",
        "zip",
        base=SWEEP,
    ),
    plan("sweep_x_unknown", {"sweep.x": "pairing.seed"}, "sweep.x", base=SWEEP),
    plan("sweep_labels_count", {"sweep.labels": ["a"]}, "sweep.labels", base=SWEEP),
    plan(
        "local_model_missing",
        {"training.model": "/nonexistent/policy"},
        "training.model",
        "/nonexistent/policy",
        command="train",
    ),
    plan(
        "generator_model_missing",
        {f"{G0}.model": "./models/strong"},
        "generators[0].model",
        "./models/strong",
        command="generate",
    ),
    # -- missing referenced files ------------------------------------------------------------------------
    plan(
        "rubric_file_missing",
        {"judging.llm.rubric": "{tmp}/rubric.yaml"},
        "judging.llm.rubric",
        "rubric.yaml",
        base=LLM,
    ),
    plan(
        "rubric_file_not_mapping",
        {"judging.llm.rubric": "{tmp}/r.yaml"},
        "judging.llm.rubric",
        base=LLM,
        files={"r.yaml": "- a\n- b\n"},
    ),
    plan(
        "rubric_file_bad_yaml",
        {"judging.llm.rubric": "{tmp}/r.yaml"},
        "judging.llm.rubric",
        base=LLM,
        files={"r.yaml": "name: [r\n"},
    ),
    plan("chat_template_missing", {"training.chat_template": "{tmp}/t.jinja"}, "training.chat_template", "t.jinja"),
    plan("chat_template_not_jinja", {"training.chat_template": "hello"}, "training.chat_template"),
    plan(
        "chat_template_broken",
        {"training.chat_template": "{{ messages"},
        "training.chat_template",
        "compile",
        command="generate",
    ),
    plan(
        "prompt_file_missing",
        {"generation.prompts": {"source": "file", "path": "{tmp}/p.jsonl"}},
        "generation.prompts.path",
        "p.jsonl",
        command="generate",
    ),
    plan("prompt_file_no_path", {"generation.prompts.source": "file"}, "generation.prompts", "path"),
    plan(
        "prompt_file_unsupported",
        {"generation.prompts": {"source": "file", "path": "{tmp}/p.txt"}},
        "generation.prompts.path",
        "p.txt",
        files={"p.txt": "1+2\n"},
        command="generate",
    ),
    plan(
        "benchmark_file_missing",
        {"evaluation.benchmarks": [{"name": "gsm", "path": "{tmp}/gsm.jsonl"}]},
        "evaluation.benchmarks[0].path",
        "gsm.jsonl",
        command="eval",
    ),
    plan(
        "accelerate_config_missing",
        {"training.accelerate_config": "{tmp}/acc.yaml"},
        "training.accelerate_config",
        "acc.yaml",
        command="train",
    ),
    plan(
        "proxy_accelerate_config_missing",
        {"pairing.margin_bayes": {"proxy": {"model": "world:weak", "accelerate_config": "nope.yaml"}}},
        "proxy.accelerate_config",
        "nope.yaml",
        command="pairs",
    ),
    plan(
        "dataset_file_missing",
        {},
        "training.dataset.path",
        "pairs.jsonl",
        base=own_data("{tmp}/pairs.jsonl"),
        command="train",
    ),
    plan("dataset_path_empty", {}, "training.dataset.path", base=own_data("")),
    plan(
        "dataset_columns_clash",
        {"training.dataset.columns": {"a": "prompt", "b": "prompt"}},
        "columns",
        base=own_data("x.jsonl"),
    ),
    # -- secrets in a recipe --------------------------------------------------------------------------------
    plan(
        "secret_api_key",
        {"generation.engine_options.api_key": "sk-123"},
        "generation.engine_options.api_key",
        "environment variable",
    ),
    plan("secret_generator_token", {f"{G0}.engine_options.hf_token": "hf_abc"}, "hf_token", "secret"),
    plan("secret_hub_token", {"training.trl.hub_token": "hf_abc"}, "training.trl.hub_token", "secret"),
    plan(
        "secret_judge_key",
        {"judging.llm.engine_options.api_key": "sk-1"},
        "judging.llm.engine_options.api_key",
        base=LLM,
    ),
    plan("secret_password", {"password": "hunter2"}, "password", "secret"),
    # -- training data: train --input FILE ---------------------------------------------------------------------
    train_input(
        "jsonl_bad_line", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", chosen}\n', "line 2"
    ),
    train_input("jsonl_truncated", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "cho', "line 2"),
    train_input("jsonl_not_objects", "[1, 2]\n[3, 4]\n", "line 1"),
    train_input("jsonl_empty_file", "", "no rows"),
    train_input(
        "missing_rejected",
        [{k: v for k, v in r.items() if k != "rejected"} for r in PAIRS],
        "column rejected",
        "missing",
    ),
    train_input(
        "misnamed_columns",
        [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in PAIRS],
        "column chosen",
        "missing",
        "columns",
    ),
    train_input("chosen_null", rows(PAIRS, 1, chosen=None), "row 1", "column chosen", "null"),
    train_input("prompt_null", rows(PAIRS, 2, prompt=None), "row 2", "column prompt", "null"),
    train_input("prompt_empty", rows(PAIRS, 0, prompt="  "), "row 0", "column prompt", "empty"),
    train_input("prompt_int_all", [{**r, "prompt": 3} for r in PAIRS], "row 0", "column prompt", "int"),
    train_input("prompt_int_one", rows(PAIRS, 1, prompt=3), "column prompt"),
    train_input("chosen_object", [{**r, "chosen": {"text": r["chosen"]}} for r in PAIRS], "row 0", "column chosen"),
    train_input("chosen_list_of_strings", [{**r, "chosen": [r["chosen"]]} for r in PAIRS], "row 0", "column chosen"),
    train_input("all_identical", [{**r, "rejected": r["chosen"]} for r in PAIRS], "no rows", "3 dropped"),
    train_input("messages_empty", rows(CHAT, 1, chosen=[]), "row 1", "column chosen", "empty"),
    train_input(
        "messages_role_order", rows(CHAT, 0, prompt=[assistant("hi"), user("1+2")]), "row 0", "column prompt", "order"
    ),
    train_input(
        "messages_role_unknown",
        rows(CHAT, 1, chosen=[{"role": "bot", "content": "=6"}]),
        "row 1",
        "column chosen",
        "bot",
    ),
    train_input(
        "messages_content_int",
        [{**r, "chosen": [{"role": "assistant", "content": 5}]} for r in CHAT],
        "column chosen",
        "content",
    ),
    train_input(
        "messages_content_null",
        rows(CHAT, 0, chosen=[{"role": "assistant", "content": None}]),
        "row 0",
        "column chosen",
        "null content",
    ),
    train_input(
        "messages_no_role", [{**r, "chosen": [{"content": "x"}]} for r in CHAT], "row 0", "column chosen", "role"
    ),
    train_input(
        "messages_prompt_ends_assistant",
        rows(CHAT, 0, prompt=[user("1+2"), assistant("3")]),
        "row 0",
        "column prompt",
        "assistant",
    ),
    train_input("text_mixed_with_messages", [{**r, "prompt": "1+2"} for r in CHAT], "row 0", "column prompt", "text"),
    train_input("system_with_messages", [{**r, "system": "be brief"} for r in CHAT], "row 0", "column system"),
    train_input("system_not_text", [{**r, "system": 3} for r in PAIRS], "row 0", "column system"),
    train_input(
        "implicit_prompt_no_shared_start",
        [{"chosen": "a=1", "rejected": "b=2"}, {"chosen": "c=3", "rejected": "d=4"}],
        "row 0",
        "column chosen",
        "share no beginning",
    ),
    train_input("pairs_and_kto_columns", [{**r, "completion": "x", "label": True} for r in PAIRS], "one format"),
    train_input("kto_for_dpo", KTO, "KTO", "training.method"),
    train_input(
        "kto_label_string",
        [{**r, "label": "yes"} for r in KTO],
        "row 0",
        "column label",
        recipe=mutated(CI, {"training.method": "kto"}),
    ),
    train_input(
        "kto_one_label",
        [{**r, "label": True} for r in KTO],
        "column label",
        recipe=mutated(CI, {"training.method": "kto"}),
    ),
    train_input(
        "margin_string",
        [{**r, "margin": "big"} for r in PAIRS],
        "column margin",
        recipe=mutated(CI, {"training.trl.pref_loss": "offset"}),
    ),
    train_input(
        "margin_missing_for_gap_loss",
        PAIRS,
        "column margin",
        "missing",
        recipe=mutated(CI, {"training.trl.pref_loss": "offset"}),
    ),
    train_input("margin_null", rows([{**r, "margin": 1.0} for r in PAIRS], 1, margin=None), "row 1", "column margin"),
    train_input("json_invalid", '[{"prompt": "a", "chosen": "b", "rejected": "c"},', "not valid JSON", suffix=".json"),
    train_input("json_object_not_list", '{"prompt": "a", "chosen": "b"}', "column rejected", suffix=".json"),
    train_input("json_chosen_null", rows(PAIRS, 2, chosen=None), "row 2", "column chosen", suffix=".json"),
    train_input(
        "json_prompt_list_of_ints", [{**r, "prompt": [1, 2]} for r in PAIRS], "row 0", "column prompt", suffix=".json"
    ),
    train_input(
        "csv_missing_column",
        [{k: v for k, v in r.items() if k != "chosen"} for r in PAIRS],
        "column chosen",
        suffix=".csv",
    ),
    train_input("csv_empty_prompt", rows(PAIRS, 1, prompt=""), "row 1", "column prompt", suffix=".csv"),
    train_input("csv_ragged", "prompt,chosen,rejected\na,b,c\nd,e\nf,g,h,i,j\n", "line", suffix=".csv"),
    train_input("csv_header_only", "prompt,chosen,rejected\n", "no rows", suffix=".csv"),
    train_input(
        "parquet_chosen_int",
        [{**r, "chosen": i} for i, r in enumerate(PAIRS)],
        "row 0",
        "column chosen",
        suffix=".parquet",
    ),
    train_input("parquet_chosen_null", rows(PAIRS, 1, chosen=None), "row 1", "column chosen", suffix=".parquet"),
    train_input(
        "parquet_margin_nan",
        [{**r, "margin": float("nan")} for r in PAIRS],
        "row 0",
        "column margin",
        suffix=".parquet",
    ),
    train_input("parquet_corrupt", b"PAR1 this is not parquet", "could not read", suffix=".parquet"),
    train_input(
        "parquet_messages_content_int",
        [{**r, "chosen": [{"role": "assistant", "content": 5}]} for r in CHAT],
        "row 0",
        "column chosen",
        suffix=".parquet",
    ),
    train_input("arrow_corrupt", b"not arrow at all", "could not read", suffix=".arrow"),
    train_input("unsupported_suffix", "prompt\tchosen\n", "unsupported", suffix=".tsv"),
    # -- training data: the recipe's training.dataset -----------------------------------------------------------
    dataset("dataset_bad_line", '{"prompt": "a", "chosen": "b", "rejected": "c"}\nnot json\n', "line 2"),
    dataset(
        "dataset_rename_missing", PAIRS, "columns", "question", **{"training.dataset.columns": {"question": "prompt"}}
    ),
    dataset(
        "dataset_rename_clash",
        [{**r, "question": "q"} for r in PAIRS],
        "columns",
        "prompt",
        **{"training.dataset.columns": {"question": "prompt"}},
    ),
    dataset("dataset_split_of_file", PAIRS, "split", **{"training.dataset.split": "test"}),
    dataset("dataset_config_of_file", PAIRS, "config", **{"training.dataset.config": "main"}),
    dataset("dataset_null_rejected", rows(PAIRS, 2, rejected=None), "row 2", "column rejected"),
    dataset(
        "dataset_kto_all_desirable", [{**r, "label": True} for r in KTO], "column label", **{"training.method": "kto"}
    ),
    dataset(
        "dataset_score_string",
        [{**r, "score": "high"} for r in KTO],
        "column score",
        **{"training.method": "kto", "training.trl.score_weighting": True},
    ),
    dataset("dataset_parquet_prompt_null", rows(PAIRS, 0, prompt=None), "row 0", "column prompt", suffix=".parquet"),
    dataset(
        "dataset_csv_missing_rejected",
        [{k: v for k, v in r.items() if k != "rejected"} for r in PAIRS],
        "column rejected",
        suffix=".csv",
    ),
    # -- prompt files (generate) -------------------------------------------------------------------------------
    prompts("prompts_missing_column", [{"question": r["prompt"]} for r in PROMPTS], "prompt", "column"),
    prompts("prompts_null", rows(PROMPTS, 1, prompt=None), "row 1", "prompt"),
    prompts("prompts_empty", rows(PROMPTS, 0, prompt=""), "row 0", "prompt"),
    prompts("prompts_int", [{**r, "prompt": 7} for r in PROMPTS], "row 0", "prompt"),
    prompts("prompts_bad_line", '{"prompt": "1+2"}\n{prompt: 3}\n', "line 2"),
    prompts("prompts_duplicate_ids", [{**r, "id": "a"} for r in PROMPTS], "id"),
    prompts("prompts_id_object", [{**r, "id": {"n": i}} for i, r in enumerate(PROMPTS)], "row 0", "id"),
    prompts("prompts_reference_missing", PROMPTS, "reference", reference_field="gold"),
    prompts(
        "prompts_reference_object",
        [{**r, "answer": {"v": 3}} for r in PROMPTS],
        "row 0",
        "answer",
        reference_field="answer",
    ),
    prompts(
        "prompts_reference_list", [{**r, "answer": [3]} for r in PROMPTS], "row 0", "answer", reference_field="answer"
    ),
    prompts("prompts_no_rows", "", "no rows"),
    prompts("prompts_parquet_null", rows(PROMPTS, 1, prompt=None), "row 1", "prompt", suffix=".parquet"),
    prompts("prompts_json_invalid", "[{", "not valid JSON", suffix=".json"),
    # -- benchmark files (eval, run) ------------------------------------------------------------------------
    benchmark("benchmark_missing_answer", [{"question": r["prompt"]} for r in PROMPTS], "answer", "column"),
    benchmark(
        "benchmark_null_question",
        [{"question": None, "answer": "3"}, {"question": "1+1", "answer": "2"}],
        "row 0",
        "question",
    ),
    benchmark("benchmark_empty_answer", [{"question": "1+2", "answer": ""}], "row 0", "answer"),
    benchmark("benchmark_answer_object", [{"question": "1+2", "answer": {"v": 3}}], "row 0", "answer"),
    benchmark("benchmark_bad_line", '{"question": "1+2", "answer": "3"}\n{oops\n', "line 2"),
    benchmark("benchmark_before_run", [{"question": "1+2"}], "answer", command="run"),
    # -- command lines -------------------------------------------------------------------------------------
    command("set_without_equals", ["plan", "{recipe}", "--set", "generation.batch_size"], "--set", "key=value"),
    command("set_empty_key", ["plan", "{recipe}", "--set", "=3"], "--set"),
    command(
        "set_unknown_field",
        ["plan", "{recipe}", "--set", "generation.enigne=vllm"],
        "generation.enigne",
        "did you mean 'engine'",
    ),
    command(
        "set_index_out_of_range",
        ["plan", "{recipe}", "--set", "generation.generators[5].n=2"],
        "--set",
        "generators[5]",
    ),
    command("set_bad_yaml_value", ["plan", "{recipe}", "--set", "generation.generators[0].stop=[a"], "--set", "stop"),
    command("set_into_scalar", ["plan", "{recipe}", "--set", "name.x=1"], "--set", "name"),
    command("set_bad_segment", ["plan", "{recipe}", "--set", "generation..n=1"], "--set"),
    command(
        "set_wrong_type", ["plan", "{recipe}", "--set", "generation.generators[0].n=two"], "generators[0].n", "integer"
    ),
    command("set_secret", ["plan", "{recipe}", "--set", "training.trl.hub_token=hf_x"], "hub_token"),
    command("train_input_missing", ["train", "{recipe}", "--input", "{tmp}/pairs.jsonl"], "pairs.jsonl"),
    command("judge_input_missing", ["judge", "{recipe}", "--input", "{tmp}/candidates"], "candidates"),
    command(
        "judge_input_not_a_dataset",
        ["judge", "{recipe}", "--input", "{tmp}/cand"],
        "cand",
        setup=lambda t: ((t / "cand").mkdir(), (t / "cand" / "x.txt").write_text("x")),
    ),
    command("pairs_input_missing", ["pairs", "{recipe}", "--input", "{tmp}/judgments"], "judgments"),
    command("plan_input_wrong_stage", ["plan", "{recipe}", "--input", "generate={tmp}"], "--input", "generate"),
    command("plan_input_no_equals", ["plan", "{recipe}", "--input", "train"], "--input", "STAGE=PATH"),
    command("plan_input_missing", ["plan", "{recipe}", "--input", "train={tmp}/nope.jsonl"], "nope.jsonl"),
    command(
        "export_into_non_empty",
        ["export", "pairs", "{tmp}/pairs", "--output", "{tmp}/full"],
        "--output",
        "full",
        setup=lambda t: ((t / "pairs").mkdir(), (t / "full").mkdir(), (t / "full" / "x").write_text("")),
    ),
    command(
        "export_into_file",
        ["export", "pairs", "{tmp}/pairs", "--output", "{recipe}"],
        "--output",
        setup=lambda t: (t / "pairs").mkdir(),
    ),
    command("export_target_missing", ["export", "model", "{tmp}/train", "--output", "{tmp}/model"], "train"),
    command(
        "export_stage_not_run",
        ["export", "pairs", "{recipe}", "--output", "{tmp}/exp", "--output-dir", "{out}"],
        "pairs",
        "has not run",
    ),
    command("eval_model_missing", ["eval", "{recipe}", "--model", "{tmp}/no-model"], "--model", "no-model"),
    command(
        "eval_model_undefined_world", ["eval", "{recipe}", "--model", "world:strongest"], "--model", "world:strongest"
    ),
    command("verify_missing", ["verify", "{tmp}/run"], "run", "no such directory", recipe=None),
    command("verify_no_manifest", ["verify", "{tmp}"], "no finished stage output", recipe=None),
    command("verify_file", ["verify", "{recipe}"], "recipe.yaml"),
    command("sweep_run_out_of_range", ["sweep", "{recipe}", "--run", "5"], "--run", "0 to 1", recipe=SWEEP),
    command("sweep_run_negative", ["sweep", "{recipe}", "--run", "-1"], "--run", recipe=SWEEP),
    command("sweep_without_section", ["sweep", "{recipe}", "--dry-run"], "sweep"),
    command(
        "sweep_unknown_parameter",
        ["sweep", "{recipe}", "--dry-run"],
        "top_fractoin",
        "did you mean",
        recipe=mutated(SWEEP, {"sweep.parameters": {"pairing.filter.top_fractoin": [0.5]}}),
    ),
    command(
        "sweep_bad_value",
        ["sweep", "{recipe}", "--dry-run"],
        "sweep run 1",
        "top_fraction",
        recipe=mutated(SWEEP, {"sweep.parameters": {"pairing.filter.top_fraction": [0.5, 2.0]}}),
    ),
    command("shard_out_of_range", ["generate", "{recipe}", "--shard", "2", "--num-shards", "2"], "--shard"),
    command("shard_negative", ["generate", "{recipe}", "--shard", "-1"], "--shard"),
    command("num_shards_zero", ["generate", "{recipe}", "--num-shards", "0"], "--num-shards"),
    command("num_shards_negative", ["generate", "{recipe}", "--num-shards", "-2"], "--num-shards"),
    command("shard_not_a_number", ["generate", "{recipe}", "--shard", "x"], "--shard"),
    command("unknown_command", ["trian", "{recipe}"], "trian"),
    command("unknown_option", ["plan", "{recipe}", "--outptu", "x"], "--outptu"),
    command("missing_recipe_argument", ["plan"], "recipe", recipe=None),
    command("report_pairs_missing", ["report", "pairs", "{tmp}/pairs"], "pairs"),
]


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Every way into a model, a generation or a training run raises WouldRun: a case never starts work."""
    import prefopt.generation.generate
    import prefopt.generation.parallel
    import prefopt.judging.judge
    import prefopt.pairing.build
    import prefopt.pipeline
    import prefopt.training.launch

    def would_run(what):
        def stand_in(*args, **kwargs):
            raise WouldRun(what)

        return stand_in

    import datasets

    datasets.disable_progress_bars()  # as in a log (quiet_progress_in_logs); in a terminal they are fine
    monkeypatch.setattr(datasets, "enable_progress_bars", lambda: None)
    for module, name in (
        (prefopt.pipeline.Pipeline, "model_path"),
        (prefopt.generation.parallel, "run_data_parallel"),
        (prefopt.generation.generate, "run_generation"),
        (prefopt.judging.judge, "run_judging"),
        (prefopt.pairing.build, "build_pairs"),
        (prefopt.training.launch, "launch_training"),
    ):
        monkeypatch.setattr(module, name, would_run(f"{name}"))


def prepare(case: Case, tmp: Path) -> list[str]:
    """Write the case's files under ``tmp`` and return its command line."""

    def filled(value):
        if isinstance(value, str):
            return fill(value, tmp, case.suffix)
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        if isinstance(value, list):
            return [filled(v) for v in value]
        return value

    if isinstance(case.recipe, str):
        (tmp / "recipe.yaml").write_text(case.recipe)
    elif case.recipe is not None:
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(filled(case.recipe), sort_keys=False))
    if case.data is not None:
        write_data(tmp / f"data{case.suffix}", case.data)
    for name, content in case.files.items():
        write_data(tmp / name, content)
    if case.setup:
        case.setup(tmp)
    argv = [fill(a, tmp, case.suffix) for a in case.argv]
    if argv and argv[0] in ("plan", "generate", "judge", "pairs", "train", "eval", "run", "sweep"):
        if len(argv) > 1 and "--output-dir" not in argv:
            argv += ["--output-dir", str(tmp / "out")]
    return argv


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def outcome(case: Case, tmp: Path, capsys) -> tuple[str, str]:
    """("clear" | "unclear" | "traceback" | "accepted", what was seen) of one case run in-process."""
    argv = prepare(case, tmp)
    before = files_under(tmp)
    capsys.readouterr()
    try:
        rc = main(argv)
    except WouldRun as err:
        return "accepted", f"went on to {err}"
    except SystemExit as err:
        rc = err.code
    except BaseException as err:  # noqa: BLE001 - what a user would see as a traceback
        return "traceback", "".join(traceback.format_exception_only(type(err), err)).strip()[-400:]
    err_text = capsys.readouterr().err
    lines = err_text.strip().splitlines()
    written = sorted(str(p.relative_to(tmp)) for p in files_under(tmp) - before if p.suffix != ".log")
    if rc == 0:
        return "accepted", f"exit code 0; stderr {err_text[-300:]!r}"
    if "Traceback" in err_text:
        return "traceback", err_text[-400:]
    want = [fill(case.file, tmp, case.suffix)] if case.file else []
    missing = [n for n in [*want, *(fill(n, tmp, case.suffix) for n in case.names)] if n not in err_text]
    if rc != 2 or len(lines) != 1 or not lines[0].startswith("prefopt: error: ") or missing or written:
        return "unclear", f"rc {rc}; stderr {err_text.strip()[-400:]!r}; not named {missing}; written {written}"
    return "clear", lines[0]


def test_enough_cases():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind, seen = outcome(case, tmp_path, capsys)
    tally = os.environ.get("PREFOPT_BAD_INPUT_TALLY")
    if tally:
        with open(tally, "a") as f:
            f.write(json.dumps({"id": case.id, "kind": kind, "seen": seen}) + "\n")
    assert kind == "clear", f"{kind}: {seen}"


# -- end to end: a real process, as a user runs it ----------------------------------------------------------------
SUBPROCESS_CASES = {
    "yaml_syntax": (["plan", "{recipe}"], "name: [ci\n"),
    "unknown_key": (["plan", "{recipe}"], mutated(CI, {"generation.enigne": "vllm"})),
    "bad_data_row": (["train", "{recipe}", "--input", "{data}"], CI),
    "shard_out_of_range": (["generate", "{recipe}", "--shard", "3", "--num-shards", "2"], CI),
    "recipe_missing": (["run", "{tmp}/nope.yaml"], None),
}


LOG_LINE = re.compile(r"\d\d:\d\d:\d\d prefopt (INFO|WARNING) ")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "bad_data_row" else n for n in sorted(SUBPROCESS_CASES)],
)  # bad_data_row loads TRL and datasets in its process: about 15 s alone, 45 s on a busy machine
def test_bad_input_subprocess(name: str, tmp_path: Path):
    argv, recipe = SUBPROCESS_CASES[name]
    case = Case(name, argv, recipe, data=rows(PAIRS, 1, chosen=None))
    argv = prepare(case, tmp_path)
    before = files_under(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "prefopt.cli", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in result.stderr.strip().splitlines() if not LOG_LINE.match(line)]  # logs may precede it
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("prefopt: error: "), result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == lines[0]
    assert not [p for p in files_under(tmp_path) - before if p.suffix != ".log"]


def test_debug_shows_the_traceback(tmp_path: Path, capsys):
    """``--debug`` re-raises a user error with its traceback, for bug reports."""
    argv = prepare(Case("debug", ["plan", "{recipe}"], mutated(CI, {"generation.enigne": "vllm"})), tmp_path)
    with pytest.raises(Exception, match="enigne"):
        main(["--debug", *argv])


# -- and good inputs still pass: the checks above refuse nothing valid ---------------------------------------------
GOOD_CASES = [
    Case("plan_ci", ["plan", "{recipe}"], CI),
    Case("generate_ci", ["generate", "{recipe}"], CI),
    Case(
        "train_own_gap_column",
        ["train", "{recipe}", "--input", "{data}", "--set", "training.gap_column=gap"],
        CI,
        [{**r, "gap": 1.0} for r in PAIRS],
    ),
    Case("train_dataset", ["train", "{recipe}"], own_data(), PAIRS),
    Case(
        "generate_prompt_file",
        ["generate", "{recipe}"],
        mutated(CI, {"generation.prompts": {"source": "file", "path": "{data}"}}),
        PROMPTS,
    ),
    Case(
        "llm_judge_dimension",
        ["plan", "{recipe}"],
        mutated(LLM, {"pairing.filter.dimension": "step_accuracy", "judging.llm.rubric": "tiny_world"}),
    ),
]


@pytest.mark.parametrize("case", GOOD_CASES, ids=lambda c: c.id)
def test_good_input_passes_the_checks(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind, seen = outcome(case, tmp_path, capsys)
    assert kind == "accepted", f"{kind}: {seen}"
