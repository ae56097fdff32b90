"""The commands that run stages or write their jobs: ``generate``, ``judge``, ``pairs``, ``train``, ``eval``, ``run``
(``--slurm``, ``--dry-run``), ``sweep``, ``plan`` and ``eval-harness``. Each imports its stage code when it runs."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe

logger = logging.getLogger("prefopt")


def sweep_command(args) -> int:
    from prefopt import sweep

    config, runs = sweep.expand(args.recipe, args.set, args.output_dir)
    if args.slurm:
        if args.run is not None or args.prepare or args.collect:
            raise ConfigError("--slurm writes the jobs of the whole sweep: drop --run, --prepare and --collect")
        extra = [f"--set={item}" for item in args.set] + (
            [f"--output-dir={args.output_dir}"] if args.output_dir else []
        )
        return _slurm(sweep.slurm_scripts(args.recipe, config, runs, args.sbatch_args, extra), args.dry_run)
    if args.dry_run:
        print(sweep.describe(config, runs))
        return 0
    if args.run is not None and not 0 <= args.run < len(runs):
        raise ConfigError(f"--run {args.run}: the sweep has runs 0 to {len(runs) - 1}")
    if not args.collect:  # the files and GPUs of what is about to run, before the first stage starts
        from prefopt.recipe import preflight

        stages = ("generate", "judge", "pairs", "train", "eval")
        for run in runs if args.run is None else [runs[args.run]]:
            try:
                preflight(run.recipe, ("generate", "judge", "eval") if args.prepare else stages)
            except ConfigError as err:
                raise ConfigError(f"{args.recipe}: sweep run {run.index} ({run.label}): {err}") from None
    if args.run is not None:
        print(sweep.run_one(config, runs, args.run).read_text())
        return 0
    if args.prepare:
        sweep.prepare(runs)
        return 0
    table = sweep.collect(config, runs) if args.collect else sweep.run_all(config, runs)
    print(table.read_text())
    print(f"Written: {table.parent} (results.md, results.csv, results.json, accuracy.png, intervals.png)")
    return 0


def _slurm(rendered, dry_run: bool) -> int:
    """Print the rendered Slurm files (a dry run) or write them and say how to submit."""
    if dry_run:
        print(rendered.text())
        return 0
    print(f"Written {rendered.directory}: {len(rendered.jobs)} jobs; submit them with: bash {rendered.write()}")
    return 0


def run_slurm_command(args) -> int:
    """``prefopt run RECIPE --slurm [--dry-run]``: a job per stage of the recipe, chained."""
    import shlex

    from prefopt.recipe import read_recipe_data
    from prefopt.slurm import render_run

    data = read_recipe_data(args.recipe, args.set)
    if args.output_dir:
        data["output_dir"] = args.output_dir
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    if args.slurm and recipe.rounds.count > 1:
        raise ConfigError(
            f"{args.recipe}: rounds.count: {recipe.rounds.count}: --slurm writes the jobs of one round; run the "
            "rounds with `prefopt run` (or set rounds.count: 1)"
        )
    if not args.slurm:  # --dry-run alone: the stages it would run, and what each would take under Slurm
        from prefopt.slurm import resources_table

        plan_command(argparse.Namespace(**vars(args), input=[], json=False))
        print("\nResources of each stage's Slurm job (`--slurm`; the recipe's resources section):\n")
        print(resources_table(recipe), end="")
        return 0
    return _slurm(render_run(recipe, data, args.recipe, shlex.split(args.sbatch_args)), args.dry_run)


def _inputs(items: list[str]) -> dict[str, str]:
    inputs = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or stage not in ("judge", "pairs", "train") or not path:
            raise ConfigError(f"--input {item!r}: expected STAGE=PATH with STAGE one of judge, pairs, train")
        inputs[stage] = path
    return inputs


def plan_command(args) -> int:
    import json

    from prefopt.pipeline import Pipeline

    recipe = load_recipe(args.recipe, args.set, check_trainers=False)  # plan imports no torch
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    rows = Pipeline(recipe, inputs=_inputs(args.input)).plan()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        detail = {
            "partial": f" ({row.get('shards', 0)} shards done)",
            "damaged": f" ({'; '.join(row.get('problems', [])[:3])})",
        }.get(row["status"], "")
        print(f"{row['stage']:<28} {row['key']:<13} {row['status']}{detail}  {row['path']}")
    return 0


def stage_command(args) -> int:
    """One stage, or ``run`` (all of them) and ``eval`` (evaluation and the results table)."""
    from prefopt.pipeline import Pipeline

    if args.command == "run" and (args.slurm or args.dry_run):
        return run_slurm_command(args)
    if args.command == "generate":
        if args.num_shards < 1:
            raise ConfigError(f"--num-shards {args.num_shards}: expected a number of workers >= 1")
        if not 0 <= args.shard < args.num_shards:
            raise ConfigError(
                f"--shard {args.shard}: expected 0 to {args.num_shards - 1} (--num-shards {args.num_shards})"
            )
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    _preflight(args, recipe)
    if recipe.sweep is not None:
        logger.info(
            "The recipe has a sweep section: `prefopt %s` uses its base values; `prefopt sweep` runs the sweep",
            args.command,
        )
    if recipe.rounds.count > 1 and args.command not in ("run", "eval"):
        logger.info(
            "rounds.count is %d: `prefopt %s` runs round 1's stage; `prefopt run` runs every round",
            recipe.rounds.count,
            args.command,
        )
    pipeline = Pipeline(recipe)
    if args.command == "train" and args.config_only:
        if args.input or args.output:
            raise ConfigError("--config-only: for the recipe's own train stage; leave out --input and --output")
        print(pipeline.write_train_config())
        return 0
    if args.command not in ("run", "eval"):
        kwargs = {"output": args.output}
        if args.command == "generate":
            kwargs.update(shard=args.shard, num_shards=args.num_shards)
        else:
            kwargs["input"] = args.input
        print(getattr(pipeline, args.command)(**kwargs))
        return 0
    report = pipeline.run() if args.command == "run" else pipeline.report(pipeline.evaluate())
    for outcome in pipeline.outcomes:
        logger.info("%-26s %-6s %s", outcome.name, outcome.status, outcome.path)
    print()
    print(report.read_text())
    print(f"Written: {report} and {report.with_suffix('.json')}")
    return 0


def _preflight(args, recipe) -> None:
    """The files and GPUs the stages this command runs need, checked before the first one starts."""
    from prefopt.recipe import preflight

    stages = {"run": ("generate", "judge", "pairs", "train", "eval")}.get(args.command, (args.command,))
    if args.command == "run" and recipe.training.dataset is not None:
        stages = ("train", "eval")
    given = {args.command: args.input} if getattr(args, "input", None) else {}
    try:
        preflight(recipe, stages, given)
    except ConfigError as err:
        raise ConfigError(f"{args.recipe}: {err}") from None


def eval_command(args) -> int:
    """``prefopt eval``: the recipe's models, or with ``--model`` any one model, on the recipe's evaluation sets."""
    if not args.model:
        return stage_command(args)
    from prefopt.evaluation.report import columns, sampled_lines, value
    from prefopt.pipeline import Pipeline
    from prefopt.tables import pct

    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    _preflight(args, recipe)
    summary = Pipeline(recipe).evaluate_ref(args.model)
    cols = columns({args.model: summary})
    print("| model | " + " | ".join(h for _, h in cols) + " |\n" + "| --- " * (len(cols) + 1) + "|")
    print(f"| {args.model} | " + " | ".join(pct(value(summary, k)) for k, _ in cols) + " |")
    sampled = sampled_lines({args.model: summary})  # with evaluation.samples > 1: pass@1, pass@k, maj@k
    if sampled:
        print("\n".join(sampled))
    return 0


def eval_harness_command(args) -> int:
    """``prefopt eval-harness``: lm-evaluation-harness tasks on the trained policy (or ``--model``)."""
    from prefopt.cache import is_complete
    from prefopt.evaluation import harness
    from prefopt.pipeline import Pipeline

    harness.require_lm_eval()  # before the recipe's models are resolved
    recipe = load_recipe(args.recipe, args.set)
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    pipeline = Pipeline(recipe)
    cfg = recipe.evaluation
    if args.model:
        model, key, system = pipeline.model_path(args.model), pipeline.model_key(args.model), cfg.system_prompt
    else:
        from prefopt.layout import FINAL_MODEL_DIR

        trained = pipeline.stage_dir("train", pipeline.train_key())
        if not is_complete(trained):
            raise ConfigError(
                f"{args.recipe}: the trained policy is not there yet ({trained}): run `prefopt train` first, or give "
                "--model"
            )
        model, key = str(trained / FINAL_MODEL_DIR), pipeline.train_key()
        system = cfg.trained_system_prompt if cfg.trained_system_prompt is not None else cfg.system_prompt
    run = harness.HarnessRun(
        tasks=tuple(t.strip() for t in args.tasks.split(",")),
        backend=args.backend or harness.default_backend(),
        include_path=args.include_path,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size,
        model_args=args.model_args,
        chat_template=not args.no_chat_template,
        system=system,
    )
    out = harness.run_harness(model, key, run, lambda k: pipeline.stage_dir("eval", k))
    print((out / harness.TABLE).read_text())
    print(f"Written: {out / harness.RESULTS}")
    return 0
