"""PNG plots written beside stage outputs: judged score distributions and pair margin distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _histogram_row(columns: list[str], title: str, ylabel: str, draw: Callable[[plt.Axes, str], None],
                   path: Path) -> Path:
    """One histogram panel per column, drawn by ``draw(ax, column)``, saved as a PNG."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        draw(ax, column)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scores(judged: pd.DataFrame, path: Path) -> Path:
    """One histogram per dimension (``scores.<dim>`` columns) and the aggregate, one colour per generator."""

    def draw(ax, column):
        for generator, group in judged.groupby("generator"):
            ax.hist(group[column].dropna(), bins=20, range=(judged[column].min(), judged[column].max()), alpha=0.55,
                    label=f"{generator} (mean {group[column].mean():.2f})")
        ax.set_title(column.removeprefix("scores."))
        ax.set_xlabel("score")

    columns = ["aggregate"] + [c for c in judged.columns if c.startswith("scores.")]
    return _histogram_row(columns, "Judged scores by generator", "candidates", draw, path)


def plot_margins(built: pd.DataFrame, kept: pd.DataFrame, path: Path) -> Path:
    """Margin (chosen - rejected) histograms per dimension: every pair built against the pairs kept."""

    def draw(ax, column):
        bounds = (min(built[column].min(), 0.0), max(built[column].max(), 0.0) or 1.0)
        ax.hist(built[column], bins=21, range=bounds, alpha=0.5, label=f"built ({len(built)})")
        ax.hist(kept[column], bins=21, range=bounds, alpha=0.7, label=f"kept ({len(kept)})")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title("aggregate" if column == "margin" else column.removeprefix("margins."))
        ax.set_xlabel("chosen - rejected")

    columns = ["margin"] + [c for c in built.columns if c.startswith("margins.")]
    return _histogram_row(columns, "Judged margins of the pairs", "pairs", draw, path)
