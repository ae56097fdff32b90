"""Pair construction: every strategy and selection rule, with hypothesis properties over random judgments."""

import math
import re
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefopt.errors import ConfigError
from prefopt.pairing.build import build_pairs
from prefopt.pairing.calibration import calibrate, correlation, dynamic_upper, fuse_product, margin_bayes_scores
from prefopt.pairing.candidates import Groups, prompt_moments, usable_candidates
from prefopt.pairing.config import (
    REWARD_AUGMENTED_TEMPLATE,
    DeltaFilterConfig,
    GeneratorPair,
    KTOLabelConfig,
    MarginBayesConfig,
    PairingConfig,
    ProxyConfig,
    RewardAugmentConfig,
)
from prefopt.pairing.registry import STRATEGIES, strategy_function
from prefopt.pairing.reward_augment import format_score, reward_augment
from prefopt.pairing.selection import sample_delta_filter
from prefopt.pairing.strategies.generator_delta import generator_delta
from prefopt.pairing.strategies.kto_unpaired import kto_unpaired
from prefopt.pairing.strategies.max_min import max_min
from prefopt.pairing.strategies.max_random import max_random
from prefopt.pairing.strategies.sweet_spot import sweet_spot
from prefopt.schemas import JUDGMENTS, PAIRS, UNPAIRED, DataError, load_stage_dataset

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judgments(rows):
    """rows: (prompt_id, generator, sample_index, correctness, format) -> a judgments dataset."""
    return Dataset.from_list(
        [
            {
                "candidate_id": f"{p}/{g}/{i}",
                "prompt_id": p,
                "prompt": f"prompt {p}",
                "reference": None,
                "generator": g,
                "model": g,
                "sample_index": i,
                "completion": f"{g} says {p}.{i}",
                "finish_reason": "stop",
                "sampling": {"temperature": 1.0},
                "judge": "v",
                "scores": {"correctness": c, "format": f},
                "aggregate": None if c is None else (c + f) / 2,
                "raw_judgment": "",
                "parse_status": "ok",
            }
            for p, g, i, c, f in rows
        ]
    )


ROWS = [
    ("p1", "strong", 0, 1.0, 1.0),
    ("p1", "weak", 0, 0.0, 1.0),
    ("p1", "strong", 1, 1.0, 1.0),
    ("p1", "weak", 1, 1.0, 1.0),  # tie
    ("p2", "strong", 0, 0.0, 0.0),
    ("p2", "weak", 0, 1.0, 1.0),  # judge disagrees
    ("p3", "strong", 0, 1.0, 1.0),
    ("p3", "weak", 0, None, None),  # weak unjudged
    ("p4", "strong", 0, 1.0, 0.0),  # no weak candidate at all
]


@st.composite
def judged_frames(draw, max_prompts=8, max_candidates=7, discrete=True):
    """Flattened judgments: a few prompts, each with a few candidates of two generators, some unjudged."""
    rows = []
    for p in range(draw(st.integers(1, max_prompts))):
        for i in range(draw(st.integers(1, max_candidates))):
            value = (
                st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
                if discrete
                else st.floats(-5, 5, allow_nan=False, allow_subnormal=False)
            )
            c, f = draw(value), draw(value)
            judged = draw(st.booleans()) or i < 2 or not discrete
            rows.append(
                {
                    "candidate_id": f"p{p}/g{i % 2}/{i}",
                    "prompt_id": f"p{p}",
                    "prompt": f"q{p}",
                    "completion": f"c{p}.{i}",
                    "generator": f"g{i % 2}",
                    "sample_index": i // 2,
                    "aggregate": (c + f) / 2 if judged else None,
                    "scores.correctness": c if judged else None,
                    "scores.format": f if judged else None,
                }
            )
    return pd.DataFrame(rows)


# -- generator_delta -----------------------------------------------------------------------------------------


