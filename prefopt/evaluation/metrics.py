"""Evaluation metrics and their uncertainty: pure, vectorised numpy (and scipy), seeded.

- :func:`pass_at_k`: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)`` for ``n`` samples of
  which ``c`` are correct, computed as their product of ``c`` factors so that no binomial overflows.
- :func:`pass_at_1`: the mean correctness over a problem's samples (``pass_at_k`` with ``k = 1``).
- :func:`maj_at_k`: majority vote over the first ``k`` samples' extracted answers (ties: the answer seen first).
- :func:`bootstrap_ci`: a percentile interval of the mean of per-problem scores, resampling problems and, when
  there are several seeds (training runs), seeds too: scores of shape ``(seeds, problems)``.
- :func:`paired_bootstrap_ci`: the same for the difference of two arms' means on the same problems: one resample of
  the problems is shared by both arms (the pairing); each arm's seeds are resampled on their own.

One level (a single seed) goes through ``scipy.stats.bootstrap`` (percentile method); scipy resamples one level
only, so two levels (seeds and problems) are resampled here: each draw's indices (with replacement) become
weights, and the statistic of every draw is one ``einsum``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "confidence": self.confidence}


def pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased pass@k per problem: the chance that at least one of ``k`` samples drawn without replacement from
    ``n`` (``c`` of them correct) is correct. ``n`` and ``c`` broadcast; every ``n`` must be >= ``k``."""
    n, c = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.any(n < k):
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {int(n.min())}")
    if np.any((c < 0) | (c > n)):
        raise ValueError("correct counts must be between 0 and the number of samples")
    n, c = np.broadcast_arrays(n, c)
    # Chen et al.'s product form: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), a product of c factors
    # in (0, 1]; padded to the largest c with factors of 1, so every problem is one row of one array operation.
    flat_n, flat_c = n.ravel(), c.ravel()
    width = int(flat_c.max(initial=0))
    i = (flat_n - flat_c + 1)[:, None] + np.arange(width)[None, :]
    factors = np.where(np.arange(width)[None, :] < flat_c[:, None], 1.0 - k / np.maximum(i, 1), 1.0)
    ratio = np.where(flat_n - flat_c < k, 0.0, factors.prod(axis=1))
    return (1.0 - ratio).reshape(n.shape) + 0.0


def pass_at_1(correct) -> np.ndarray:
    """Per problem, the mean correctness over its samples: ``correct`` is (problems, samples) of booleans."""
    return np.asarray(correct, dtype=float).mean(axis=-1)


def maj_at_k(answers: Sequence[Sequence[str | None]], correct, k: int) -> np.ndarray:
    """Per problem, whether the most frequent answer among its first ``k`` samples is correct (1.0) or not (0.0).

    ``answers[i][j]`` is sample j's extracted answer (None: none found, never a vote); ``correct[i][j]`` its
    correctness. A tie goes to the answer seen first; a problem with no answer in its first ``k`` samples scores 0.
    """
    correct = np.asarray(correct, dtype=bool)
    out = np.zeros(len(answers))
    for i, row in enumerate(answers):
        if len(row) < k:
            raise ValueError(f"maj@{k} needs at least {k} samples per problem, got {len(row)}")
        votes: dict[str, int] = {}
        first: dict[str, int] = {}
        for j, answer in enumerate(row[:k]):
            if answer is None:
                continue
            votes[answer] = votes.get(answer, 0) + 1
            first.setdefault(answer, j)
        if votes:
            winner = max(votes, key=lambda a: (votes[a], -first[a]))
            out[i] = float(correct[i, first[winner]])
    return out


def _as_matrix(scores) -> np.ndarray:
    """Scores as (seeds, problems); a 1-D array is one seed."""
    x = np.asarray(scores, dtype=float)
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(f"expected scores of shape (problems,) or (seeds, problems), got {np.shape(scores)}")
    return x


def _weights(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """Each resample's weight on each item: how often ``size`` draws with replacement picked it, over ``size``."""
    picks = rng.integers(0, size, (resamples, size)) + size * np.arange(resamples)[:, None]
    return np.bincount(picks.ravel(), minlength=resamples * size).reshape(resamples, size) / size


def bootstrap_means(groups: Sequence[np.ndarray], resamples: int, seed: int, sign: Sequence[float]) -> np.ndarray:
    """``resamples`` bootstrap values of ``sum(sign[g] * mean(groups[g]))``: the problems (columns, shared by every
    group) resampled once per draw for all groups, each group's seeds (rows) on their own."""
    rng = np.random.default_rng(seed)
    problems = groups[0].shape[1]
    out = np.zeros(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: (1000, problems) weights at a time
        size = min(1000, resamples - start)
        wp = _weights(rng, problems, size)
        for x, s in zip(groups, sign):
            ws = _weights(rng, x.shape[0], size) if x.shape[0] > 1 else np.ones((size, 1))
            out[start : start + size] += s * np.einsum("bs,sp,bp->b", ws, x, wp)
    return out


def _interval(point: float, values: np.ndarray, confidence: float) -> Interval:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(point), float(low), float(high), confidence)


def bootstrap_ci(scores, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean of per-problem ``scores`` ((problems,) or (seeds, problems)) and its percentile bootstrap interval,
    resampling problems and, with several seeds, seeds."""
    x = _as_matrix(scores)
    if x.shape[0] == 1:
        if x[0].min() == x[0].max():  # every resample has the same mean (scipy warns and returns nan)
            return Interval(float(x[0, 0]), float(x[0, 0]), float(x[0, 0]), confidence)
        res = stats.bootstrap(
            (x[0],),
            np.mean,
            confidence_level=confidence,
            n_resamples=resamples,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        return Interval(
            float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high), confidence
        )
    return _interval(x.mean(), bootstrap_means([x], resamples, seed, [1.0]), confidence)


def paired_bootstrap_ci(
    arm, baseline, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """``mean(arm) - mean(baseline)`` on the same problems (the columns, in the same order) and its percentile
    bootstrap interval: the problems are resampled together for both arms, each arm's seeds on their own."""
    a, b = _as_matrix(arm), _as_matrix(baseline)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired arms need the same problems, got {a.shape[1]} and {b.shape[1]}")
    point = a.mean() - b.mean()
    if a.shape[0] == b.shape[0] == 1:
        d = a[0] - b[0]
        if d.min() == d.max():
            return Interval(float(point), float(d[0]), float(d[0]), confidence)
        res = stats.bootstrap(
            (a[0], b[0]),
            lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
            paired=True,
            confidence_level=confidence,
            n_resamples=resamples,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        return Interval(
            float(point), float(res.confidence_interval.low), float(res.confidence_interval.high), confidence
        )
    return _interval(point, bootstrap_means([a, b], resamples, seed, [1.0, -1.0]), confidence)
