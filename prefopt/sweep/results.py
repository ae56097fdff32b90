"""A sweep's results: a row per finished run and a row per arm (its seeds' intervals), written as ``results.md``,
``results.csv`` and ``results.json`` with the plots ``accuracy.png`` and ``intervals.png``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from prefopt.cache import is_complete
from prefopt.evaluation.accuracy import domain_means
from prefopt.evaluation.report import arm_intervals, arms_markdown, load_scores
from prefopt.pipeline import Pipeline
from prefopt.plots import plot_arms, plot_sweep
from prefopt.recipe import SweepConfig
from prefopt.sweep.runs import SweepRun, sweep_dir, value_text
from prefopt.tables import num, pct, pp


def _policy_labels(accuracy: dict) -> tuple[str, str] | None:
    before = next((k for k in accuracy if k.startswith("policy (before")), None)
    after = next((k for k in accuracy if k.startswith("policy (after")), None)
    return (before, after) if before and after else None


def result_row(run: SweepRun, results: dict) -> dict:
    """One run's line of the sweep table: its fields, pair counts and judged gaps, accuracy before and after."""
    row: dict[str, Any] = {"run": run.label, **{k: value_text(v) for k, v in run.values.items()}}
    accuracy, stats = results["accuracy"], results.get("pairs") or {}
    pairing = run.recipe.pairing
    if pairing.strategy_entry.needs_generator_labels:
        pair = pairing.generator_pairs[0]
        if pair.chosen in accuracy and pair.rejected in accuracy:
            chosen, rejected = domain_means(accuracy[pair.chosen]), domain_means(accuracy[pair.rejected])
            for domain in chosen:
                if chosen[domain] is not None:
                    row[f"generator_gap_{domain}"] = chosen[domain] - rejected[domain]
    row["pairs_built"] = stats.get("pairs_built", stats.get("examples_kept"))
    row["pairs_kept"] = stats.get("pairs_kept", stats.get("examples_kept"))
    row["mean_gap_built"] = stats.get("mean_margin_built")
    row["mean_gap_kept"] = stats.get("mean_margin_kept")
    for dim, gap in (stats.get("mean_margins_kept") or {}).items():
        row[f"mean_gap_kept_{dim}"] = gap
    labels = _policy_labels(accuracy)
    if labels:
        before, after = (domain_means(accuracy[label]) for label in labels)
        for domain in before:
            if before[domain] is not None:
                row[f"{domain}_before"], row[f"{domain}_after"] = before[domain], after[domain]
                row[f"{domain}_gain"] = after[domain] - before[domain]
        for name, summary in accuracy[labels[1]].items():
            row[f"{name}_after"] = summary["accuracy"]
    return row


def x_axis(sweep: SweepConfig, runs: list[SweepRun], rows: dict[int, dict]) -> tuple[str, dict[int, Any]]:
    """The plot's x label and each run's x: ``x_values`` if given; a numeric swept value; for a sweep over
    generator pairings, the measured in-domain generator gap; else the run's label."""
    key = sweep.x or next(iter(sweep.parameters), None)
    if sweep.x_values:
        arms = list(dict.fromkeys(run.arm for run in runs))
        return "x", {run.index: sweep.x_values[arms.index(run.arm)] for run in runs}
    if key is None:  # seeds only: one arm
        return "arm", {run.index: run.arm for run in runs}
    values = {run.index: run.values[key] for run in runs}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        return key, values
    if key == "pairing.generator_pairs" and rows and all("generator_gap_in_domain" in r for r in rows.values()):
        return "generator gap, in-domain (pp)", {
            i: round(100 * r["generator_gap_in_domain"], 1) for i, r in rows.items()
        }
    return key, {run.index: run.arm or run.label for run in runs}


def series_of(sweep: SweepConfig, run: SweepRun) -> str:
    """The values of the swept fields other than the x one: runs sharing them form one line of the plot."""
    key = sweep.x or next(iter(sweep.parameters), None)
    others = [f"{k.split('.')[-1]}={value_text(v)}" for k, v in run.values.items() if k != key]
    return ", ".join(others) if sweep.mode == "product" and others else "runs"


def collect(sweep: SweepConfig, runs: list[SweepRun], out: Path | None = None) -> Path:
    """The sweep's table (Markdown, CSV, JSON) and plots, from every run whose report exists, in ``out`` (default:
    the sweep's directory)."""
    out = out or sweep_dir(sweep, runs)
    done: dict[int, dict] = {}
    missing = []
    for run in runs:
        report = sweep_dir(sweep, runs) / "runs" / run.slug / "results.json"  # where run_one wrote it
        pipeline = Pipeline(run.recipe)
        if report.is_file() and is_complete(pipeline.stage_dir("train", pipeline.train_key())):
            done[run.index] = {**result_row(run, json.loads(report.read_text())), **train_numbers(pipeline)}
        else:
            missing.append(run.label)
    xlabel, xs = x_axis(sweep, runs, done)
    rows = [{**row, "x": xs[i], "series": series_of(sweep, runs[i])} for i, row in done.items()]
    arms = arm_rows(sweep, runs, done, xs)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    baseline = baseline_arm(sweep, runs)
    (out / "results.json").write_text(
        json.dumps(
            {"sweep": sweep.name, "runs": rows, "missing": missing, "baseline": baseline, "arms": arms}, indent=2
        )
    )
    table = sweep_markdown(sweep, rows, missing)
    if arms:
        table += "\n### Arms\n\n" + arms_markdown(arms, baseline)
    (out / "results.md").write_text(table)
    if rows:
        plot_sweep(rows, xlabel, out / "accuracy.png", f"Sweep {sweep.name}")
    if arms:
        plot_arms(arms, xlabel, out / "intervals.png", f"Sweep {sweep.name}: after training, 95% intervals", baseline)
    return out / "results.md"


