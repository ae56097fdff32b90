"""``prefopt generate | judge | pairs | train | eval | run | sweep RECIPE.yaml``, ``prefopt report pairs`` and
``prefopt export pairs | model``.

Only the command that runs imports the stages (and with them torch, transformers, datasets, vLLM): ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse


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
        if name == "train":
            p.add_argument(
                "--config-only",
                action="store_true",
                help="write the train stage's flat config (train_config.yaml: what `accelerate launch -m "
                "prefopt.training.dpo --config RECIPE` trains) and print its path; train nothing",
            )
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
    harness = sub.add_parser(
        "eval-harness",
        help="lm-evaluation-harness tasks (gsm8k, minerva_math, ...) on the recipe's trained model or --model",
        description="Run lm-evaluation-harness (the optional extra prefopt[harness]) on the recipe's trained policy "
        "(or --model), asked with its chat template and the recipe's system prompt, and print lm-eval's table; "
        "results and per-sample logs go to <output_dir>/eval/<key>/. Built-in tasks fetch their data from the Hub.",
    )
    _recipe_arguments(harness)
    harness.add_argument("--tasks", required=True, help="lm-eval task or group names, comma-separated: gsm8k,...")
    harness.add_argument(
        "--model", metavar="DIR_OR_ID", help="a local directory, a hub id or world:<name> (default: the trained policy)"
    )
    harness.add_argument(
        "--backend", choices=["vllm", "hf"], help="lm-eval's model type (default: vllm with a GPU, else hf)"
    )
    harness.add_argument("--include-path", metavar="DIR", help="a directory (or file) of your own task YAMLs")
    harness.add_argument("--limit", type=int, help="only the first N problems of each task (a quick check)")
    harness.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    harness.add_argument("--batch-size", default="auto", help="lm-eval's batch size (default: auto)")
    harness.add_argument(
        "--model-args", default="", help="more lm-eval model_args, e.g. tensor_parallel_size=8,max_model_len=8192"
    )
    harness.add_argument(
        "--no-chat-template", action="store_true", help="ask as plain text (a base model without a chat template)"
    )
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
