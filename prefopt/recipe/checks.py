"""Checks between a recipe's sections, run when it loads (judge dimensions, engine options, TRL sizes, rounds), and
the one-round recipe of a later round."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from prefopt.config_base import did_you_mean
from prefopt.engines.vllm import check_vllm_options
from prefopt.errors import ConfigError
from prefopt.recipe.sections import RoundsConfig

if TYPE_CHECKING:
    from prefopt.judging.config import JudgingConfig
    from prefopt.recipe.config import Recipe


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


def engine_options(recipe: Recipe) -> list[tuple[str, str, dict]]:
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
    for where, engine, options in engine_options(recipe):
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


def on_policy_generators(recipe: Recipe) -> list[str]:
    """Names of the generators that sample from the policy (their model is training.model)."""
    return [g.name for g in recipe.generation.generators if g.model == recipe.training.model]


def round_recipe(recipe: Recipe, model: str) -> Recipe:
    """The one-round recipe of a round after the first: the on-policy generators and the policy are ``model`` (the
    previous round's trained policy); the other generators stay only with ``rounds.keep_generators``."""
    policy, keep = recipe.training.model, recipe.rounds.keep_generators
    pool = [
        dataclasses.replace(g, model=model) if g.model == policy else g
        for g in recipe.generation.generators
        if keep or g.model == policy
    ]
    return dataclasses.replace(
        recipe,
        generation=dataclasses.replace(recipe.generation, generators=pool),
        training=dataclasses.replace(recipe.training, model=model),
        rounds=RoundsConfig(),
    )


def check_rounds(recipe: Recipe) -> None:
    """A recipe of several rounds can sample from its policy and continue training it, round after round."""
    count = recipe.rounds.count
    if count == 1:
        return
    where = f"rounds.count: {count}"
    if recipe.training.dataset is not None:
        raise ConfigError(
            f"{where} builds each round's pairs from the policy's own samples, but training.dataset trains on fixed "
            "data; set rounds.count: 1 (or drop training.dataset)"
        )
    if recipe.sweep is not None:
        raise ConfigError(f"{where}: a sweep runs one round per arm; set rounds.count: 1 or drop the sweep section")
    if recipe.training.model_args.get("use_peft"):
        raise ConfigError(
            f"{where}: training.model_args.use_peft saves a LoRA adapter, which the next round cannot start from; "
            "set use_peft: false or rounds.count: 1"
        )
    if not on_policy_generators(recipe):
        raise ConfigError(
            f"{where}: no generator samples from the policy (none of generation.generators has model "
            f"training.model {recipe.training.model!r}); add one: each later round gives it the previous round's "
            "trained policy"
        )
    try:
        round_recipe(recipe, f"{recipe.output_dir}/train/ROUND/model")
    except ConfigError as err:  # the pool of the later rounds lacks a generator the pairs or the judge name
        raise ConfigError(
            f"rounds.keep_generators: false keeps only {on_policy_generators(recipe)} after round 1: {err}"
        ) from None


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