def baseline_arm(sweep: SweepConfig, runs: list[SweepRun]) -> str:
    """The arm every other is compared with: ``sweep.baseline``, else the first."""
    return sweep.baseline or (runs[0].arm or runs[0].label)


def train_numbers(pipeline: Pipeline) -> dict:
    """A finished run's optimizer steps (trainer_state.json) and tokens trained: steps x effective batch x the mean
    tokens per example (training_plan.json), which a resumed run keeps (TRL's own running count, ``num_tokens`` in
    the log, restarts at a resume); None where the train stage predates them."""
    train = pipeline.stage_dir("train", pipeline.train_key())
    state, plan = train / "trainer_state.json", train / "training_plan.json"
    steps = json.loads(state.read_text())["global_step"] if state.is_file() else None
    plan_data = json.loads(plan.read_text()) if plan.is_file() else None
    tokens = (
        round(steps * plan_data["effective_batch_size"] * plan_data["mean_tokens_per_example"])
        if steps is not None and plan_data
        else None
    )
    return {"optimizer_steps": steps, "tokens_trained": tokens}


def arm_rows(sweep: SweepConfig, runs: list[SweepRun], done: dict[int, dict], xs: dict[int, Any]) -> list[dict]:
    """Per arm (runs that differ only in seed) of the finished runs: its seeds, means over them of pairs kept,
    steps and tokens trained, and the intervals of :func:`prefopt.evaluation.report.arm_intervals` from each run's
    per-problem scores (the trained policy's eval stage, read from disk)."""
    scores: dict[str, list] = {}
    before = None
    members: dict[str, list[int]] = {}
    for run in runs:
        if run.index not in done:
            continue
        pipeline = Pipeline(run.recipe)
        dirs = pipeline.eval_dirs()
        labels = pipeline.model_labels()
        if labels[1] not in dirs:
            continue
        arm = run.arm or run.label
        scores.setdefault(arm, []).append(load_scores(dirs[labels[1]]))
        members.setdefault(arm, []).append(run.index)
        if before is None and labels[0] in dirs:
            before = load_scores(dirs[labels[0]])
    if not scores:
        return []
    baseline = baseline_arm(sweep, runs)
    intervals = arm_intervals(scores, baseline if baseline in scores else next(iter(scores)), before)

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    rows = []
    for arm, indices in members.items():
        rows.append(
            {
                "arm": arm,
                "x": xs[indices[0]],
                "series": series_of(sweep, runs[indices[0]]),
                "seeds": [runs[i].seed for i in indices if runs[i].seed is not None],
                **{
                    key: mean([done[i].get(key) for i in indices])
                    for key in ("pairs_kept", "optimizer_steps", "tokens_trained")
                },
                **intervals[arm],
            }
        )
    return rows


def _count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def sweep_markdown(sweep: SweepConfig, rows: list[dict], missing: list[str]) -> str:
    gaps = [c for c in ("generator_gap_in_domain", "generator_gap_out_of_domain") if any(c in r for r in rows)]
    header = [
        "run",
        *(["generator gap (ID)", "generator gap (OOD)"][: len(gaps)] if gaps else []),
        "pairs kept",
        "optimizer steps",
        "tokens trained",
        "mean judged gap (kept)",
        "ID before",
        "ID after",
        "ID gain",
        "OOD before",
        "OOD after",
        "OOD gain",
    ]
    lines = [f"## prefopt sweep: {sweep.name}", "", "| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    for r in rows:
        cells = [r["run"], *[pp(r.get(g)) for g in gaps], str(r.get("pairs_kept"))]
        cells += [_count(r.get("optimizer_steps")), _count(r.get("tokens_trained")), num(r.get("mean_gap_kept"))]
        for domain in ("in_domain", "out_of_domain"):
            cells += [pct(r.get(f"{domain}_before")), pct(r.get(f"{domain}_after")), pp(r.get(f"{domain}_gain"))]
        lines.append("| " + " | ".join(cells) + " |")
    dims = sorted({c[len("mean_gap_kept_") :] for r in rows for c in r if c.startswith("mean_gap_kept_")})
    if dims:
        lines += [
            "",
            "Mean judged gap of the kept pairs per dimension:",
            "",
            "| run | " + " | ".join(dims) + " |",
            "| --- " * (len(dims) + 1) + "|",
        ]
        lines += [
            "| " + r["run"] + " | " + " | ".join(num(r.get(f"mean_gap_kept_{d}")) for d in dims) + " |" for r in rows
        ]
    if missing:
        lines += ["", f"Not finished: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"
