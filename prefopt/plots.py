"""PNG plots written beside stage outputs: judged scores, pair margins, generator win rates, lengths, positions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, title: str, path: Path) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _histogram_row(
    columns: list[str], title: str, ylabel: str, draw: Callable[[plt.Axes, str], None], path: Path
) -> Path:
    """One histogram panel per column, drawn by ``draw(ax, column)``, saved as a PNG."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        draw(ax, column)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    return _save(fig, title, path)


def plot_scores(judged: pd.DataFrame, path: Path) -> Path:
    """One histogram per dimension (``scores.<dim>`` columns) and the aggregate, one colour per generator."""

    def draw(ax, column):
        values = judged[column].dropna()
        ax.set_title(column.removeprefix("scores."))
        ax.set_xlabel("score")
        if values.empty:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
            return
        for generator, group in judged.groupby("generator"):
            scored = group[column].dropna()
            ax.hist(
                scored,
                bins=20,
                range=(values.min(), values.max() + (values.max() == values.min())),
                alpha=0.55,
                label=f"{generator} ({len(scored)}, mean {scored.mean():.2f})",
            )

    columns = ["aggregate"] + [c for c in judged.columns if c.startswith("scores.")]
    return _histogram_row(columns, "Judged scores by generator", "candidates", draw, path)


def plot_margins(kept: pd.DataFrame, path: Path, built: pd.DataFrame | None = None) -> Path:
    """Margin (chosen - rejected) histograms per dimension: the pairs kept, against every pair built if given."""
    reference = kept if built is None or built.empty else built

    def draw(ax, column):
        bounds = (
            min(reference[column].min(), kept[column].min(), 0.0),
            max(reference[column].max(), kept[column].max(), 0.0) or 1.0,
        )
        if reference is not kept:
            ax.hist(reference[column], bins=21, range=bounds, alpha=0.5, label=f"built ({len(reference)})")
        ax.hist(kept[column], bins=21, range=bounds, alpha=0.7, label=f"kept ({len(kept)})")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title("aggregate" if column == "margin" else column.removeprefix("margins."))
        ax.set_xlabel("chosen - rejected")

    columns = ["margin"] + [c for c in kept.columns if c.startswith("margins.")]
    return _histogram_row(columns, "Judged margins of the pairs", "pairs", draw, path)


def plot_generators(pairs: pd.DataFrame, path: Path) -> Path:
    """Left: how often each generator wrote the chosen and the rejected trace. Right: per generator matchup,
    how often the judge scores the chosen trace strictly higher."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    counts = pd.DataFrame(
        {"chosen": pairs["chosen_generator"].value_counts(), "rejected": pairs["rejected_generator"].value_counts()}
    ).fillna(0)
    x = np.arange(len(counts))
    left.bar(x - 0.2, counts["chosen"], 0.4, label="chosen")
    left.bar(x + 0.2, counts["rejected"], 0.4, label="rejected")
    left.set_xticks(x, counts.index, rotation=20)
    left.set_ylabel("pairs")
    left.set_title("traces per generator")
    left.legend(fontsize=7)
    matchups = pairs.groupby(["chosen_generator", "rejected_generator"])["judge_agrees"].agg(["mean", "size"])
    labels = [f"{c} > {r}\n({n})" for (c, r), n in zip(matchups.index, matchups["size"])]
    right.bar(np.arange(len(matchups)), 100 * matchups["mean"])
    right.set_xticks(np.arange(len(matchups)), labels, fontsize=7)
    right.set_ylim(0, 100)
    right.set_ylabel("% judged chosen > rejected")
    right.set_title("judge agreement per matchup")
    return _save(fig, "Generators of the pairs", path)


def plot_lengths(first: pd.Series, second: pd.Series, labels: tuple[str, str], path: Path) -> Path:
    """Length (characters) histograms of two sets of texts, e.g. chosen against rejected."""
    a, b = first.str.len(), second.str.len()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(0, max(a.max(), b.max(), 1), 31)
    ax.hist(a, bins=bins, alpha=0.55, label=f"{labels[0]} (mean {a.mean():.0f})")
    ax.hist(b, bins=bins, alpha=0.55, label=f"{labels[1]} (mean {b.mean():.0f})")
    ax.set_xlabel("characters")
    ax.set_ylabel("texts")
    ax.legend(fontsize=7)
    return _save(fig, f"Length: {labels[0]} vs {labels[1]}", path)


def plot_positions(pairs: pd.DataFrame, path: Path) -> Path:
    """Where chosen and rejected sit in their prompt's score distribution, as z = (score - mu) / sigma."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    z = pairs[["chosen_z", "rejected_z"]].dropna()
    bins = np.linspace(min(z.min().min(), -3) if len(z) else -3, max(z.max().max(), 3) if len(z) else 3, 31)
    for column in ("chosen_z", "rejected_z"):
        ax.hist(z[column], bins=bins, alpha=0.55, label=f"{column[:-2]} (mean {z[column].mean():+.2f})")
    ax.set_xlabel("(score - mu) / sigma within the prompt")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=7)
    return _save(fig, "Reward positions of the pairs", path)