def test_generator_delta_pairs_samples_by_index_and_records_margins():
    built = generator_delta(judgments(ROWS).flatten().to_pandas(), [("strong", "weak")])
    pairs = built.frame
    assert pairs["pair_id"].tolist() == ["p1/strong/0|p1/weak/0", "p1/strong/1|p1/weak/1", "p2/strong/0|p2/weak/0"]
    assert pairs["margin"].tolist() == [0.5, 0.0, -1.0]
    assert pairs["margins.correctness"].tolist() == [1.0, 0.0, -1.0]
    assert pairs["judge_agrees"].tolist() == [True, False, False]
    assert (pairs["chosen_generator"] == "strong").all() and (pairs["rejected_generator"] == "weak").all()
    assert pairs["chosen"].str.startswith("strong").all() and pairs["rejected"].str.startswith("weak").all()
    assert built.short_prompts == ["p3", "p4"]  # p3's weak trace is unjudged, p4 has none


def test_build_pairs_accounts_for_every_drop():
    result = build_pairs(PairingConfig(require_judge_agreement=True), judgments(ROWS))
    stats = result.stats
    assert stats["pairs_built"] == 3 and stats["pairs_kept"] == 1 == len(result.dataset)
    assert stats["ties"] == stats["ties_dropped"] == 1 and stats["tie_rate"] == pytest.approx(1 / 3)
    assert stats["judge_disagreements"] == 1 and stats["dropped_by_agreement_gate"] == 1
    assert stats["unjudged_candidates"] == 1 and stats["prompts_too_few_candidates"] == 2
    assert stats["prompts_too_few_candidates_examples"] == ["p3", "p4"]
    [pairing] = stats["generator_pairs"]
    assert pairing["judge_disagreement_rate"] == pytest.approx(1 / 3)
    row = result.dataset[0]
    assert row["chosen_scores"] == {"correctness": 1.0, "format": 1.0}
    assert row["margins"] == {"correctness": 1.0, "format": 0.0}


def test_ties_are_kept_and_counted_when_asked():
    stats = build_pairs(PairingConfig(drop_ties=False), judgments(ROWS)).stats
    assert stats["ties"] == 1 and stats["ties_dropped"] == 0 and stats["pairs_kept"] == 3


def test_duplicate_samples_are_named():
    with pytest.raises(DataError, match=r"share a \(prompt_id, generator, sample_index\), e.g. \('p1', 'strong', 0\)"):
        build_pairs(
            PairingConfig(),
            judgments(ROWS + [("p1", "strong", 0, 0.0, 0.0)]).map(
                lambda r, i: {"candidate_id": f"{r['candidate_id']}#{i}"}, with_indices=True
            ),
        )


def test_several_generator_pairings():
    rows = ROWS + [("p1", "mid", 0, 1.0, 0.0), ("p2", "mid", 0, 1.0, 0.0)]
    cfg = PairingConfig(generator_pairs=[GeneratorPair("strong", "weak"), GeneratorPair("mid", "weak")])
    result = build_pairs(cfg, judgments(rows))
    assert sorted(set(result.kept["strategy"])) == ["generator_delta(mid>weak)", "generator_delta(strong>weak)"]
    assert [p["pairs_built"] for p in result.stats["generator_pairs"]] == [3, 2]


@PROPERTY
@given(judged_frames())
def test_agreement_gate_leaves_only_pairs_the_judge_orders_right(judged):
    try:
        result = build_pairs(
            PairingConfig(generator_pairs=[GeneratorPair("g0", "g1")], require_judge_agreement=True), judged
        )
    except ValueError as err:
        assert "no pairs left" in str(err)
        return
    assert (result.kept["chosen_score"] > result.kept["rejected_score"]).all()


# -- within-prompt strategies --------------------------------------------------------------------------------

WITHIN = {
    "max_min": lambda j, seed: max_min(j, seed=seed),
    "max_random": lambda j, seed: max_random(j, seed=seed),
    "sweet_spot": lambda j, seed: sweet_spot(j, seed=seed),
}


def test_the_registry_knows_every_strategy_and_its_capabilities():
    assert list(WITHIN) == STRATEGIES.names(within_prompt=True)
    assert STRATEGIES.names(needs_generator_labels=True) == ["generator_delta"]
    assert STRATEGIES.names(unpaired=True) == ["kto_unpaired"]
    for entry in STRATEGIES:
        assert callable(strategy_function(entry.name)) and entry.help
        assert entry.settings is None or entry.settings in PairingConfig.__dataclass_fields__


