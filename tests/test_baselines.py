from __future__ import annotations

import pytest

from crossrec.baselines import BASELINES, make_baseline
from crossrec.baselines.itemknn import ItemKNNRecommender
from crossrec.baselines.popularity import PopularityRecommender
from crossrec.baselines.sasrec import SASRecRecommender, SASRecSettings
from crossrec.baselines.text_zero_shot import TextZeroShotRecommender
from crossrec.config import CrossRecConfig, EncoderConfig, EvalConfig
from crossrec.data.splits import Split
from crossrec.errors import CrossRecError
from crossrec.evaluation import TargetDomainEvaluator


def _ndcg(split: Split, model: object, slice_name: str = "all") -> float:
    rows = TargetDomainEvaluator(split, EvalConfig(protocols=["full"])).evaluate(model)  # type: ignore[arg-type]
    return next(r.metrics["ndcg@10"] for r in rows if r.slice == slice_name)


def _random_ndcg(split: Split) -> float:
    # Expected NDCG@10 of a random ranking over ~all domain items, for reference.
    n = split.dataset.num_domain_items("films")
    import math

    return sum(1 / math.log2(r + 2) for r in range(10)) / n


@pytest.fixture(scope="module")
def popularity(small_split: Split) -> PopularityRecommender:
    model = PopularityRecommender()
    model.fit(small_split)
    return model


def test_popularity_scores_training_counts(
    small_split: Split, popularity: PopularityRecommender
) -> None:
    ds = small_split.dataset
    counts = small_split.train_item_counts()
    scores = popularity.score(small_split.test[:3], "films")
    films = ds.domain_items("films")
    assert scores.shape == (3, len(films))
    assert scores[0].tolist() == [float(counts[g]) for g in films]
    assert _ndcg(small_split, popularity) > 2 * _random_ndcg(small_split)


def test_itemknn_uses_cross_domain_cooccurrence(
    small_split: Split, popularity: PopularityRecommender
) -> None:
    model = ItemKNNRecommender()
    model.fit(small_split)
    assert _ndcg(small_split, model) > _ndcg(small_split, popularity)
    # Cold-start users have only books, yet book-film co-occurrence still ranks films.
    assert _ndcg(small_split, model, "cold-users") > _random_ndcg(small_split) * 2


def test_sasrec_learns_target_sequences(
    small_split: Split, popularity: PopularityRecommender
) -> None:
    model = SASRecRecommender(SASRecSettings(max_epochs=8, patience=3, dim=32, batch_size=64))
    model.fit(small_split)
    history = model.history["films"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert _ndcg(small_split, model) > _ndcg(small_split, popularity) * 0.8
    # It was trained on target items only, so cold-start items are out of its reach.
    assert _ndcg(small_split, model, "cold-items") == 0.0


def test_sasrec_is_deterministic(small_split: Split) -> None:
    settings = SASRecSettings(max_epochs=2, dim=16, batch_size=64)
    a, b = SASRecRecommender(settings), SASRecRecommender(settings)
    a.fit(small_split)
    b.fit(small_split)
    cases = small_split.test[:5]
    assert (a.score(cases, "films") == b.score(cases, "films")).all()


def test_text_zero_shot_serves_cold_items_and_users(small_split: Split) -> None:
    model = TextZeroShotRecommender(EncoderConfig())
    model.fit(small_split)
    random = _random_ndcg(small_split)
    assert _ndcg(small_split, model) > 2 * random
    assert _ndcg(small_split, model, "cold-items") > 0.0
    assert _ndcg(small_split, model, "cold-users") > 2 * random


def test_make_baseline_names() -> None:
    cfg = CrossRecConfig()
    assert [make_baseline(n, cfg).name for n in BASELINES] == list(BASELINES)
    with pytest.raises(CrossRecError, match="unknown baseline"):
        make_baseline("bpr", cfg)
