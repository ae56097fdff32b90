"""The results table of a run, as Markdown (to paste) and JSON (to parse)."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pp"


def results_markdown(name: str, generator_pairs: list[tuple[str, str]], accuracies: dict[str, dict],
                     pair_stats: dict | None) -> str:
    def acc(label: str, split: str) -> float | None:
        return accuracies[label][split]["accuracy"] if label in accuracies else None

    def delta(a: str, b: str, split: str) -> float | None:
        x, y = acc(a, split), acc(b, split)
        return None if x is None or y is None else x - y

    lines = [f"## prefopt results: {name}", "",
             "| model | in-domain accuracy | out-of-domain accuracy |", "| --- | --- | --- |"]
    for label in accuracies:
        lines.append(f"| {label} | {_pct(acc(label, 'in_domain'))} | {_pct(acc(label, 'out_of_domain'))} |")
    for chosen, rejected in generator_pairs:
        lines.append(f"| generator delta ({chosen} - {rejected}) | {_pp(delta(chosen, rejected, 'in_domain'))} | "
                     f"{_pp(delta(chosen, rejected, 'out_of_domain'))} |")
    after, before = "policy (after DPO)", "policy (before DPO)"
    lines.append(f"| DPO gain (after - before) | {_pp(delta(after, before, 'in_domain'))} | "
                 f"{_pp(delta(after, before, 'out_of_domain'))} |")
    n_eval = next(iter(accuracies.values()))["in_domain"]["n"] if accuracies else 0
    lines += ["", f"Greedy accuracy on {n_eval} problems per split."]
    if pair_stats and "examples_kept" in pair_stats:
        s = pair_stats
        lines += ["", "| KTO examples | desirable | undesirable | dropped between thresholds |",
                  "| --- | --- | --- | --- |",
                  f"| {s['examples_kept']} | {s['desirable']} | {s['undesirable']} | {s['dropped_between_thresholds']} |"]
    elif pair_stats:
        s = pair_stats
        lines += ["", f"Pairs: `{s['strategy']}`.", "", "| pairs built | pairs kept | mean judged gap (built) | mean judged gap (kept) | "
                      "judge agrees chosen > rejected | ties |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {s['pairs_built']} | {s['pairs_kept']} | {s['mean_margin_built']:.3f} | "
                  f"{s['mean_margin_kept']:.3f} | {_pct(s['judge_agreement_rate'])} | {s['ties']} |"]
    return "\n".join(lines) + "\n"


def write_report(root: Path, recipe, accuracies: dict[str, dict], pair_stats: dict | None) -> Path:
    """Write ``results.md`` and ``results.json`` under the run's output directory; return the Markdown path."""
    root.mkdir(parents=True, exist_ok=True)
    pairing = recipe.pairing
    generator_pairs = [(p.chosen, p.rejected) for p in pairing.generator_pairs] \
        if pairing.strategy == "generator_delta" else []
    md = results_markdown(recipe.name, generator_pairs, accuracies, pair_stats)
    (root / "results.md").write_text(md)
    (root / "results.json").write_text(json.dumps({"name": recipe.name, "accuracy": accuracies,
                                                   "pairs": pair_stats}, indent=2))
    return root / "results.md"