@pytest.mark.parametrize("name", WITHIN)
@PROPERTY
@given(judged=judged_frames(), seed=st.integers(0, 5))
def test_chosen_never_scores_below_rejected_and_each_prompt_gives_one_pair(name, judged, seed):
    built = WITHIN[name](judged, seed)
    pairs = built.frame
    assert (pairs["chosen_score"] >= pairs["rejected_score"]).all()
    assert (pairs["chosen_id"] != pairs["rejected_id"]).all() and pairs["prompt_id"].is_unique
    usable = judged[judged["aggregate"].notna()].groupby("prompt_id").size()
    assert set(pairs["prompt_id"]) == set(usable[usable >= 2].index)
    assert set(built.short_prompts) == set(judged["prompt_id"]) - set(usable[usable >= 2].index)
    # the chosen is a maximum of its prompt's scores
    best = judged.groupby("prompt_id")["aggregate"].max()
    assert np.allclose(pairs["chosen_score"], best.reindex(pairs["prompt_id"]).to_numpy())


@pytest.mark.parametrize("name", WITHIN)
@PROPERTY
@given(judged=judged_frames(), seed=st.integers(0, 5))
def test_strategies_are_deterministic_and_ignore_row_order(name, judged, seed):
    first = WITHIN[name](judged, seed).frame
    shuffled = WITHIN[name](judged.sample(frac=1.0, random_state=seed).reset_index(drop=True), seed).frame
    pd.testing.assert_frame_equal(first, shuffled)


def test_max_random_rejects_a_random_other_candidate_and_the_seed_matters():
    rows = [(f"p{p}", "g", i, i / 10, i / 10) for p in range(200) for i in range(5)]
    judged = judgments(rows).flatten().to_pandas()
    picks = {seed: max_random(judged, seed=seed).frame for seed in (0, 1)}
    rejected_rank = picks[0]["rejected_id"].str[-1].astype(int)
    assert (picks[0]["chosen_id"].str[-1] == "4").all()  # the best
    counts = rejected_rank.value_counts()
    assert set(counts.index) == {0, 1, 2, 3} and counts.min() > 25  # roughly uniform over the other four
    assert not picks[0]["rejected_id"].equals(picks[1]["rejected_id"])


@PROPERTY
@given(judged=judged_frames(discrete=False, max_candidates=9), rejected_k=st.floats(-3, 3), seed=st.integers(0, 3))
def test_sweet_spot_picks_the_candidate_nearest_its_target(judged, rejected_k, seed):
    pairs = sweet_spot(judged, rejected_k=rejected_k, seed=seed).frame
    for _, pair in pairs.iterrows():
        scores = judged.loc[judged["prompt_id"] == pair["prompt_id"]].set_index("candidate_id")["aggregate"]
        mu, sigma = scores.mean(), scores.std(ddof=0)
        assert pair["chosen_score"] == scores.max()
        others = scores.drop(pair["chosen_id"])
        target = mu + rejected_k * sigma
        assert abs(pair["rejected_score"] - target) <= (others - target).abs().min() + 1e-9


@PROPERTY
@given(judged=judged_frames(), chosen_k=st.floats(-2, 2), seed=st.integers(0, 3))
def test_sweet_spot_chosen_position_is_nearest_too(judged, chosen_k, seed):
    pairs = sweet_spot(judged, chosen_k=chosen_k, rejected_k=-1.0, seed=seed).frame
    for _, pair in pairs.iterrows():
        scores = judged.loc[judged["prompt_id"] == pair["prompt_id"], "aggregate"].dropna()
        target = scores.mean() + chosen_k * scores.std(ddof=0)
        assert abs(pair["chosen_score"] - target) <= (scores - target).abs().min() + 1e-9


@PROPERTY
@given(judged=judged_frames(), seed=st.integers(0, 3))
def test_sweet_spot_at_plus_minus_1000_sigma_is_max_min(judged, seed):
    far = sweet_spot(judged, chosen_k=1000.0, rejected_k=-1000.0, seed=seed).frame
    extremes = max_min(judged, seed=seed).frame
    assert far["chosen_score"].tolist() == extremes["chosen_score"].tolist()
    assert far["rejected_score"].tolist() == extremes["rejected_score"].tolist()


