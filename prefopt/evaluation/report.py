"""The results table of a run, as Markdown (to paste) and JSON (to parse).

The first table is greedy accuracy (as it always was); with sampled evaluation a second gives pass@1, pass@k and
maj@k; with each model's per-problem scores (:func:`load_scores`) a third gives every number with its 95% bootstrap
interval over problems, and the gain after training with a paired one (:mod:`prefopt.evaluation.metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefopt.evaluation.accuracy import DOMAINS, domain_means
from prefopt.evaluation.metrics import bootstrap_ci, paired_bootstrap_ci
from prefopt.tables import pct, pct_ci, pp, pp_ci

# Per-problem scores of one model: {set: {metric: array over the set's problems}}; metric "greedy" or "pass@1".
Scores = dict[str, dict[str, np.ndarray]]


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
    intervals: dict | None = None,
) -> str:
    """The run's tables; ``intervals`` (:func:`interval_table`) adds the one with confidence intervals."""
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
    lines += sampled_lines(accuracies)
    if intervals:
        lines += interval_lines(intervals)
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
    root: Path,
    recipe,
    accuracies: dict[str, dict],
    pair_stats: dict | None,
    policy_labels: tuple[str, str],
    scores: dict[str, Scores] | None = None,
    log_history: list[dict] | None = None,
    figures: bool = False,
) -> Path:
    """Write ``results.md`` and ``results.json`` under the run's output directory; return the Markdown path.
    ``scores`` (label -> :func:`load_scores`) adds the confidence intervals, ``log_history`` (the trainer's) the
    training metrics per judged-gap bucket; ``figures`` writes ``accuracy.png`` (each model with its intervals) and
    ``training_gap_buckets.png`` beside them."""
    root.mkdir(parents=True, exist_ok=True)
    pairing = recipe.pairing
    generator_pairs = (
        [(p.chosen, p.rejected) for p in pairing.generator_pairs if p.chosen in accuracies and p.rejected in accuracies]
        if pairing.strategy_entry.needs_generator_labels
        else []
    )  # none evaluated when training on the user's data
    intervals = interval_table(scores, policy_labels) if scores else None
    md = results_markdown(recipe.name, generator_pairs, accuracies, pair_stats, policy_labels, intervals)
    buckets = gap_buckets(log_history or [])
    if buckets:
        md += "\n" + gap_bucket_markdown(buckets)
    (root / "results.md").write_text(md)
    if figures:
        from prefopt.plots import plot_gap_buckets, plot_models

        if intervals:
            plot_models(intervals, root / "accuracy.png", f"{recipe.name}: accuracy with 95% intervals")
        if log_history:
            plot_gap_buckets(log_history, root / "training_gap_buckets.png")
    extra = {"intervals": intervals} if intervals else {}
    extra.update({"gap_buckets": buckets} if buckets else {})
    (root / "results.json").write_text(
        json.dumps({"name": recipe.name, "accuracy": accuracies, "pairs": pair_stats, **extra}, indent=2)
    )
    return root / "results.md"


