"""Numbers for the Markdown and JSON tables every stage writes: a mean that is None for no data, and formats."""

from __future__ import annotations

import pandas as pd


def mean(series: pd.Series) -> float | None:
    """The mean, or None for an empty series (a rate of a boolean series)."""
    return None if series.empty else float(series.mean())


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pp"


def num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
