"""Less is More (Deng et al., NeurIPS 2025): calibrate external and implicit reward margins, fuse, select.

    P(m)      = (clip(m, M1, M2) - M1) / (M2 - M1)                            for m in {m_ex, m_im}
    DM-MUL    = P_ex P_im / (P_ex P_im + (1 - P_ex)(1 - P_im))                (Eq. 3)
    DM-ADD    = m_ex + m_im

The paper sets M1 = -2 for both sources and M2 from the data without giving the search; prefopt's reading
(:func:`dynamic_upper`) is the highest margin value with at least ``min_tail`` margins at or above it, and at
least as many as its distance to the maximum, so a sparse tail of outliers saturates at P = 1.

Degenerate inputs: a source whose M2 is set from the data and whose margins are all equal (one pair included)
cannot rank pairs, so it gives every pair P = 0.5 and DM-MUL reduces to the other source's P; no margins give
no scores (M2 = M1 + 1 is recorded).
"""

from __future__ import annotations

import numpy as np


def calibrate(margins: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map margins onto [0, 1]: 0 at or below ``low``, 1 at or above ``high``, linear in between."""
    if not high > low:
        raise ValueError(f"calibration needs high > low, got low={low}, high={high}")
    return (np.clip(margins, low, high) - low) / (high - low)


def dynamic_upper(margins: np.ndarray, low: float, min_tail: int = 30) -> float:
    """M2: the highest value v among the margins with count(m >= v) >= max(min_tail, max(m) - v).

    Falls back to max(m) when no value qualifies or the qualifying one is at or below ``low``, and to
    ``low + 1`` when max(m) is at or below ``low`` or there are no margins.
    """
    values = np.sort(np.asarray(margins, dtype=float))[::-1]
    if values.size == 0:
        return low + 1.0
    at_or_above = np.searchsorted(-values, -values, side="right")  # count of margins >= each value
    dense = (at_or_above >= min_tail) & (at_or_above >= values[0] - values)
    high = values[np.argmax(dense)] if dense.any() else values[0]
    if high <= low:
        high = values[0] if values[0] > low else low + 1.0
    return float(high)


def fuse_product(probabilities: list[np.ndarray]) -> np.ndarray:
    """Posterior that the pair is ordered right under independent sources and a uniform prior:
    prod p / (prod p + prod (1 - p)); 0.5 where the sources contradict each other with certainty."""
    yes = np.prod(probabilities, axis=0)
    no = np.prod([1 - p for p in probabilities], axis=0)
    total = yes + no
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, yes / np.where(total > 0, total, 1), 0.5)


def margin_bayes_scores(
    external: np.ndarray,
    implicit: np.ndarray,
    fusion: str = "mul",
    external_low: float = -2.0,
    external_high: float | None = None,
    implicit_low: float = -2.0,
    implicit_high: float | None = None,
    min_tail: int = 30,
) -> tuple[np.ndarray, dict]:
    """The fused score of every pair and the calibration bounds used (M2 from the data where not given)."""
    ex_high = dynamic_upper(external, external_low, min_tail) if external_high is None else external_high
    im_high = dynamic_upper(implicit, implicit_low, min_tail) if implicit_high is None else implicit_high
    constant = [
        name
        for name, margins, given in (("external", external, external_high), ("implicit", implicit, implicit_high))
        if given is None and _constant(margins)
    ]
    info = {
        "external_low": external_low,
        "external_high": ex_high,
        "implicit_low": implicit_low,
        "implicit_high": im_high,
        "constant_sources": constant,
    }
    if fusion == "add":
        return external + implicit, info
    if fusion != "mul":
        raise ValueError(f"unknown fusion {fusion!r}; expected 'mul' or 'add'")
    p_ex = np.full(len(external), 0.5) if "external" in constant else calibrate(external, external_low, ex_high)
    p_im = np.full(len(implicit), 0.5) if "implicit" in constant else calibrate(implicit, implicit_low, im_high)
    return fuse_product([p_ex, p_im]), info


def _constant(values: np.ndarray) -> bool:
    return len(values) > 0 and values.min() == values.max()


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None with fewer than two values or where either side is constant (min == max)."""
    if len(a) < 2 or _constant(a) or _constant(b):
        return None
    return float(np.corrcoef(a, b)[0, 1])
