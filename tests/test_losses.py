from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from prefopt.registry import UnknownName
from prefopt.training import losses as L
from prefopt.training.losses.offset import gap_offset_dpo
from prefopt.training.losses.soft_label import soft_label_dpo
from prefopt.training.losses.weighted import gap_weighted_dpo

floats = st.floats(-5, 5, allow_nan=False, width=32)
vectors = st.lists(floats, min_size=1, max_size=16).map(lambda xs: torch.tensor(xs, dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(vectors)
def test_weight_one_offset_zero_and_hard_label_are_plain_dpo(h):
    dpo = L.dpo_sigmoid(h, 0.1)
    assert torch.allclose(dpo, -torch.log(torch.sigmoid(0.1 * h)))
    assert torch.allclose(gap_weighted_dpo(h, 0.1, torch.ones_like(h)), dpo)
    assert torch.allclose(gap_offset_dpo(h, 0.1, torch.zeros_like(h)), dpo)
    assert torch.allclose(soft_label_dpo(h, 0.1, torch.ones_like(h)), dpo)


@settings(max_examples=50, deadline=None)
@given(vectors, vectors)
def test_registered_losses_are_their_formulas(h, gap):
    n = min(len(h), len(gap))
    h, gap = h[:n], gap[:n]
    cfg = SimpleNamespace(
        gap_transform="tanh", gap_scale=2.0, gap_clip_min=0.0, gap_clip_max=1.0, offset_alpha=0.5, soft_label_tau=0.3
    )
    weights = torch.rand(n, dtype=h.dtype)
    loss = {e.name: e.target(h, 0.1, gap, weights, cfg) for e in L.PAIR_LOSSES}
    assert torch.equal(loss["stock"], L.dpo_sigmoid(h, 0.1)) and torch.equal(loss["sigmoid"], L.dpo_sigmoid(h, 0.1))
    assert torch.allclose(loss["weighted"], weights * L.dpo_sigmoid(h, 0.1))
    assert torch.allclose(loss["offset"], -F.logsigmoid(0.1 * h - 0.5 * torch.tanh(2 * gap.clamp_min(0))))
    assert torch.allclose(loss["soft_label"], soft_label_dpo(h, 0.1, torch.sigmoid(gap / 0.3)))


@settings(max_examples=50, deadline=None)
@given(vectors)
def test_gap_transforms(gap):
    assert torch.equal(L.transform_gap(gap, "none"), torch.ones_like(gap))
    assert torch.allclose(L.transform_gap(gap, "linear", scale=2.0), 2 * gap)
    clipped = L.transform_gap(gap, "clipped", scale=1.0, clip_min=0.1, clip_max=0.9)
    assert clipped.min() >= 0.1 and clipped.max() <= 0.9
    assert torch.allclose(L.transform_gap(gap, "tanh"), torch.tanh(gap))


def test_unknown_gap_transforms_and_losses_list_the_valid_names():
    with pytest.raises(UnknownName, match=r"unknown gap transform 'sqrt'; expected one of \['none', 'linear'"):
        L.transform_gap(torch.zeros(2), "sqrt")
    with pytest.raises(UnknownName, match="did you mean 'weighted'"):
        L.PAIR_LOSSES.get("wieghted")
    assert L.PAIR_LOSSES.names() == ["offset", "sigmoid", "soft_label", "stock", "weighted"]  # sorted
    assert L.PAIR_LOSSES.names(uses_gap=True) == ["offset", "soft_label", "weighted"]
    assert L.PAIR_LOSSES.names(replaces_trl=False) == ["stock"]


def test_a_larger_offset_demands_a_larger_margin():
    h = torch.tensor([1.0, 1.0])
    low, high = gap_offset_dpo(h, 1.0, torch.tensor([0.0, 2.0]))
    assert high > low


def test_soft_label_is_minimised_where_the_policy_matches_the_target():
    q = torch.tensor(0.8)
    hs = torch.linspace(-5, 5, 1001)
    best = hs[soft_label_dpo(hs, 1.0, q.expand_as(hs)).argmin()]
    assert abs(torch.sigmoid(best) - q) < 0.01


def test_hybrid_routes_small_margin_pairs_to_length_normalised_nll():
    dpo = torch.tensor([0.5, 0.6, 0.7])
    nll = L.length_normalized_nll(torch.tensor([-8.0, -3.0, -9.0]), torch.tensor([4, 3, 0]))
    assert torch.allclose(nll, torch.tensor([2.0, 1.0, 9.0]))  # a zero length counts as 1
    mixed = L.hybrid_dpo_sft(dpo, nll, torch.tensor([True, False, True]))
    assert torch.allclose(mixed, torch.tensor([2.0, 0.6, 9.0]))
