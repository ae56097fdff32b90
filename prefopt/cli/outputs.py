"""The commands that read finished outputs and run no stage: ``report``, ``verify`` and ``export``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe


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
