"""``prefopt generate | judge | pairs | train | eval | run | sweep RECIPE.yaml``, ``prefopt report pairs`` and
``prefopt export pairs | model``.

Only the command that runs imports the stages (and with them torch, transformers, datasets, vLLM): ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
from pathlib import Path

from prefopt.errors import ConfigError, DataError
from prefopt.recipe import load_recipe

logger = logging.getLogger("prefopt")


def _recipe_arguments(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """The recipe file (unless the command names its target otherwise), --output-dir and --set."""
    if positional:
        parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--output-dir", help="override the recipe's output_dir")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set generation.engine=vllm (repeatable)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors one line like every other user error (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"prefopt: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prefopt", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="on a user error, raise it with its traceback instead of one line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "generate": "sample candidates from every generator of the pool",
        "judge": "score candidates on the judge's rubric dimensions",
        "pairs": "build preference pairs and apply the sample-level delta filter",
        "train": "train the policy with DPO under accelerate launch",
        "eval": "greedy accuracy on every evaluation set, and the results table",
        "run": "every stage in order, skipping those already complete",
        "sweep": "every run of the recipe's sweep section (sharing cached stages), then the results table and plot",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        _recipe_arguments(p)
        if name in ("judge", "pairs", "train"):
            p.add_argument(
                "--input",
                help="input stage directory or saved dataset; train also takes a .jsonl/.json/"
                ".parquet/.csv/.arrow file of pairs or KTO examples in TRL's formats "
                "(default: from the recipe)",
            )
        if name in ("generate", "judge", "pairs", "train"):
            p.add_argument("--output", help="output directory (default: <output_dir>/<stage>/<config hash>)")
        if name == "eval":
            p.add_argument(
                "--model",
                metavar="DIR_OR_ID",
                help="evaluate this model (a local directory, a hub id or world:<name>) on the recipe's "
                "evaluation sets and print its row, instead of the recipe's models",
            )
        if name == "generate":
            p.add_argument("--shard", type=int, default=0, help="this worker's index (with --num-shards)")
            p.add_argument(
                "--num-shards",
                type=int,
                default=1,
                help="workers sharing the generation (e.g. a Slurm array); the last one merges",
            )
        if name in ("run", "sweep"):
            p.add_argument(
                "--slurm",
                action="store_true",
                help="write a Slurm job per stage (resources from the recipe's resources section) and a submit.sh "
                "chaining them, instead of running; with --dry-run, print them and write nothing",
            )
            p.add_argument("--sbatch-args", default="", help="extra sbatch options for --slurm, e.g. '-p gpu'")
        if name == "run":
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="run nothing: print each stage's status and the resources of its Slurm job (with --slurm: print "
                "every script, write nothing)",
            )
        if name == "sweep":
            mode = p.add_mutually_exclusive_group()
            mode.add_argument(
                "--dry-run",
                action="store_true",
                help="list the runs, the stages they share and the resources of their jobs (with --slurm: print "
                "every script)",
            )
            mode.add_argument("--run", type=int, metavar="I", help="run only run I (a Slurm array task)")
            mode.add_argument("--prepare", action="store_true", help="only the stages the runs share")
            mode.add_argument("--collect", action="store_true", help="only the table and plot of finished runs")
    plan = sub.add_parser(
        "plan",
        help="each stage's key, output directory and status, running nothing",
        description="Print what `prefopt run` would do: every stage's key, output directory and "
        "status (complete, damaged, partial with the shards done, missing).",
    )
    _recipe_arguments(plan)
    plan.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="STAGE=PATH",
        help="data given by hand to a stage (judge, pairs or train), as with that stage's --input",
    )
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify = sub.add_parser(
        "verify",
        help="check every finished output under a directory against its manifest",
        description="Check every finished stage output under RUN_DIR: each file recorded when it "
        "finished is there, with its size and SHA-256. Exit code 1 on any mismatch.",
    )
    verify.add_argument("run_dir", help="a run's output directory (or one stage output)")
    doctor = sub.add_parser(
        "doctor",
        help="versions, GPUs and the vLLM platform; with a recipe, what it needs that is missing",
        description="Print the installed stack's versions, the GPUs torch sees and the platform vLLM runs on. "
        "With RECIPE, list what it needs (vLLM, DeepSpeed, trackers, bitsandbytes, GPUs); exit 1 if any is missing.",
    )
    doctor.add_argument("recipe", nargs="?", help="recipe YAML file")
    _recipe_arguments(doctor, positional=False)
    report = sub.add_parser(
        "report",
        help="tables and plots of a run, a sweep or a pairs stage, from what is on disk",
        description="`prefopt report RECIPE.yaml`: a run's tables (with 95% intervals, training metrics per "
        "judged-gap bucket) and PNG plots, or a sweep's (arms with intervals over problems and seeds, error bars, "
        "log axes for learning rate and beta), from the finished stages; nothing is trained or evaluated. "
        "`prefopt report pairs TARGET`: summary.md, summary.json and plots of a pairs stage.",
    )
    report.add_argument(
        "what",
        help="a recipe YAML file (a sweep if it has a sweep section, else a run), or run, sweep or pairs before it",
    )
    report.add_argument(
        "target", nargs="?", help="with run, sweep or pairs: a recipe YAML file (pairs: or a pairs dataset directory)"
    )
    _recipe_arguments(report, positional=False)
    report.add_argument(
        "--output",
        help="where to write (default: pairs: <pairs dir>/report; run: <output_dir>/report; sweep: its sweep dir)",
    )
    export = sub.add_parser(
        "export",
        help="the pairs or the trained model as files for use elsewhere, with a card",
        description="Export a run's pairs (TRL's preference format, a dataset card) or its trained "
        "model (safetensors, tokenizer, a model card), optionally to the Hub.",
    )
    kinds = export.add_subparsers(dest="what", required=True)
    for what, target in (("pairs", "a pairs directory"), ("model", "a train directory (or its model/)")):
        p = kinds.add_parser(what, help=f"export the {what}", description=f"Export the {what}.")
        p.add_argument("target", help=f"a recipe YAML file (its {what} stage) or {target}")
        p.add_argument("--output", required=True, help="directory to write (new or empty)")
        p.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload the directory to this Hub repository")
        _recipe_arguments(p, positional=False)
        if what == "pairs":
            p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="data file format")
        else:
            p.add_argument(
                "--merge-lora", action="store_true", help="merge a LoRA adapter into its base and export the full model"
            )
    return parser


def report_pairs(args) -> Path:
    """``prefopt report pairs``: the report of a recipe's pairs stage, or of any pairs dataset directory."""
    import json

    from prefopt.cache import is_complete
    from prefopt.pairing.report import REPORT_DIR, write_pairs_report
    from prefopt.pipeline import Pipeline
    from prefopt.schemas import load_stage_dataset

    target = Path(args.target)
    if target.suffix in (".yaml", ".yml"):
        recipe = load_recipe(target, args.set, check_trainers=False)
        if args.output_dir:
            recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
        pipeline = Pipeline(recipe)
        target = pipeline.stage_dir("pairs", pipeline.pairs_key())
        if not is_complete(target):
            raise FileNotFoundError(f"{target}: the pairs stage has not run for this recipe; run `prefopt pairs` first")
    frame = load_stage_dataset(target, {}, "pairs").flatten().to_pandas()
    stats_file = target / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
    return write_pairs_report(Path(args.output) if args.output else target / REPORT_DIR, frame, stats)