def test_max_samples_uses_the_first_samples_of_each_generator():
    rows = [("p", "g", i, s, s) for i, s in enumerate([0.0, 1.0, 0.25, 0.5])]
    full = build_pairs(PairingConfig(strategy="max_min"), judgments(rows)).kept.iloc[0]
    first3 = build_pairs(PairingConfig(strategy="max_min", max_samples=3), judgments(rows)).kept.iloc[0]
    assert (full["prompt_candidates"], first3["prompt_candidates"]) == (4, 3)
    assert first3["rejected_id"] == "p/g/0" and "p/g/3" not in (first3["chosen_id"], first3["rejected_id"])


def test_positions_are_recorded_as_z_scores():
    rows = [("p", "g", i, s, s) for i, s in enumerate([0.0, 0.25, 0.5, 0.75, 1.0])]
    [pair] = sweet_spot(judgments(rows).flatten().to_pandas(), rejected_k=-1.0).frame.to_dict("records")
    sigma = np.std([0, 0.25, 0.5, 0.75, 1.0])
    assert pair["chosen_z"] == pytest.approx(0.5 / sigma) and pair["rejected_z"] == pytest.approx(-0.25 / sigma)
    assert pair["rejected_score"] == 0.25 and pair["prompt_candidates"] == 5  # mu - sigma = 0.146: nearest 0.25


# -- sample-level delta --------------------------------------------------------------------------------------


@PROPERTY
@given(
    gaps=st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]), min_size=1, max_size=80),
    fraction=st.floats(0.01, 1.0),
    min_gap=st.none() | st.sampled_from([0.0, 0.5]),
)
def test_filter_keeps_exactly_the_top_fraction(gaps, fraction, min_gap):
    pairs = pd.DataFrame({"pair_id": [f"q{i:03d}" for i in range(len(gaps))], "margin": gaps})
    kept = sample_delta_filter(pairs, top_fraction=fraction, min_gap=min_gap)
    eligible = pairs if min_gap is None else pairs[pairs["margin"] >= min_gap]
    assert len(kept) == math.ceil(Fraction(repr(fraction)) * len(eligible))
    dropped = eligible[~eligible["pair_id"].isin(kept["pair_id"])]
    if len(kept) and len(dropped):
        assert kept["margin"].min() >= dropped["margin"].max()
    assert kept["pair_id"].is_monotonic_increasing


def test_min_gap_then_top_fraction_on_a_dimension():
    result = build_pairs(
        PairingConfig(filter=DeltaFilterConfig(dimension="correctness", min_gap=0.0, top_fraction=0.5)),
        judgments(ROWS),
    )
    assert result.stats["pairs_kept"] == 1 and result.dataset[0]["pair_id"] == "p1/strong/0|p1/weak/0"
    assert "sample_delta(correctness:min_gap=0.0,top_fraction=0.5)" in result.dataset[0]["strategy"]
    assert result.stats["dropped_by_filter"] == 1


def test_unknown_filter_dimension_is_named():
    with pytest.raises(ConfigError, match="elegance"):
        build_pairs(PairingConfig(filter=DeltaFilterConfig(dimension="elegance", top_fraction=0.5)), judgments(ROWS))


# -- margin_bayes --------------------------------------------------------------------------------------------


def paper_fusion(m_ex: float, m_im: float, m1: float, m2_ex: float, m2_im: float) -> float:
    """Less is More, Eq. 3, written out scalar by scalar."""
    p_ex = (min(max(m_ex, m1), m2_ex) - m1) / (m2_ex - m1)
    p_im = (min(max(m_im, m1), m2_im) - m1) / (m2_im - m1)
    numerator = p_ex * p_im
    denominator = p_ex * p_im + (1 - p_ex) * (1 - p_im)
    return numerator / denominator if denominator else 0.5


@PROPERTY
@given(
    margins=st.lists(st.tuples(st.floats(-6, 6), st.floats(-6, 6)), min_size=1, max_size=60),
    m2=st.tuples(st.floats(-1.5, 5), st.floats(-1.5, 5)),
)
def test_fusion_matches_the_papers_formula(margins, m2):
    external, implicit = (np.array(x) for x in zip(*margins))
    fused, bounds = margin_bayes_scores(external, implicit, "mul", -2.0, m2[0], -2.0, m2[1])
    expected = [paper_fusion(e, i, -2.0, m2[0], m2[1]) for e, i in zip(external, implicit)]
    assert np.allclose(fused, expected, atol=1e-12)
    assert ((fused >= 0) & (fused <= 1)).all()
    added, _ = margin_bayes_scores(external, implicit, "add", -2.0, m2[0], -2.0, m2[1])
    assert np.allclose(added, external + implicit)


