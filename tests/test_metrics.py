from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.ranking_metrics import (
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    target_ranks,
)


def test_hand_computed_case() -> None:
    # Row 0: target (col 2) has the 3rd best score -> rank 2.
    # Row 1: target (col 0) is best once col 1 (higher) is excluded -> rank 0.
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.1], [0.3, 0.7, 0.2, 0.1]])
    targets = torch.tensor([2, 0])
    exclude = torch.tensor([[False, False, False, False], [False, True, False, False]])
    ranks = target_ranks(scores, targets, exclude)
    assert ranks.tolist() == [2, 0]
    m = metrics_from_ranks(ranks, [1, 3])
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert m["ndcg@1"] == pytest.approx(0.5)


def test_ties_count_against_the_target() -> None:
    scores = torch.zeros(1, 5)
    assert target_ranks(scores, torch.tensor([3])).tolist() == [4]


def test_cutoff_zero_outside_top_k() -> None:
    ranks = torch.tensor([10])
    assert recall_at_k(ranks, 10).item() == 0.0
    assert ndcg_at_k(ranks, 10).item() == 0.0
    assert mrr_at_k(ranks, 10).item() == 0.0
    assert recall_at_k(ranks, 11).item() == 1.0


def test_nan_scores_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))


score_rows = st.lists(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=30),
    min_size=1,
    max_size=8,
).filter(lambda rows: len({len(r) for r in rows}) == 1)


@settings(max_examples=60, deadline=None)
@given(rows=score_rows, data=st.data())
def test_perfect_ranking_scores_one(rows: list[list[float]], data: st.DataObject) -> None:
    scores = torch.tensor(rows)
    n = scores.shape[1]
    targets = torch.tensor([data.draw(st.integers(0, n - 1)) for _ in rows])
    # Make each target strictly the best.
    scores[torch.arange(len(rows)), targets] = scores.max() + 1.0
    m = metrics_from_ranks(target_ranks(scores, targets), [1, 10])
    assert all(v == pytest.approx(1.0) for v in m.values())


@settings(max_examples=60, deadline=None)
@given(rows=score_rows, data=st.data())
def test_invariant_to_relabelling_items(rows: list[list[float]], data: st.DataObject) -> None:
    scores = torch.tensor(rows)
    n = scores.shape[1]
    targets = torch.tensor([data.draw(st.integers(0, n - 1)) for _ in rows])
    perm = torch.tensor(data.draw(st.permutations(list(range(n)))))
    inverse = torch.argsort(perm)
    before = target_ranks(scores, targets)
    after = target_ranks(scores[:, perm], inverse[targets])
    assert before.tolist() == after.tolist()


@settings(max_examples=60, deadline=None)
@given(rows=score_rows, data=st.data(), k=st.integers(1, 40))
def test_metrics_bounded(rows: list[list[float]], data: st.DataObject, k: int) -> None:
    scores = torch.tensor(rows)
    n = scores.shape[1]
    targets = torch.tensor([data.draw(st.integers(0, n - 1)) for _ in rows])
    ranks = target_ranks(scores, targets)
    nd, rr, rc = ndcg_at_k(ranks, k), mrr_at_k(ranks, k), recall_at_k(ranks, k)
    assert bool(((nd >= 0) & (nd <= 1)).all())
    assert bool((rr <= nd + 1e-12).all())  # 1/(r+1) <= 1/log2(r+2) for r >= 0
    assert bool((nd <= rc).all())