def report_command(args) -> int:
    """``prefopt report [run|sweep|pairs] TARGET``; a recipe alone is a sweep when it has a sweep section."""
    if args.target is None:
        args.what, args.target = None, args.what
    if args.what not in (None, "run", "sweep", "pairs"):
        raise ConfigError(f"report {args.what!r}: expected run, sweep, pairs or a recipe YAML file")
    if args.what is None:
        if Path(args.target).suffix not in (".yaml", ".yml"):
            raise ConfigError(f"report {args.target}: expected a recipe YAML file (or: report pairs DIRECTORY)")
        from prefopt.recipe import read_recipe_data

        args.what = "sweep" if "sweep" in read_recipe_data(args.target, args.set) else "run"
    if args.what == "pairs":
        summary = report_pairs(args)
    elif args.what == "sweep":
        from prefopt import sweep

        config, runs = sweep.expand(args.target, args.set, args.output_dir)
        summary = sweep.collect(config, runs, Path(args.output) if args.output else None)
    else:
        summary = report_run(args)
    print(summary.read_text())
    print(f"Written: {summary.parent}")
    return 0


def report_run(args) -> Path:
    """``prefopt report run RECIPE``: the run's tables and plots from its finished evaluations (nothing runs)."""
    from prefopt.pipeline import Pipeline

    recipe = load_recipe(args.target, args.set, check_trainers=False)
    if args.output_dir:
        recipe = dataclasses.replace(recipe, output_dir=args.output_dir)
    pipeline = Pipeline(recipe)
    accuracies = pipeline.evaluated()
    if not accuracies:
        raise FileNotFoundError(f"{args.target}: no finished evaluation for this recipe; run `prefopt eval` first")
    return pipeline.report(accuracies, Path(args.output) if args.output else Path(recipe.output_dir) / "report", True)


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


