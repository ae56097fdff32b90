"""pass@k, maj@k and the bootstrap intervals against closed forms and brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest

from prefopt.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_means,
    maj_at_k,
    paired_bootstrap_ci,
    pass_at_1,
    pass_at_k,
)


def test_pass_at_k_equals_its_closed_form_and_subset_enumeration():
    cases = [(n, c, k) for n in range(1, 9) for c in range(n + 1) for k in range(1, n + 1)]
    n, c = np.array([x[0] for x in cases]), np.array([x[1] for x in cases])
    for k in range(1, 9):
        rows = [i for i, case in enumerate(cases) if case[2] == k]
        got = pass_at_k(n[rows], c[rows], k)
        for i, value in zip(rows, got):
            closed = 1 - math.comb(int(n[i] - c[i]), k) / math.comb(int(n[i]), k)
            samples = [True] * int(c[i]) + [False] * int(n[i] - c[i])
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert value == pytest.approx(closed, abs=1e-12) and value == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_is_stable_for_many_samples():
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-12)
    n, c = np.full(50, 1000), np.arange(0, 1000, 20)
    assert np.allclose(pass_at_k(n, c, 1), c / n, rtol=1e-12, atol=0)
    closed = [1 - math.comb(1000 - int(x), 64) / math.comb(1000, 64) for x in c]
    assert np.allclose(pass_at_k(n, c, 64), closed, rtol=1e-10, atol=1e-15)
    assert np.all(np.diff(pass_at_k(n, c, 64)) >= 0)
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k([3], [1], 4)
    with pytest.raises(ValueError, match="between 0"):
        pass_at_k([3], [4], 1)


def test_pass_at_1_and_maj_at_k():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=bool)
    assert pass_at_1(correct).tolist() == [0.5, 0.0, 0.75]
    assert np.allclose(pass_at_1(correct), pass_at_k([4, 4, 4], correct.sum(1), 1))
    answers = [["7", "3", "3", "7"], [None, None, "2", "2"], ["5", "5", "5", "1"]]
    # problem 0: a 2-2 tie goes to the answer seen first ("7", correct); problem 1: no answer among the first two
    assert maj_at_k(answers, correct, 4).tolist() == [1.0, 0.0, 1.0]
    assert maj_at_k(answers, correct, 3).tolist() == [0.0, 0.0, 1.0]  # "3" wins the first three samples
    assert maj_at_k(answers, correct, 1).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="at least 5 samples"):
        maj_at_k(answers, correct, 5)


def exact_distribution(seed_groups: list[np.ndarray], signs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every equally likely resample of the problems (shared) and of each group's seeds (a group of one seed is not
    resampled), enumerated: the atoms of the bootstrap statistic and their probabilities."""
    problems = seed_groups[0].shape[1]
    seed_choices = [
        list(itertools.product(range(x.shape[0]), repeat=x.shape[0])) if x.shape[0] > 1 else [(0,)] for x in seed_groups
    ]
    values = []
    for cols in itertools.product(range(problems), repeat=problems):
        for rows in itertools.product(*seed_choices):
            values.append(sum(s * x[np.ix_(r, cols)].mean() for x, r, s in zip(seed_groups, rows, signs)))
    atoms, counts = np.unique(np.round(values, 12), return_counts=True)
    return atoms, counts / counts.sum()


def exact_quantile(atoms: np.ndarray, probs: np.ndarray, q: float) -> float:
    cdf = np.cumsum(probs)
    # The Monte Carlo quantile settles on one atom only when q is not at a jump of the CDF.
    assert np.min(np.abs(cdf - q)) > 0.005, "choose data whose CDF does not jump at q"
    return float(atoms[np.searchsorted(cdf, q)])


@pytest.mark.parametrize(
    "groups, signs",
    [
        ([np.array([[0.0, 0.25, 0.5, 1.0, 1.0]])], [1.0]),  # one seed: scipy's path
        ([np.array([[0.0, 1.0, 1.0], [0.5, 0.0, 1.0]])], [1.0]),  # two seeds and three problems
        ([np.array([[1.0, 0.0, 1.0, 1.0, 0.0]]), np.array([[0.0, 0.0, 1.0, 0.0, 1.0]])], [1.0, -1.0]),  # paired
        ([np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), np.array([[0.5, 0.0, 0.0]])], [1.0, -1.0]),  # paired, seeds
    ],
)
def test_bootstrap_intervals_match_exact_enumeration(groups, signs):
    atoms, probs = exact_distribution(groups, signs)
    resamples = 100_000
    if len(groups) == 1:
        interval = bootstrap_ci(groups[0], resamples=resamples, seed=3)
    else:
        interval = paired_bootstrap_ci(groups[0], groups[1], resamples=resamples, seed=3)
    point = sum(s * x.mean() for x, s in zip(groups, signs))
    assert interval.mean == pytest.approx(point)
    assert interval.low == pytest.approx(exact_quantile(atoms, probs, 0.025), abs=1e-9)
    assert interval.high == pytest.approx(exact_quantile(atoms, probs, 0.975), abs=1e-9)
    # The whole resampling distribution, atom by atom, within five standard errors.
    values = np.round(bootstrap_means(groups, resamples, 5, signs), 12)
    for atom, p in zip(atoms, probs):
        share = np.mean(values == atom)
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / resamples) + 1e-9
    assert set(np.unique(values)) <= set(atoms)


def test_pairing_uses_the_shared_problems_and_seeds_are_reproducible():
    rng = np.random.default_rng(0)
    baseline = rng.random(400)
    arm = baseline + 0.02 + rng.normal(0, 0.01, 400)  # the same problems, a small, consistent improvement
    paired = paired_bootstrap_ci(arm, baseline)
    apart = (bootstrap_ci(arm).high - bootstrap_ci(arm).low) + (
        bootstrap_ci(baseline).high - bootstrap_ci(baseline).low
    )
    assert paired.low > 0.015 and paired.high < 0.025 and (paired.high - paired.low) < apart / 10
    seeds = np.stack([baseline, baseline + rng.normal(0, 0.1, 400)])
    assert bootstrap_ci(seeds, seed=7) == bootstrap_ci(seeds, seed=7)
    assert bootstrap_ci(seeds, seed=7) != bootstrap_ci(seeds, seed=8)
    # Seeds that disagree widen the interval: the seed level is resampled too.
    spread = np.stack([baseline - 0.2, baseline + 0.2])
    assert bootstrap_ci(spread).high - bootstrap_ci(spread).low > 3 * (
        bootstrap_ci(baseline).high - bootstrap_ci(baseline).low
    )
    assert bootstrap_ci([1.0, 1.0, 1.0]).as_dict() == {"mean": 1.0, "low": 1.0, "high": 1.0, "confidence": 0.95}
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap_ci([1.0, 0.0], [1.0, 0.0, 1.0])