@PROPERTY
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=200), st.integers(1, 40))
def test_dynamic_upper_bound_is_the_highest_value_with_a_dense_tail(margins, min_tail):
    m = np.array(margins)
    dense = [v for v in np.unique(m) if v > -2.0 and (m >= v).sum() >= max(min_tail, m.max() - v)]
    expected = max(dense) if dense else (m.max() if m.max() > -2.0 else -1.0)
    assert dynamic_upper(m, -2.0, min_tail) == expected


def test_calibration_and_fusion_edges():
    assert calibrate(np.array([-5.0, -2.0, 0.0, 2.0, 9.0]), -2.0, 2.0).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert fuse_product([np.array([1.0, 0.5, 0.9]), np.array([0.0, 0.5, 0.9])]).tolist() == pytest.approx(
        [0.5, 0.5, 0.81 / (0.81 + 0.01)]
    )
    with pytest.raises(ValueError, match="high > low"):
        calibrate(np.array([0.0]), 1.0, 1.0)


def test_margin_bayes_keeps_the_top_fraction_by_fused_score():
    rows = [(f"p{p}", g, 0, c, c) for p in range(20) for g, c in (("strong", 1.0), ("weak", (p % 4) / 4))]
    judged = judgments(rows).flatten().to_pandas()
    base = build_pairs(PairingConfig(), judged).kept
    implicit = pd.Series(np.linspace(-3, 3, len(base)), index=base["pair_id"])
    cfg = PairingConfig(margin_bayes=MarginBayesConfig(top_fraction=0.25, min_tail=3, proxy=ProxyConfig(model="p")))
    result = build_pairs(cfg, judged, implicit)
    assert len(result.kept) == math.ceil(Fraction(1, 4) * len(base)) == result.stats["pairs_kept"]
    scored = result.scored.set_index("pair_id")
    assert (
        scored.loc[result.kept["pair_id"], "fused_score"].min()
        >= scored.drop(result.kept["pair_id"])["fused_score"].max()
    )
    assert result.stats["dropped_by_margin_bayes"] == len(base) - len(result.kept)
    assert result.kept["strategy"].str.endswith("+margin_bayes(mul,top=0.25)").all()
    with pytest.raises(ValueError, match="implicit margin"):
        build_pairs(cfg, judged)
    with pytest.raises(ValueError, match="no implicit margin"):
        build_pairs(cfg, judged, implicit.iloc[1:])


# -- reward augmentation and KTO -----------------------------------------------------------------------------

PAPER_TEXT = (
    "You are an assistant that generates responses for the instruction while implicitly achieving the "
    "following target scores (on a scale of 1-10, where 1 is lowest and 10 is highest):\nOverall score: {}."
)


def test_reward_augmented_doubles_and_flips_with_the_papers_text():
    cfg = PairingConfig(reward_augmented=RewardAugmentConfig(score_range=[0.0, 1.0]))
    result = build_pairs(cfg, judgments(ROWS[:2] + ROWS[4:6]))  # p1 agrees, p2 disagrees
    kept = result.kept.set_index("pair_id")
    assert len(kept) == 4 and result.stats["reward_augmented_rows"] == 2
    original, flipped = kept.loc["p1/strong/0|p1/weak/0"], kept.loc["p1/weak/0|p1/strong/0"]
    assert (original["chosen"], original["rejected"]) == (flipped["rejected"], flipped["chosen"])
    assert flipped["margin"] == -original["margin"] and flipped["margins.correctness"] == -1.0
    assert original["system"] == PAPER_TEXT.format("10")  # 1.0 -> 10
    assert flipped["system"] == PAPER_TEXT.format("5.5")  # 0.5 -> 5.5
    assert result.stats["reward_augmented_scores_clipped"] == 0