def verify_command(args) -> int:
    from prefopt.cache import MANIFEST, verify_output

    root = Path(args.run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    outputs = sorted({m.parent for m in root.rglob(MANIFEST)})
    if not outputs:
        raise FileNotFoundError(f"{root}: no finished stage output here (no {MANIFEST})")
    failed = 0
    for output in outputs:
        problems = verify_output(output)
        failed += bool(problems)
        print(f"{'FAILED' if problems else 'ok':<7} {output}" + "".join(f"\n        {p}" for p in problems))
    print(f"{len(outputs) - failed} of {len(outputs)} outputs verified" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


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
    pipeline = Pipeline(recipe)
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


def export_command(args) -> int:
    from prefopt import export

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before any work: the export writes a directory
        raise ConfigError(
            f"--output {out}: exists and is not an empty directory (the export writes a directory: give a new path "
            "or remove it)"
        )
    stage = "pairs" if args.what == "pairs" else "train"
    source = export.resolve(args.target, stage, args.set, args.output_dir)
    out = (
        export.export_pairs(source, args.format, args.output)
        if args.what == "pairs"
        else export.export_model(source, args.output, args.merge_lora)
    )
    print(f"Written: {out}")
    if args.push_to_hub:
        url = export.push_to_hub(out, args.push_to_hub, "dataset" if args.what == "pairs" else "model")
        print(f"Uploaded to {args.push_to_hub}: {url}")
    return 0


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


def quiet_progress_in_logs() -> None:
    """In a log file (stderr not a terminal): progress bars update at most every 30 s and the libraries' own bars
    (datasets, the Hub, transformers' weight loading) stay off. Environment defaults, so the ranks and workers
    prefopt starts inherit them; a variable already set wins."""
    if not sys.stderr.isatty():
        for name, value in (
            ("TQDM_MININTERVAL", "30"),
            ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ):
            os.environ.setdefault(name, value)


DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # no space, a file-size limit, a quota


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet_progress_in_logs()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt %(levelname)s %(message)s", datefmt="%H:%M:%S")
    command = {
        "report": report_command,
        "sweep": sweep_command,
        "plan": plan_command,
        "verify": verify_command,
        "export": export_command,
        "eval": eval_command,
        "doctor": lambda args: __import__("prefopt.doctor").doctor.doctor(args.recipe, args.set),  # imports torch
    }.get(args.command, stage_command)
    from prefopt.processes import ChildFailed, Terminated, exit_on_signals

    exit_on_signals()
    try:
        return command(args)
    except (ConfigError, DataError, FileNotFoundError) as err:  # the user's to fix: one line, no traceback
        if args.debug:
            raise
        print(f"prefopt: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except ChildFailed as err:  # the child's own output above says why
        if args.debug:
            raise
        print(f"prefopt: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        # nothing half-written is marked finished (prefopt.cache): once there is space, a rerun resumes
        where = f"writing {err.filename}: " if err.filename else ""
        print(
            f"prefopt: error: {where}{err.strerror} (disk full?); finished work is kept: free space and rerun",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # children were stopped on the way out; a rerun resumes
        print("prefopt: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    except Terminated:
        print("prefopt: terminated; finished work is kept and a rerun resumes", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
