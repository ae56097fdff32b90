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


def pct_ci(interval: dict | None) -> str:
    """A mean and its interval (``{mean, low, high}``, fractions) as ``57.4% [54.3, 60.4]``."""
    if interval is None:
        return "n/a"
    return f"{100 * interval['mean']:.1f}% [{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


def pp_ci(interval: dict | None) -> str:
    """A difference and its interval as ``+3.0 pp [+1.0, +5.0]``."""
    if interval is None:
        return "n/a"
    return f"{100 * interval['mean']:+.1f} pp [{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]"