def sampled_lines(accuracies: dict[str, dict]) -> list[str]:
    """The sampled metrics' table (pass@1, pass@k, maj@k per set), where evaluation sampled answers."""
    first = next(iter(accuracies.values()), {})
    metrics = [m for m in next(iter(first.values()), {}) if m == "pass@1" or m.startswith(("pass@", "maj@"))]
    if not metrics:
        return []
    cols = [(name, m) for name in first for m in metrics]
    lines = [
        "",
        "| model | " + " | ".join(f"{name} {m}" for name, m in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for label, summary in accuracies.items():
        lines.append(f"| {label} | " + " | ".join(pct(summary.get(name, {}).get(m)) for name, m in cols) + " |")
    samples = next(iter(first.values()))["samples"]
    lines += [
        "",
        f"{samples} sampled answers per problem: pass@1 is their mean correctness, pass@k unbiased "
        "(Chen et al. 2021), maj@k the majority answer of the first k.",
    ]
    return lines


def load_scores(eval_dir: Path) -> Scores:
    """One eval stage output's per-problem scores: greedy correctness and, with samples, pass@1."""
    from prefopt.schemas import EVAL_PREDICTIONS, load_stage_dataset

    frame = load_stage_dataset(eval_dir, EVAL_PREDICTIONS, "evaluation predictions").to_pandas()
    scores: Scores = {}
    for name, group in frame.groupby("set", sort=False):
        scores[name] = {"greedy": group["correct"].to_numpy(dtype=float)}
        if "sample_correct" in group:
            scores[name]["pass@1"] = np.array([np.mean(list(c)) for c in group["sample_correct"]])
    return scores


def interval_table(scores: dict[str, Scores], policy_labels: tuple[str, str]) -> dict:
    """``{"models": {label: {set: {metric: interval}}}, "gain": {set: {metric: interval}}}``: 95% bootstrap
    intervals over problems, and the paired interval of the gain after training (after - before)."""
    models = {
        label: {name: {m: bootstrap_ci(v).as_dict() for m, v in metrics.items()} for name, metrics in sets.items()}
        for label, sets in scores.items()
    }
    before, after = policy_labels
    gain = {}
    if before in scores and after in scores:
        for name, metrics in scores[after].items():
            gain[name] = {
                m: paired_bootstrap_ci(v, scores[before][name][m]).as_dict()
                for m, v in metrics.items()
                if m in scores[before].get(name, {}) and len(v) == len(scores[before][name][m])
            }
    return {"models": models, "gain": gain, "gain_label": f"{after} - {before}"}


def interval_lines(intervals: dict) -> list[str]:
    models = intervals["models"]
    first = next(iter(models.values()), {})
    cols = [(name, m) for name, metrics in first.items() for m in metrics]
    lines = [
        "",
        "| model | " + " | ".join(f"{name} {m}" for name, m in cols) + " |",
        "| --- " * (len(cols) + 1) + "|",
    ]
    for label, sets in models.items():
        lines.append(f"| {label} | " + " | ".join(pct_ci(sets.get(n, {}).get(m)) for n, m in cols) + " |")
    if intervals["gain"]:
        gain = intervals["gain"]
        lines.append(
            f"| {intervals['gain_label']} | " + " | ".join(pp_ci(gain.get(n, {}).get(m)) for n, m in cols) + " |"
        )
    lines += [
        "",
        "Means with 95% bootstrap intervals over problems (percentile, 10,000 resamples); the gain's "
        "interval is paired: the same problems resampled for both models.",
    ]
    return lines


def _stack(runs: list[Scores], name: str, metric: str) -> np.ndarray | None:
    """Seeds x problems of one set and metric, or None where a run lacks it or the runs' problems differ."""
    arrays = [r.get(name, {}).get(metric) for r in runs]
    if any(a is None for a in arrays) or len({len(a) for a in arrays}) != 1:
        return None
    return np.stack(arrays)


def arm_intervals(arms: dict[str, list[Scores]], baseline: str, before: Scores | None = None) -> dict:
    """Each arm's mean per set and metric with its 95% bootstrap interval over problems and seeds (``arms``: label
    -> one :data:`Scores` per seed), and its difference from ``baseline``'s and from the untrained policy's, each
    paired on the same problems: ``{arm: {"sets": {set: {metric: interval}}, "vs_baseline": ..., "vs_before":
    ...}}``. A comparison whose problems differ (a swept evaluation) is left out."""
    out = {}
    base = arms.get(baseline, [])
    for label, runs in arms.items():
        names = list(runs[0])
        entry: dict[str, dict] = {"sets": {}, "vs_baseline": {}, "vs_before": {}}
        for name in names:
            for metric in runs[0][name]:
                mine = _stack(runs, name, metric)
                if mine is None:
                    continue
                entry["sets"].setdefault(name, {})[metric] = bootstrap_ci(mine).as_dict()
                other = _stack(base, name, metric) if base and label != baseline else None
                if other is not None and other.shape[1] == mine.shape[1]:
                    entry["vs_baseline"].setdefault(name, {})[metric] = paired_bootstrap_ci(mine, other).as_dict()
                first = _stack([before], name, metric) if before else None
                if first is not None and first.shape[1] == mine.shape[1]:
                    entry["vs_before"].setdefault(name, {})[metric] = paired_bootstrap_ci(mine, first).as_dict()
        out[label] = entry
    return out


def arms_markdown(arms: list[dict], baseline: str) -> str:
    """The arms' table: seeds, pairs, optimizer steps and tokens trained (means over seeds), then per evaluation set
    and metric the mean with its interval and the paired difference from the baseline arm."""
    if not arms:
        return ""
    cols = [(n, m) for n, metrics in arms[0]["sets"].items() for m in metrics]
    header = ["arm", "seeds", "pairs kept", "optimizer steps", "tokens trained"]
    header += [h for n, m in cols for h in (f"{n} {m}", f"{n} {m} - baseline")]
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]

    def count(x) -> str:
        return "n/a" if x is None else f"{x:,.0f}"

    for a in arms:
        cells = [a["arm"], str(len(a["seeds"]) or 1), count(a.get("pairs_kept")), count(a.get("optimizer_steps"))]
        cells.append(count(a.get("tokens_trained")))
        for n, m in cols:
            cells.append(pct_ci(a["sets"].get(n, {}).get(m)))
            cells.append("baseline" if a["arm"] == baseline else pp_ci(a["vs_baseline"].get(n, {}).get(m)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Means over problems and seeds with 95% bootstrap intervals (percentile, 10,000 resamples of the problems "
        f"and, with several seeds, of the seeds); differences from the baseline arm `{baseline}` are paired: the same "
        "problems resampled for both. greedy: greedy accuracy; pass@1: the mean over sampled answers. Tokens "
        "trained: optimizer steps x effective batch x the mean tokens per example (training_plan.json).",
    ]
    return "\n".join(lines) + "\n"


def gap_buckets(log_history: list[dict]) -> dict[str, dict]:
    """Per judged-gap bucket the trainer logged (``rewards/accuracies_gap[lo,hi)``, ``rewards/margins_gap[...]``):
    how many logged steps had pairs in it, and its reward accuracy and margin, first, last and mean over them."""
    out: dict[str, dict] = {}
    for metric, prefix in (("accuracy", "rewards/accuracies_"), ("margin", "rewards/margins_")):
        for key in dict.fromkeys(k for entry in log_history for k in entry if k.startswith(prefix + "gap")):
            values = [e[key] for e in log_history if key in e]
            bucket = out.setdefault(key[len(prefix) :], {"logged_steps": len(values)})
            bucket[metric] = {"first": values[0], "last": values[-1], "mean": float(np.mean(values))}
    return out


def gap_bucket_markdown(buckets: dict[str, dict]) -> str:
    lines = [
        "| judged-gap bucket | logged steps | reward accuracy (first / last / mean) | reward margin (first / last / "
        "mean) |",
        "| --- | --- | --- | --- |",
    ]
    for name, b in buckets.items():
        cells = [
            " / ".join(f"{b[m][k]:.3f}" for k in ("first", "last", "mean")) if m in b else "n/a"
            for m in ("accuracy", "margin")
        ]
        lines.append(f"| {name} | {b['logged_steps']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Training metrics per bucket of the pairs' judged gap (the trainer's gap_bucket_edges), per logged step.",
    ]
    return "\n".join(lines) + "\n"
