"""Unit tests of the hybrid retrieve-and-rank parts: co-visitation, candidates, the ranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.models.hybrid import (
    CandidateSizes,
    CoVisitation,
    candidate_columns,
    fit_hybrid_ranker,
)


def _covis() -> CoVisitation:
    # Items 0..5; two users.
    return CoVisitation.from_sequences([np.array([0, 1, 2]), np.array([1, 2, 3, 0])], 6, window=2)


def test_transitions_count_followers_by_gap() -> None:
    t = _covis().transitions.toarray()
    assert t[0, 1] == pytest.approx(1.0)  # 0 -> 1 at gap 1 (user 0)
    assert t[0, 2] == pytest.approx(0.5)  # 0 -> 2 at gap 2 (user 0)
    assert t[1, 2] == pytest.approx(2.0)  # gap 1 in both users
    assert t[1, 3] == pytest.approx(0.5)
    assert t[2, 1] == 0.0  # order matters
    assert t[4].sum() == 0.0
    assert t[:, 4].sum() == 0.0


def test_knn_scores_are_itemknn_cosine_and_transitions_weight_recency() -> None:
    covis = _covis()
    ids = np.arange(6)
    knn, trans = covis.scores([np.array([3])], ids)
    # Item 3 co-occurs only with user 1's items {0, 1, 2, 3}: n_3 = 1, n_0 = n_1 = n_2 = 2.
    assert knn[0, 0] == pytest.approx(1 / np.sqrt(2))
    assert knn[0, 4] == 0.0
    knn, trans = covis.scores([np.array([1, 2])], ids)
    # The last item (2) weighs 1, the one before (1) weighs 1/2.
    expected = covis.transitions.toarray()[2] + 0.5 * covis.transitions.toarray()[1]
    assert np.allclose(trans[0], expected)


def test_scores_of_items_added_after_counting_are_zero() -> None:
    covis = _covis()
    knn, trans = covis.scores([np.array([1])], np.array([2, 6, 7]))
    assert knn[0, 0] > 0
    assert trans[0, 0] > 0
    assert not knn[0, 1:].any()
    assert not trans[0, 1:].any()


def test_counts_round_trip_through_tensors() -> None:
    covis = _covis()
    again = CoVisitation.from_tensors(covis.tensors())
    ids = np.arange(6)
    ctx = [np.array([0, 3])]
    for a, b in zip(covis.scores(ctx, ids), again.scores(ctx, ids), strict=True):
        assert np.array_equal(a, b)


def test_candidates_come_from_every_source_once_and_never_seen() -> None:
    n = 30
    tower = torch.arange(n, dtype=torch.float).unsqueeze(0)  # best: 29, 28, ...
    knn = torch.zeros(1, n)
    knn[0, 3] = 5.0
    trans = torch.zeros(1, n)
    trans[0, 4] = 5.0
    pop = torch.zeros(n)
    pop[5] = 9.0
    seen = torch.zeros(1, n, dtype=torch.bool)
    seen[0, 29] = True
    cols, first = candidate_columns(tower, knn, trans, pop, CandidateSizes(3, 1, 1), seen)
    kept = cols[first].tolist()
    assert len(kept) == len(set(kept))
    assert {28, 27, 26, 3, 4, 5} <= set(kept)
    assert 29 not in kept


def test_ranker_learns_which_feature_predicts_the_answer() -> None:
    # Feature 0 (say the tower) is noise; feature 1 (say co-visitation) marks the answer.
    gen = torch.Generator().manual_seed(0)
    cases, cands = 600, 20
    features = torch.randn(cases, cands, 3, generator=gen)
    labels = torch.randint(cands, (cases,), generator=gen)
    rows = torch.arange(cases)
    features[rows, labels, 1] += 2.5
    mask = torch.ones(cases, cands, dtype=torch.bool)
    ranker, losses = fit_hybrid_ranker(features[:400], mask[:400], labels[:400], epochs=30)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        top = ranker(features[400:]).argmax(1)
    accuracy = float((top == labels[400:]).float().mean())
    by_feature0 = float((features[400:, :, 0].argmax(1) == labels[400:]).float().mean())
    assert accuracy > 0.5 > by_feature0 + 0.3


def test_streamed_sequences_add_to_the_counts() -> None:
    covis = _covis()
    more = covis.with_sequences([np.array([4, 5]), np.array([5, 99])])  # 99: not counted
    assert more.counts[5] == covis.counts[5] + 2
    assert more.transitions[4, 5] == covis.transitions[4, 5] + 1.0
    assert more.user_item.shape[0] == covis.user_item.shape[0] + 2
    knn, _ = more.scores([np.array([4])], np.arange(6))
    assert knn[0, 5] > 0.0


def test_cold_candidates_keep_their_two_tower_place_on_the_ranker_scale() -> None:
    from crossrec.models.crossrec_model import _rank_match

    tower = torch.tensor([[5.0, 4.0, 3.0, 2.0, 6.0, 3.5, 1.0]])
    ranker = torch.tensor([[10.0, 30.0, 20.0, 0.0, 0.0, 0.0, 0.0]])
    warm = torch.tensor([[True, True, True, True, False, False, False]])
    placed = _rank_match(tower, ranker, warm)[0]
    assert placed[4] > 30.0  # the tower's best item, cold: first
    assert 10.0 < placed[5] < 20.0  # third by the tower (5, 4 above it): third
    assert placed[6] < 0.0  # last by the tower: last
