"""The results table of a run, as Markdown (to paste) and JSON (to parse)."""

from __future__ import annotations

import json
from pathlib import Path

from prefopt.evaluation.accuracy import DOMAINS, domain_means
from prefopt.tables import pct, pp


def columns(accuracies: dict[str, dict]) -> list[tuple[str, str]]:
    """(key, header) of the results table: every evaluation set, then each domain's mean where a domain has
    several sets."""
    first = next(iter(accuracies.values()), {})
    names = {"in_domain": "in-domain", "out_of_domain": "out-of-domain"}
    cols = [(name, f"{names.get(name, name)} accuracy") for name in first]
    for domain in DOMAINS:
        if sum(v.get("domain", k) == domain for k, v in first.items()) > 1:
            cols.append((f"mean:{domain}", f"{names[domain]} mean"))
    return cols


def value(summary: dict[str, dict], key: str) -> float | None:
    if key.startswith("mean:"):
        return domain_means(summary)[key[len("mean:") :]]
    return summary[key]["accuracy"] if key in summary else None


def results_markdown(
    name: str,
    generator_pairs: list[tuple[str, str]],
    accuracies: dict[str, dict],
    pair_stats: dict | None,
    policy_labels: tuple[str, str] = ("policy (before DPO)", "policy (after DPO)"),
) -> str:
    cols = columns(accuracies)

    def delta(a: str, b: str, key: str) -> float | None:
        if a not in accuracies or b not in accuracies:
            return None
        x, y = value(accuracies[a], key), value(accuracies[b], key)
        return None if x is None or y is None else x - y

    lines = [
        f"## prefopt results: {name}",
        "",
        "| model | " + " | ".join(h for _, h in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for label, summary in accuracies.items():
        lines.append(f"| {label} | " + " | ".join(pct(value(summary, k)) for k, _ in cols) + " |")
    for chosen, rejected in generator_pairs:
        lines.append(
            f"| generator delta ({chosen} - {rejected}) | "
            + " | ".join(pp(delta(chosen, rejected, k)) for k, _ in cols)
            + " |"
        )
    before, after = policy_labels
    method = after[len("policy (after ") : -1]
    lines.append(
        f"| {method} gain (after - before) | " + " | ".join(pp(delta(after, before, k)) for k, _ in cols) + " |"
    )
    sizes = ", ".join(f"{k}: {v['n']}" for k, v in next(iter(accuracies.values()), {}).items())
    lines += ["", f"Greedy accuracy; problems per set: {sizes}."]
    if pair_stats and "examples_kept" in pair_stats:
        s = pair_stats
        lines += [
            "",
            "| KTO examples | desirable | undesirable | dropped between thresholds |",
            "| --- | --- | --- | --- |",
            f"| {s['examples_kept']} | {s['desirable']} | {s['undesirable']} | {s['dropped_between_thresholds']} |",
        ]
    elif pair_stats:
        s = pair_stats
        lines += [
            "",
            f"Pairs: `{s['strategy']}`.",
            "",
            "| pairs built | pairs kept | mean judged gap (built) | mean judged gap (kept) | "
            "judge agrees chosen > rejected | ties |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {s['pairs_built']} | {s['pairs_kept']} | {s['mean_margin_built']:.3f} | "
            f"{s['mean_margin_kept']:.3f} | {pct(s['judge_agreement_rate'])} | {s['ties']} |",
        ]
    return "\n".join(lines) + "\n"


def write_report(
    root: Path, recipe, accuracies: dict[str, dict], pair_stats: dict | None, policy_labels: tuple[str, str]
) -> Path:
    """Write ``results.md`` and ``results.json`` under the run's output directory; return the Markdown path."""
    root.mkdir(parents=True, exist_ok=True)
    pairing = recipe.pairing
    generator_pairs = (
        [(p.chosen, p.rejected) for p in pairing.generator_pairs if p.chosen in accuracies and p.rejected in accuracies]
        if pairing.strategy_entry.needs_generator_labels
        else []
    )  # none evaluated when training on the user's data
    md = results_markdown(recipe.name, generator_pairs, accuracies, pair_stats, policy_labels)
    (root / "results.md").write_text(md)
    (root / "results.json").write_text(
        json.dumps({"name": recipe.name, "accuracy": accuracies, "pairs": pair_stats}, indent=2)
    )
    return root / "results.md"
