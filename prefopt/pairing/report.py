"""``prefopt report pairs``: what a pairs dataset holds, as JSON, Markdown and PNG plots.

Written by the pairs stage into ``<stage dir>/report/``, and by ``prefopt report pairs`` for any pairs (or
KTO examples) dataset. Files: ``summary.json``, ``summary.md``, and ``margins.png`` (histograms per
dimension), ``generators.png`` (traces per generator, judge agreement per matchup), ``lengths.png`` (chosen vs
rejected), plus ``positions.png`` (within-prompt strategies) and ``margin_bayes.png`` where they apply; for KTO
examples ``scores.png`` and ``lengths.png`` by label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from prefopt import plots
from prefopt.pairing.candidates import TIE_TOLERANCE
from prefopt.tables import mean, num, pct

REPORT_DIR = "report"


def pair_summary(pairs: pd.DataFrame) -> dict:
    """Counts, judge agreement, mean margins per dimension, generators and lengths of flat pairs."""
    dims = [c[len("margins.") :] for c in pairs.columns if c.startswith("margins.")]
    matchups = pairs.groupby(["chosen_generator", "rejected_generator"]).agg(
        pairs=("pair_id", "size"), judge_agreement_rate=("judge_agrees", "mean"), mean_margin=("margin", "mean")
    )
    generators = sorted(set(pairs["chosen_generator"]) | set(pairs["rejected_generator"]))
    return {
        "pairs": len(pairs),
        "prompts": int(pairs["prompt_id"].nunique()),
        "strategies": pairs["strategy"].value_counts().to_dict(),
        "ties": int((pairs["margin"].abs() <= TIE_TOLERANCE).sum()),
        "judge_agreement_rate": mean(pairs["judge_agrees"].astype(float)),
        "mean_margin": mean(pairs["margin"]),
        "mean_margins": {d: mean(pairs[f"margins.{d}"]) for d in dims},
        "generators": {
            g: {
                "chosen": int((pairs["chosen_generator"] == g).sum()),
                "rejected": int((pairs["rejected_generator"] == g).sum()),
            }
            for g in generators
        },
        "matchups": [
            {"chosen": c, "rejected": r, **{k: float(v) for k, v in row.items()}} for (c, r), row in matchups.iterrows()
        ],
        "mean_length": {"chosen": mean(pairs["chosen"].str.len()), "rejected": mean(pairs["rejected"].str.len())},
    }


def unpaired_summary(examples: pd.DataFrame) -> dict:
    by_generator = examples.groupby("generator")["label"].agg(["mean", "size"])
    return {
        "examples": len(examples),
        "prompts": int(examples["prompt_id"].nunique()),
        "desirable": int(examples["label"].sum()),
        "undesirable": int((~examples["label"]).sum()),
        "desirable_rate_by_generator": {g: float(row["mean"]) for g, row in by_generator.iterrows()},
        "mean_score": {
            "desirable": mean(examples.loc[examples["label"], "score"]),
            "undesirable": mean(examples.loc[~examples["label"], "score"]),
        },
    }


def pairs_markdown(summary: dict, stats: dict | None) -> str:
    lines = ["## Pairs", ""]
    if stats:
        lines += [
            f"Strategy: `{stats['strategy']}`",
            "",
            "| candidates | unjudged | prompts | prompts with too few candidates | pairs built | ties | "
            "tie rate | judge agrees (built) | dropped by gate | dropped by filter | pairs kept |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {stats['candidates']} | {stats['unjudged_candidates']} | {stats['prompts']} | "
            f"{stats['prompts_too_few_candidates']} | {stats['pairs_built']} | {stats['ties']} | "
            f"{pct(stats['tie_rate'])} | {pct(stats['judge_agreement_rate'])} | "
            f"{stats['dropped_by_agreement_gate']} | {stats['dropped_by_filter']} | {stats['pairs_kept']} |",
            "",
        ]
        if "margin_bayes" in stats:
            mb = stats["margin_bayes"]
            lines += [
                f"margin_bayes ({mb['fusion']}): kept {stats['pairs_kept']} of "
                f"{stats['pairs_kept'] + stats['dropped_by_margin_bayes']}; calibration external "
                f"[{mb['external_low']:g}, {mb['external_high']:.3g}], implicit [{mb['implicit_low']:g}, "
                f"{mb['implicit_high']:.3g}]; external/implicit correlation "
                f"{num(mb['external_implicit_correlation'])}"
                + (
                    f"; constant, so P = 0.5 for every pair: {', '.join(mb['constant_sources'])}"
                    if mb.get("constant_sources")
                    else ""
                )
                + ".",
                "",
            ]
        if stats.get("reward_augmented_scores_clipped"):
            lines += [
                f"reward_augmented: {stats['reward_augmented_scores_clipped']} scores outside score_range were "
                "clipped to it.",
                "",
            ]
    dims = list(summary["mean_margins"])
    lines += [
        "| pairs | prompts | judge agrees | mean margin | "
        + " | ".join(f"mean {d} margin" for d in dims)
        + " | chosen length | rejected length |",
        "| --- " * (6 + len(dims)) + "|",
        f"| {summary['pairs']} | {summary['prompts']} | {pct(summary['judge_agreement_rate'])} | "
        f"{num(summary['mean_margin'])} | "
        + " | ".join(num(summary["mean_margins"][d]) for d in dims)
        + f" | {num(summary['mean_length']['chosen'])} | {num(summary['mean_length']['rejected'])} |",
        "",
        "| chosen generator | rejected generator | pairs | judge agrees | mean margin |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {m['chosen']} | {m['rejected']} | {int(m['pairs'])} | {pct(m['judge_agreement_rate'])} | "
        f"{num(m['mean_margin'])} |"
        for m in summary["matchups"]
    ]
    return "\n".join(lines) + "\n"


def unpaired_markdown(summary: dict, stats: dict | None) -> str:
    lines = ["## KTO examples", ""]
    if stats:
        lines += [
            f"Strategy: `{stats['strategy']}`; {stats['dropped_between_thresholds']} candidates between the "
            f"thresholds dropped; class weights {stats['class_weights']}.",
            "",
        ]
    lines += [
        "| examples | desirable | undesirable | mean score (desirable) | mean score (undesirable) |",
        "| --- | --- | --- | --- | --- |",
        f"| {summary['examples']} | {summary['desirable']} | {summary['undesirable']} | "
        f"{num(summary['mean_score']['desirable'])} | {num(summary['mean_score']['undesirable'])} |",
        "",
        "| generator | desirable rate |",
        "| --- | --- |",
    ]
    lines += [f"| {g} | {pct(r)} |" for g, r in summary["desirable_rate_by_generator"].items()]
    return "\n".join(lines) + "\n"


def write_pairs_report(
    directory: str | Path,
    kept: pd.DataFrame,
    stats: dict | None = None,
    built: pd.DataFrame | None = None,
    scored: pd.DataFrame | None = None,
) -> Path:
    """Write the report of flat pairs (or KTO examples) into ``directory``; returns ``summary.md``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if "label" in kept.columns:
        summary = unpaired_summary(kept)
        markdown = unpaired_markdown(summary, stats)
        plots.plot_label_scores(kept, out / "scores.png")
        plots.plot_lengths(
            kept.loc[kept["label"], "completion"],
            kept.loc[~kept["label"], "completion"],
            ("desirable", "undesirable"),
            out / "lengths.png",
        )
    else:
        summary = pair_summary(kept)
        markdown = pairs_markdown(summary, stats)
        plots.plot_margins(kept, out / "margins.png", built)
        plots.plot_generators(kept, out / "generators.png")
        plots.plot_lengths(kept["chosen"], kept["rejected"], ("chosen", "rejected"), out / "lengths.png")
        if "chosen_z" in kept.columns:
            plots.plot_positions(kept, out / "positions.png")
        if scored is not None:
            plots.plot_margin_fusion(scored, kept["pair_id"], out / "margin_bayes.png")
    (out / "summary.json").write_text(json.dumps({"summary": summary, "build": stats}, indent=2, default=str))
    (out / "summary.md").write_text(markdown)
    return out / "summary.md"
