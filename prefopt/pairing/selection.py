"""Exact, seeded selection shared by every pairing rule that keeps a fraction of its input.

    keep_count(p, n) = ceil(P * n), P = Fraction(repr(p))

computed in integer arithmetic: ``P`` is the decimal the user wrote (the shortest decimal that round-trips to
the float ``p``, so 0.07 is 7/100, not 0.07000000000000000666...), and ``ceil`` is exact, so 0.07 of 100 keeps
7, never 8. With 0 < p <= 1, k is 0 only when n is 0. :func:`top_positions` keeps the k rows with the largest
values; rows with equal values are ordered by a seeded uniform 64-bit key of each row's id, so which of the
rows tied at the cut are kept depends on the seed and on nothing else (not on row order).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd

from prefopt.errors import ConfigError
from prefopt.pairing.candidates import gap_column, sort_pairs, tiebreak_keys


def exact_fraction(p: float | Fraction) -> Fraction:
    """The fraction as the decimal the user wrote: ``Fraction(repr(p))`` for a float (0.1 -> 1/10)."""
    return Fraction(repr(p)) if isinstance(p, float) else Fraction(p)


def keep_count(p: float | Fraction, n: int) -> int:
    """How many of ``n`` rows fraction ``p`` (0 < p <= 1) keeps: ceil(P * n) exactly, P = exact_fraction(p)."""
    if not 0 < p <= 1:  # NaN included
        raise ValueError(f"a kept fraction must be in (0, 1], got {p!r}")
    fraction = exact_fraction(p)
    if n < 0:
        raise ValueError(f"a row count must be >= 0, got {n}")
    return -((-fraction.numerator * n) // fraction.denominator)


def top_positions(values: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values``, ties broken by the smaller ``keys`` (seeded uniform keys of
    the rows' ids, :func:`prefopt.pairing.candidates.tiebreak_keys`); NaN ranks below every number."""
    values = np.asarray(values, dtype=float)
    return np.lexsort((keys, -values))[:k]


# -- selection after any strategy ----------------------------------------------------------------------------


def keep_top_fraction(pairs: pd.DataFrame, column: str, fraction: float, seed: int = 0) -> pd.DataFrame:
    """The ``keep_count(fraction, n)`` pairs with the largest ``column``; of pairs tied at the cut, those first
    in a seeded random order of pair_id (:mod:`prefopt.pairing.selection`)."""
    keys = tiebreak_keys(pairs["pair_id"], seed, f"top:{column}")
    return pairs.iloc[top_positions(pairs[column].to_numpy(float), keys, keep_count(fraction, len(pairs)))]


def sample_delta_filter(
    pairs: pd.DataFrame,
    dimension: str = "aggregate",
    top_fraction: float | None = None,
    min_gap: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Keep pairs with a large judged gap on ``dimension``.

    ``min_gap`` keeps pairs whose gap is at least the threshold; ``top_fraction`` then keeps exactly
    ``keep_count(top_fraction, n)`` of the remaining ``n`` pairs with the largest gaps (:func:`keep_top_fraction`).
    """
    column = gap_column(dimension)
    if column not in pairs.columns:
        raise ConfigError(
            f"pairing.filter.dimension {dimension!r}: no such gap; have "
            f"{['aggregate'] + [c[len('margins.') :] for c in pairs.columns if c.startswith('margins.')]}"
        )
    kept = pairs
    if min_gap is not None:
        kept = kept[kept[column] >= min_gap]
    if top_fraction is not None:
        kept = keep_top_fraction(kept, column, top_fraction, seed)
    return sort_pairs(kept)