def plot_margin_fusion(pool: pd.DataFrame, kept_ids: pd.Series, path: Path) -> Path:
    """External against implicit margin of every pair margin_bayes scored, the kept ones highlighted."""
    fig, ax = plt.subplots(figsize=(5, 4))
    kept = pool["pair_id"].isin(kept_ids)
    ax.scatter(
        pool.loc[~kept, "external_margin"],
        pool.loc[~kept, "implicit_margin"],
        s=6,
        alpha=0.4,
        label=f"not kept ({int((~kept).sum())})",
    )
    ax.scatter(
        pool.loc[kept, "external_margin"],
        pool.loc[kept, "implicit_margin"],
        s=8,
        alpha=0.8,
        label=f"kept ({int(kept.sum())})",
    )
    ax.set_xlabel("external margin (judge)")
    ax.set_ylabel("implicit margin (proxy log-ratio)")
    ax.legend(fontsize=7)
    return _save(fig, "margin_bayes: external vs implicit margins", path)


def plot_label_scores(examples: pd.DataFrame, path: Path) -> Path:
    """Aggregate-score histograms of desirable and undesirable KTO examples."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, group in examples.groupby("label"):
        ax.hist(group["score"], bins=20, alpha=0.6, label=f"{'desirable' if label else 'undesirable'} ({len(group)})")
    ax.set_xlabel("aggregate score")
    ax.set_ylabel("examples")
    ax.legend(fontsize=7)
    return _save(fig, "KTO examples by label", path)


def plot_sweep(rows: list[dict], xlabel: str, path: Path, title: str = "Sweep") -> Path:
    """Accuracy after training against the swept value, in-domain and out-of-domain, a line per series (the
    other swept fields), the policy before training dashed; and the pairs kept with their mean judged gap."""
    numeric = all(isinstance(r["x"], (int, float)) for r in rows)
    ticks = list(dict.fromkeys(r["x"] for r in rows))
    position = {x: (x if numeric else i) for i, x in enumerate(ticks)}
    series = list(dict.fromkeys(r["series"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, domain in zip(axes[:2], ("in_domain", "out_of_domain")):
        for k, name in enumerate(series):
            members = sorted((r for r in rows if r["series"] == name), key=lambda r: position[r["x"]])
            after = [np.nan if r.get(f"{domain}_after") is None else 100 * r[f"{domain}_after"] for r in members]
            ax.plot([position[r["x"]] for r in members], after, "o-", color=f"C{k}", label=name)
        before = [r.get(f"{domain}_before") for r in rows if r.get(f"{domain}_before") is not None]
        if before:
            ax.axhline(100 * before[0], color="gray", linestyle="--", label="policy before training")
        ax.set_title(f"{domain.replace('_', '-')} accuracy after training")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    first = sorted((r for r in rows if r["series"] == series[0]), key=lambda r: position[r["x"]])
    xs = [position[r["x"]] for r in first]
    steps = np.diff(sorted(set(xs)))
    axes[2].bar(
        xs,
        [r.get("pairs_kept") or 0 for r in first],
        width=0.6 * (steps.min() if len(steps) else 1),
        alpha=0.4,
        color="tab:gray",
    )
    axes[2].set_ylabel("pairs kept (bars)")
    gap = axes[2].twinx()
    gap.plot(
        xs, [np.nan if r.get("mean_gap_kept") is None else r["mean_gap_kept"] for r in first], "o-", color="tab:green"
    )
    gap.set_ylabel("mean judged gap of the kept pairs (line)")
    axes[2].set_title("pairs")
    for ax in axes:
        ax.set_xlabel(xlabel)
        if not numeric:
            ax.set_xticks(range(len(ticks)), [str(t) for t in ticks], rotation=20, fontsize=7)
    if log_x(xlabel, ticks):
        for ax in axes[:2]:
            ax.set_xscale("log")
    return _save(fig, title, path)


LOG_AXES = ("learning_rate", "beta")  # swept fields plotted on a log x axis


def log_x(xlabel: str, xs: list) -> bool:
    """A log x axis for a learning rate or a beta whose values are all positive numbers."""
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    return numeric and all(x > 0 for x in xs) and xlabel.split(".")[-1] in LOG_AXES


def plot_arms(arms: list[dict], xlabel: str, path: Path, title: str, baseline: str | None = None) -> Path:
    """One panel per evaluation set and metric: each arm's mean after training with its 95% interval as error bars
    (over problems and seeds), a line per series; the baseline arm's mean dashed. Log x for learning rate and beta."""
    panels = [(name, metric) for name, metrics in arms[0]["sets"].items() for metric in metrics]
    xs = [a["x"] for a in arms]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    ticks = list(dict.fromkeys(xs))
    position = {x: (x if numeric else i) for i, x in enumerate(ticks)}
    series = list(dict.fromkeys(a["series"] for a in arms))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (name, metric) in zip(axes[0], panels):
        for k, line in enumerate(series):
            members = sorted((a for a in arms if a["series"] == line), key=lambda a: position[a["x"]])
            cells = [a["sets"].get(name, {}).get(metric) for a in members]
            kept = [(a, c) for a, c in zip(members, cells) if c is not None]
            if not kept:
                continue
            mean = np.array([100 * c["mean"] for _, c in kept])
            err = np.array([[100 * (c["mean"] - c["low"]), 100 * (c["high"] - c["mean"])] for _, c in kept]).T
            ax.errorbar(
                [position[a["x"]] for a, _ in kept], mean, yerr=err, fmt="o-", capsize=3, color=f"C{k}", label=line
            )
        base = next((a for a in arms if a["arm"] == baseline), None)
        if base is not None and base["sets"].get(name, {}).get(metric):
            ax.axhline(100 * base["sets"][name][metric]["mean"], color="gray", linestyle="--", label=f"{baseline}")
        ax.set_title(f"{name}: {metric}")
        ax.set_ylabel("accuracy (%)")
        ax.set_xlabel(xlabel)
        if log_x(xlabel, ticks):
            ax.set_xscale("log")
        elif not numeric:
            ax.set_xticks(range(len(ticks)), [str(t) for t in ticks], rotation=20, fontsize=7)
        ax.legend(fontsize=7)
    return _save(fig, title, path)