@pytest.mark.parametrize(
    "values, decimals, text",
    [
        ([10.0, 5.5, 3.25, 7.0, 1.04999, -0.0001, 100.0], 1, ["10", "5.5", "3.2", "7", "1", "0", "100"]),
        ([2.5, 9.9, 10.0, 0.2], 0, ["2", "10", "10", "0"]),
        ([3.14159], 3, ["3.142"]),
    ],
)
def test_scores_print_without_needless_decimals(values, decimals, text):
    assert format_score(np.array(values), decimals).tolist() == text


def test_reward_augmented_prefix_placement():
    cfg = PairingConfig(
        reward_augmented=RewardAugmentConfig(
            template="Score: {score} ({low}-{high}).", placement="prefix", target_range=[0.0, 1.0]
        )
    )
    kept = build_pairs(cfg, judgments(ROWS[:2])).kept
    assert sorted(kept["prompt"]) == ["Score: 0.5 (0-1).\n\nprompt p1", "Score: 1 (0-1).\n\nprompt p1"]
    assert "system" not in kept.columns


def test_kto_unpaired_labels_by_absolute_score_with_class_balance():
    cfg = PairingConfig(strategy="kto_unpaired", kto=KTOLabelConfig(desirable_min=0.75, undesirable_max=0.5))
    result = build_pairs(cfg, judgments(ROWS))
    frame = result.kept
    assert set(UNPAIRED) <= set(result.dataset.column_names)
    assert frame.loc[frame["label"], "score"].min() >= 0.75 and frame.loc[~frame["label"], "score"].max() < 0.5
    assert (
        result.stats["dropped_between_thresholds"] == int(((frame["score"] >= 0.5) & (frame["score"] < 0.75)).sum()) + 2
    )
    weights = frame.groupby("label")["class_weight"].sum()
    assert weights[True] == pytest.approx(weights[False]) == pytest.approx(len(frame) / 2)


def test_kto_unpaired_needs_both_classes():
    with pytest.raises(DataError, match="both classes"):
        build_pairs(PairingConfig(strategy="kto_unpaired", kto=KTOLabelConfig(desirable_min=-1.0)), judgments(ROWS))


@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(strategy="kto_unpaired", require_judge_agreement=True), "apply to pairs only"),
        (dict(generator_pairs=[]), "at least one entry"),
        (dict(generator_pairs=[GeneratorPair("a", "b"), GeneratorPair("a", "b")]), "repeated pairing"),
        (
            dict(strategy="max_mni"),
            r"^strategy: unknown pair strategy 'max_mni' \(did you mean 'max_min'\?\); expected "
            r"one of \['generator_delta', 'kto_unpaired', 'max_min', 'max_random', 'sweet_spot'\]$",
        ),
    ],
)
def test_inconsistent_pairing_configs_are_refused(cfg, message):
    with pytest.raises(ValueError, match=message):
        PairingConfig(**cfg)


def test_every_pairs_dataset_follows_the_schema():
    for strategy in STRATEGIES.names(unpaired=False):
        ds = build_pairs(PairingConfig(strategy=strategy), judgments(ROWS)).dataset
        assert set(PAIRS) <= set(ds.column_names), strategy


def test_a_dataset_missing_a_column_names_the_path_and_column(tmp_path):
    judgments(ROWS).remove_columns("aggregate").save_to_disk(str(tmp_path / "data"))
    with pytest.raises(DataError) as err:
        load_stage_dataset(tmp_path, JUDGMENTS, "judgments")
    assert str(tmp_path / "data") in str(err.value) and "'aggregate'" in str(err.value)


# -- degenerate inputs ---------------------------------------------------------------------------------------


