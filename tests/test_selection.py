"""Keeping a fraction: the exact count for every n and fraction, and seeded tie-breaking at the cut."""

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefopt.pairing.build import build_pairs
from prefopt.pairing.config import DeltaFilterConfig, PairingConfig
from prefopt.pairing.proxy import seed_set
from prefopt.pairing.selection import exact_fraction, keep_count, keep_top_fraction, top_positions

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRACTIONS = [round(i / 100, 2) for i in range(1, 101)] + [1 / 3, 2 / 3, 1 / 7, 0.1 + 0.2, 1e-3, 0.999, 0.125]


def test_keep_count_is_the_exact_ceiling_for_every_n_up_to_1000():
    for p in FRACTIONS:
        exact = Fraction(repr(p))
        for n in range(1001):
            k = keep_count(p, n)
            assert k == math.ceil(exact * n), (p, n)
            assert (k == 0) == (n == 0) and k <= n
            assert Fraction(k - 1, 1) < exact * n <= k  # the smallest count that keeps at least the fraction


def test_keep_count_reads_the_decimal_the_user_wrote():
    assert math.ceil(0.07 * 100) == 8 and keep_count(0.07, 100) == 7  # float arithmetic keeps one too many
    assert keep_count(0.3, 10) == 3 and keep_count(0.1 + 0.2, 10) == 4  # 0.30000000000000004 is not 0.3
    assert exact_fraction(0.1) == Fraction(1, 10) and exact_fraction(Fraction(1, 3)) == Fraction(1, 3)
    assert keep_count(Fraction(1, 3), 3) == 1 and keep_count(1 / 3, 3) == 1 and keep_count(1.0, 7) == 7


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan")])
def test_keep_count_refuses_fractions_outside_zero_one(p):
    with pytest.raises(ValueError, match=r"a kept fraction must be in \(0, 1\]"):
        keep_count(p, 10)


def test_top_positions_ranks_nan_last():
    values = np.array([np.nan, 1.0, 3.0, np.nan, 2.0])
    assert top_positions(values, np.arange(5, dtype=np.uint64), 4).tolist() == [2, 4, 1, 0]


def gap_frames(max_size=120):
    """Pairs with few distinct gaps (many ties), in a random row order."""
    return st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=0, max_size=max_size).map(
        lambda gaps: pd.DataFrame({"pair_id": [f"q{i:03d}" for i in range(len(gaps))], "margin": gaps})
    )


@PROPERTY
@given(
    pairs=gap_frames(),
    fraction=st.sampled_from(FRACTIONS),
    seed=st.integers(0, 10**6),
    order=st.randoms(use_true_random=False),
)
def test_the_kept_pairs_do_not_depend_on_row_order(pairs, fraction, seed, order):
    kept = keep_top_fraction(pairs, "margin", fraction, seed)
    shuffled = pairs.iloc[order.sample(range(len(pairs)), len(pairs))]
    again = keep_top_fraction(shuffled, "margin", fraction, seed)
    assert sorted(kept["pair_id"]) == sorted(again["pair_id"])
    assert len(kept) == math.ceil(Fraction(repr(fraction)) * len(pairs))
    dropped = pairs[~pairs["pair_id"].isin(kept["pair_id"])]
    if len(kept) and len(dropped):
        assert kept["margin"].min() >= dropped["margin"].max()


@PROPERTY
@given(size=st.integers(4, 60), seed=st.integers(0, 10**6))
def test_ties_at_the_cut_are_decided_by_the_seed(size, seed):
    pairs = pd.DataFrame({"pair_id": [f"q{i:03d}" for i in range(size)], "margin": 1.0})
    picks = {tuple(sorted(keep_top_fraction(pairs, "margin", 0.5, seed + s)["pair_id"])) for s in range(6)}
    assert len(picks) > 1  # not the first pair_ids whatever the seed
    assert picks != {tuple(pairs["pair_id"].iloc[: math.ceil(size / 2)])}


def test_tied_pairs_are_kept_uniformly_over_seeds():
    pairs = pd.DataFrame({"pair_id": [f"q{i:02d}" for i in range(20)], "margin": [2.0] * 5 + [1.0] * 10 + [0.0] * 5})
    counts = pd.Series(0, index=pairs["pair_id"])
    for seed in range(400):
        kept = keep_top_fraction(pairs, "margin", 0.5, seed)["pair_id"]  # 5 above the cut, 5 of the 10 tied
        counts[kept] += 1
    assert (counts.iloc[:5] == 400).all() and (counts.iloc[15:] == 0).all()
    assert counts.iloc[5:15].between(140, 260).all()  # each tied pair about half the time


def test_the_filter_uses_the_pairing_seed():
    judged = pd.DataFrame(
        [
            {
                "candidate_id": f"p{p}/{g}",
                "prompt_id": f"p{p}",
                "generator": g,
                "sample_index": 0,
                "aggregate": score,
                "scores.x": score,
                "prompt": "q",
                "completion": "c",
            }
            for p in range(40)
            for g, score in (("strong", 1.0), ("weak", 0.0))
        ]
    )
    kept = {
        seed: build_pairs(PairingConfig(filter=DeltaFilterConfig(top_fraction=0.25), seed=seed), judged).kept
        for seed in (0, 1)
    }
    assert len(kept[0]) == len(kept[1]) == 10 and kept[0]["pair_id"].tolist() != kept[1]["pair_id"].tolist()


@PROPERTY
@given(size=st.integers(0, 30), seed=st.integers(0, 100), order=st.randoms(use_true_random=False))
def test_the_proxy_seed_set_depends_on_the_seed_not_row_order(size, seed, order):
    pairs = pd.DataFrame({"pair_id": [f"q{i:03d}" for i in range(40)], "margin": 1.0})
    chosen = seed_set(pairs, size, seed)
    shuffled = pairs.iloc[order.sample(range(40), 40)]
    assert seed_set(shuffled, size, seed)["pair_id"].tolist() == chosen["pair_id"].tolist()
    assert len(chosen) == size and chosen["pair_id"].is_unique


def test_pairing_rules_and_the_registry_import_without_torch():
    code = (
        "import sys; import prefopt.pairing.registry, prefopt.pairing.strategies, prefopt.pairing.selection, "
        "prefopt.pairing.calibration; print(sorted(m for m in ('torch', 'datasets', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