def plot_models(intervals: dict, path: Path, title: str) -> Path:
    """One panel per evaluation set and metric: each model's mean with its 95% interval as an error bar."""
    models = intervals["models"]
    panels = [(name, metric) for name, metrics in next(iter(models.values())).items() for metric in metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 1.1 * len(models) + 2) * len(panels), 4), squeeze=False)
    for ax, (name, metric) in zip(axes[0], panels):
        cells = [models[label].get(name, {}).get(metric) for label in models]
        x = np.arange(len(models))
        mean = np.array([np.nan if c is None else 100 * c["mean"] for c in cells])
        err = np.array(
            [[0, 0] if c is None else [100 * (c["mean"] - c["low"]), 100 * (c["high"] - c["mean"])] for c in cells]
        ).T
        ax.bar(x, mean, yerr=err, capsize=4, color=[f"C{i}" for i in range(len(models))], alpha=0.8)
        ax.set_xticks(x, list(models), rotation=20, fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{name}: {metric}")
    return _save(fig, title, path)


def plot_gap_buckets(log_history: list[dict], path: Path, title: str = "Training by judged-gap bucket") -> Path:
    """Reward accuracy and reward margin per judged-gap bucket against the optimizer step, from the trainer's log."""
    prefixes = ("rewards/accuracies_gap", "rewards/margins_gap")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, prefix, ylabel in zip(axes, prefixes, ("reward accuracy", "reward margin")):
        buckets = list(dict.fromkeys(k for entry in log_history for k in entry if k.startswith(prefix)))
        for k, key in enumerate(buckets):
            points = [(e["step"], e[key]) for e in log_history if key in e and "step" in e]
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "o-",
                markersize=3,
                color=f"C{k}",
                label=key[len(prefix) - 3 :],
            )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if buckets:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no gap buckets logged", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, title, path)