def constant_prompts(values=(0.1, 0.7, 1 / 3), size=5):
    """Flattened judgments: one prompt per value, each with ``size`` candidates all scored that value."""
    rows = [(f"p{p}", f"g{i % 2}", i // 2, v, v) for p, v in enumerate(values) for i in range(size)]
    return judgments(rows).flatten().to_pandas()


def test_a_constant_prompt_has_sigma_exactly_zero_and_every_z_zero():
    judged = constant_prompts()
    cands = usable_candidates(judged)
    mean, std = prompt_moments(cands["aggregate"].to_numpy(float), Groups.of(cands))
    assert (std == 0).all() and (mean == cands["aggregate"]).all()  # a summed mean of 5 x 0.1 is not 0.1
    for name in WITHIN:
        pairs = WITHIN[name](judged, 0).frame
        assert len(pairs) == 3 and (pairs["chosen_z"] == 0).all() and (pairs["rejected_z"] == 0).all(), name


@pytest.mark.parametrize("name", WITHIN)
def test_choices_in_a_constant_prompt_are_seeded_not_float_noise(name):
    judged = constant_prompts(values=(0.1,), size=8)
    picks = {seed: WITHIN[name](judged, seed).frame.iloc[0] for seed in range(12)}
    assert len({(p["chosen_id"], p["rejected_id"]) for p in picks.values()}) > 3  # the seed decides
    for seed in (0, 1):
        shuffled = judged.sample(frac=1.0, random_state=seed + 7).reset_index(drop=True)
        again = WITHIN[name](shuffled, seed).frame.iloc[0]
        assert (again["chosen_id"], again["rejected_id"]) == (picks[seed]["chosen_id"], picks[seed]["rejected_id"])


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_on_empty_and_single_candidate_judgments(name):
    cfg = PairingConfig(strategy=name, generator_pairs=[GeneratorPair("g0", "g1")])
    single = judgments([("p0", "g0", 0, 1.0, 1.0)]).flatten().to_pandas()
    empty = strategy_function(name)(cfg, single.iloc[:0])
    assert empty.frame.empty and empty.short_prompts == [] and empty.unlabelled == 0
    one = strategy_function(name)(cfg, single)
    if STRATEGIES.get(name).unpaired:
        assert one.frame["class_weight"].tolist() == [1.0] and one.short_prompts == []
    else:
        assert one.frame.empty and one.short_prompts == ["p0"]


def test_kto_class_weights_for_one_class_and_none():
    judged = judgments(ROWS).flatten().to_pandas()
    one_class = kto_unpaired(judged, desirable_min=-1.0).frame
    assert one_class["label"].all() and (one_class["class_weight"] == 1.0).all()
    empty = kto_unpaired(judged.iloc[:0], desirable_min=0.5)
    assert empty.frame.empty and empty.unlabelled == 0
    both = kto_unpaired(judged, desirable_min=0.75)
    assert both.frame.groupby("label")["class_weight"].sum().tolist() == pytest.approx([len(both.frame) / 2] * 2)


def test_selections_and_relabelling_on_no_pairs():
    empty = generator_delta(judgments(ROWS).flatten().to_pandas(), [("strong", "weak")]).frame.iloc[:0]
    assert sample_delta_filter(empty, top_fraction=0.3, min_gap=0.0).empty
    augmented, clipped = reward_augment(empty, REWARD_AUGMENTED_TEMPLATE, score_range=[0.0, 1.0])
    assert augmented.empty and clipped == 0 and "system" in augmented.columns
    fused, info = margin_bayes_scores(np.array([]), np.array([]))
    assert fused.size == 0 and info["external_high"] == info["implicit_high"] == -1.0
    assert correlation(np.array([]), np.array([])) is None


def test_margin_bayes_with_constant_margins():
    implicit = np.array([-3.0, -1.0, 0.0, 1.0, 4.0])
    constant = np.full(5, 0.7)
    fused, info = margin_bayes_scores(constant, implicit, min_tail=2)
    expected = calibrate(implicit, -2.0, info["implicit_high"])
    assert info["constant_sources"] == ["external"] and np.allclose(fused, expected)  # P_ex = 0.5: P_im decides
    fused, info = margin_bayes_scores(constant, np.full(5, -9.0))
    assert info["constant_sources"] == ["external", "implicit"] and (fused == 0.5).all()
    fused, _ = margin_bayes_scores(constant, implicit, external_high=0.5, implicit_high=2.0)  # given bounds: Eq. 3
    assert fused.tolist() == pytest.approx([paper_fusion(0.7, m, -2.0, 0.5, 2.0) for m in implicit])
    assert dynamic_upper(np.full(4, -5.0), -2.0) == -1.0 and dynamic_upper(np.full(40, 3.0), -2.0) == 3.0
    assert correlation(constant, implicit) is None and correlation(np.full(3, 0.1), np.full(3, 0.1)) is None
    assert correlation(implicit, 2 * implicit) == pytest.approx(1.0)


def test_margin_bayes_refuses_missing_numbers():
    rows = [(f"p{p}", g, 0, c, c) for p in range(6) for g, c in (("strong", 1.0), ("weak", p / 10))]
    judged = judgments(rows).flatten().to_pandas()
    base = build_pairs(PairingConfig(), judged).kept
    implicit = pd.Series(np.r_[np.nan, np.zeros(len(base) - 1)], index=base["pair_id"])
    cfg = PairingConfig(margin_bayes=MarginBayesConfig(min_tail=2, proxy=ProxyConfig(model="p")))
    with pytest.raises(DataError, match=r"margin_bayes: 1 of 6 implicit margins are not finite"):
        build_pairs(cfg, judged, implicit)


# -- reward augmentation: the printed score lies on the stated scale ------------------------------------------

TEMPLATES = {
    "paper": (
        REWARD_AUGMENTED_TEMPLATE,
        r"on a scale of (?P<low>[-\d.]+)-(?P<high>[-\d.]+), where (?P=low) is lowest "
        r"and (?P=high) is highest\):\nOverall score: (?P<score>[-\d.]+)\.$",
    ),
    "short": ("Score {score} of {low}-{high}.", r"^Score (?P<score>[-\d.]+) of (?P<low>[-\d.]+)-(?P<high>[-\d.]+)\.$"),
    "scale first": ("[{low}, {high}] {score}", r"^\[(?P<low>[-\d.]+), (?P<high>[-\d.]+)\] (?P<score>[-\d.]+)$"),
}


@pytest.mark.parametrize("name", TEMPLATES)
@PROPERTY
@given(
    judged=judged_frames(discrete=False),
    placement=st.sampled_from(["system", "prefix"]),
    target=st.sampled_from([[1.0, 10.0], [1.0, 5.0], [0.0, 1.0], [-1.0, 1.0], [0.5, 2.5]]),
    score_range=st.sampled_from([None, [-5.0, 5.0], [-1.0, 1.0], [0.0, 3.0]]),
    decimals=st.integers(0, 3),
)
def test_printed_scores_lie_on_the_stated_scale(name, judged, placement, target, score_range, decimals):
    template, pattern = TEMPLATES[name]
    if decimals == 0 and target == [0.5, 2.5]:
        with pytest.raises(ValueError, match="must print exactly"):
            RewardAugmentConfig(template=template, target_range=target, decimals=decimals)
        return
    cfg = RewardAugmentConfig(
        template=template, placement=placement, score_range=score_range, target_range=target, decimals=decimals
    )
    pairs = max_min(judged).frame
    try:
        rows, clipped = reward_augment(
            pairs, cfg.template, cfg.placement, cfg.score_range, cfg.target_range, cfg.decimals
        )
    except ConfigError as err:
        scores = np.r_[pairs["chosen_score"], pairs["rejected_score"]]
        assert score_range is None and ((scores < target[0]) | (scores > target[1])).any()
        assert str(err).startswith("pairing.reward_augmented.score_range: null prints the scores unchanged")
        assert "\n" not in str(err)
        return
    texts = rows["system"] if placement == "system" else rows["prompt"].str.split("\n\n").str[0]
    for text, condition in zip(texts, rows["condition_score"]):
        match = re.search(pattern, text)
        assert match, text
        low, high, score = (float(match[k]) for k in ("low", "high", "score"))
        assert (low, high) == tuple(target) and low <= score <= high and score == condition
        assert len(match["score"].partition(".")[2]) <= decimals
    if score_range is not None:
        outside = (rows["chosen_score"] < score_range[0]) | (rows["chosen_score"] > score_range[1])
        assert clipped == int(outside.sum())


def test_the_default_template_reads_as_the_paper_at_the_default_scale():
    pairs = max_min(judgments(ROWS[:2]).flatten().to_pandas()).frame.assign(chosen_score=7.0, rejected_score=3.0)
    rows, _ = reward_augment(pairs, REWARD_AUGMENTED_TEMPLATE)
    assert sorted(rows["system"]) == [PAPER_TEXT.format("3"), PAPER_TEXT.format("7")]


@pytest.mark.parametrize("template", ["Score {score}.", "Score {score} of {high}.", "{low}-{high}"])
def test_a_template_must_state_its_scale(template):
    with pytest.raises(ValueError, match=r"^template: must contain '\{score\}', '\{low\}' and '\{high\}'"):
        RewardAugmentConfig(template=template)
