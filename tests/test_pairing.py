import math

import pandas as pd
import pytest
from datasets import Dataset

from prefopt.configs import DeltaFilterConfig, PairingConfig
from prefopt.pairing.build import build_pairs
from prefopt.pairing.strategies import generator_delta, sample_delta_filter
from prefopt.schemas import JUDGMENTS, DataError, load_stage_dataset


def judgments(rows):
    """rows: (prompt_id, generator, sample_index, correctness, format) -> a judgments dataset."""
    return Dataset.from_list([
        {"candidate_id": f"{p}/{g}/{i}", "prompt_id": p, "prompt": f"prompt {p}", "reference": None,
         "generator": g, "model": g, "sample_index": i, "completion": f"{g} says {p}.{i}", "finish_reason": "stop",
         "sampling": {"temperature": 1.0}, "judge": "v",
         "scores": {"correctness": c, "format": f},
         "aggregate": None if c is None else (c + f) / 2, "raw_judgment": "", "parse_status": "ok"}
        for p, g, i, c, f in rows
    ])


ROWS = [
    ("p1", "strong", 0, 1.0, 1.0), ("p1", "weak", 0, 0.0, 1.0),
    ("p1", "strong", 1, 1.0, 1.0), ("p1", "weak", 1, 1.0, 1.0),      # tie
    ("p2", "strong", 0, 0.0, 0.0), ("p2", "weak", 0, 1.0, 1.0),      # judge disagrees
    ("p3", "strong", 0, 1.0, 1.0), ("p3", "weak", 0, None, None),    # weak unjudged
    ("p4", "strong", 0, 1.0, 0.0),                                   # no weak candidate at all
]


def test_generator_delta_pairs_samples_by_index_and_records_margins():
    pairs = generator_delta(judgments(ROWS).flatten().to_pandas(), "strong", "weak")
    assert pairs["pair_id"].tolist() == ["p1/strong/0|p1/weak/0", "p1/strong/1|p1/weak/1", "p2/strong/0|p2/weak/0"]
    assert pairs["margin"].tolist() == [0.5, 0.0, -1.0]
    assert pairs["margins.correctness"].tolist() == [1.0, 0.0, -1.0]
    assert pairs["judge_agrees"].tolist() == [True, False, False]
    assert (pairs["chosen_generator"] == "strong").all() and (pairs["rejected_generator"] == "weak").all()
    assert pairs["chosen"].str.startswith("strong").all() and pairs["rejected"].str.startswith("weak").all()


def test_build_pairs_accounts_for_every_drop():
    ds, stats = build_pairs(PairingConfig(require_judge_agreement=True), judgments(ROWS))
    assert stats["pairs_built"] == 3 and stats["pairs_kept"] == 1 == len(ds)
    assert stats["ties"] == 1 and stats["judge_disagreements"] == 1 and stats["dropped_by_agreement_gate"] == 2
    assert stats["unjudged_candidates"] == 1
    assert stats["prompts_without_generator"] == {"strong": 0, "weak": 1}
    assert ds[0]["chosen_scores"] == {"correctness": 1.0, "format": 1.0}
    assert ds[0]["margins"] == {"correctness": 1.0, "format": 0.0}


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.99, 1.0])
def test_top_fraction_keeps_exactly_the_largest_gaps(fraction):
    pairs = pd.DataFrame({"pair_id": [f"q{i:02d}" for i in range(40)], "margin": [(i * 7) % 13 for i in range(40)]})
    kept = sample_delta_filter(pairs, top_fraction=fraction)
    assert len(kept) == math.ceil(fraction * 40)
    dropped = pairs[~pairs["pair_id"].isin(kept["pair_id"])]
    if len(dropped):
        assert kept["margin"].min() >= dropped["margin"].max()


def test_min_gap_then_top_fraction_on_a_dimension():
    ds, stats = build_pairs(
        PairingConfig(filter=DeltaFilterConfig(dimension="correctness", min_gap=0.0, top_fraction=0.5)),
        judgments(ROWS),
    )
    assert stats["pairs_kept"] == 1 and ds[0]["pair_id"] == "p1/strong/0|p1/weak/0"
    assert "sample_delta(correctness:min_gap=0.0,top_fraction=0.5)" in ds[0]["strategy"]


def test_unknown_filter_dimension_is_named():
    with pytest.raises(ValueError, match="elegance"):
        build_pairs(PairingConfig(filter=DeltaFilterConfig(dimension="elegance", top_fraction=0.5)), judgments(ROWS))


def test_a_dataset_missing_a_column_names_the_path_and_column(tmp_path):
    judgments(ROWS).remove_columns("aggregate").save_to_disk(str(tmp_path / "data"))
    with pytest.raises(DataError) as err:
        load_stage_dataset(tmp_path, JUDGMENTS, "judgments")
    assert str(tmp_path / "data") in str(err.value) and "'aggregate'" in str(err.value)
