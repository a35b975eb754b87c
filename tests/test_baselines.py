from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from crossrec.baselines import BASELINES, make_baseline
from crossrec.baselines.itemknn import ItemKNNRecommender
from crossrec.baselines.popularity import PopularityRecommender
from crossrec.baselines.sasrec import (
    MixedSASRecRecommender,
    SASRecNetwork,
    SASRecRecommender,
    _full_softmax_sum,
    _left_pad,
)
from crossrec.baselines.text_zero_shot import TextZeroShotRecommender
from crossrec.config import CrossRecConfig, EncoderConfig, EvalConfig, SASRecConfig, load_config
from crossrec.data.splits import Split
from crossrec.errors import ConfigError, CrossRecError
from crossrec.evaluation import TargetDomainEvaluator

# Small and quick, yet enough optimizer steps for the synthetic world's sequences to be learned.
FAST_SASREC = {
    "dim": 32,
    "dropout": 0.2,
    "lr": 3e-3,
    "batch_size": 32,
    "max_epochs": 12,
    "min_epochs": 12,
    "patience": 1,
}


def _ndcg(split: Split, model: object, slice_name: str = "all") -> float:
    rows = TargetDomainEvaluator(split, EvalConfig(protocols=["full"])).evaluate(model)  # type: ignore[arg-type]
    return next(r.metrics["ndcg@10"] for r in rows if r.slice == slice_name)


def _random_ndcg(split: Split) -> float:
    # Expected NDCG@10 of a random ranking over ~all domain items, for reference.
    n = split.dataset.num_domain_items("films")
    return sum(1 / math.log2(r + 2) for r in range(10)) / n


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These models are tiny: a second intra-op thread only adds synchronisation, which on a
    # busy machine costs far more than it saves.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    model = SASRecRecommender(SASRecConfig(**FAST_SASREC))
    model.fit(small_split)
    assert model.loss_kind == {"films": "full"}
    history = model.history["films"]
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    assert max(r["valid_ndcg@10"] for r in history) > history[0]["valid_ndcg@10"] * 2
    # Well above popularity on held-out test cases, not merely level with it.
    assert _ndcg(small_split, model) > 2 * _ndcg(small_split, popularity)


def test_sasrec_mixed_reads_other_domains(
    small_split: Split, popularity: PopularityRecommender
) -> None:
    # Books (240 items) above the full-softmax limit, films (160) at it: both loss paths train.
    settings = SASRecConfig(**FAST_SASREC, full_softmax_max_items=160, num_negatives=64)
    model = MixedSASRecRecommender(settings)
    model.fit(small_split)
    assert model.loss_kind == {"books": "sampled", "films": "full"}
    assert _ndcg(small_split, model) > 2 * _ndcg(small_split, popularity)
    # Cold-start users have no film history: only their books can speak for them.
    assert _ndcg(small_split, model, "cold-users") > 2 * _ndcg(
        small_split, popularity, "cold-users"
    )
    scores = model.score(small_split.test[:4], "films")
    assert scores.shape == (4, small_split.dataset.num_domain_items("films"))


def test_sasrec_sampled_softmax_learns_above_the_limit(
    small_split: Split, popularity: PopularityRecommender
) -> None:
    settings = SASRecConfig(**FAST_SASREC, full_softmax_max_items=159, num_negatives=32)
    model = SASRecRecommender(settings)
    model.fit(small_split)
    assert model.loss_kind == {"films": "sampled"}
    assert _ndcg(small_split, model) > 2 * _ndcg(small_split, popularity)


def test_fused_full_softmax_matches_cross_entropy() -> None:
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    w = torch.randn(50, 8, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    expected = F.cross_entropy(h @ w.T, y, reduction="sum")
    grad_h, grad_w = torch.autograd.grad(expected, [h, w])
    # A 200-float buffer holds 4 positions' logits: the loss is computed in 10 chunks.
    loss = _full_softmax_sum(h, w, y, torch.empty(200)) * 2.0
    got_h, got_w = torch.autograd.grad(loss, [h, w])
    assert torch.allclose(loss, expected * 2.0, rtol=1e-5)
    assert torch.allclose(got_h, grad_h * 2.0, rtol=1e-4, atol=1e-5)
    assert torch.allclose(got_w, grad_w * 2.0, rtol=1e-4, atol=1e-5)


def test_sasrec_windows_equal_prefixes() -> None:
    # Positions count from each row's first item and padding is masked, so the output at step t
    # of a (padded) sequence is the output of its t-item prefix: windows train every prefix.
    torch.manual_seed(0)
    net = SASRecNetwork(20, SASRecConfig(dim=16, max_len=8)).eval()
    seq = np.array([3, 5, 7, 2, 9])
    full = net(_left_pad([seq], 8))[0, 3:]
    for t in range(1, 6):
        alone = net(_left_pad([seq[:t]], t))[0, -1]
        assert torch.allclose(alone, full[t - 1], atol=1e-5)


def test_sasrec_is_deterministic(small_split: Split) -> None:
    settings = SASRecConfig(max_epochs=2, min_epochs=1, dim=16, batch_size=64)
    a, b = SASRecRecommender(settings), SASRecRecommender(settings)
    a.fit(small_split)
    b.fit(small_split)
    cases = small_split.test[:5]
    assert (a.score(cases, "films") == b.score(cases, "films")).all()


def test_sasrec_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["baselines.sasrec.dropout=1.5"])
    assert info.value.field == "baselines.sasrec.dropout"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["baselines.sasrec.dim=30", "baselines.sasrec.num_heads=4"])
    assert info.value.field.startswith("baselines.sasrec")
    assert "num_heads" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(None, ["baselines.sasrec.negatives=5"])
    assert info.value.field == "baselines.sasrec.negatives"


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
    assert "sasrec-mixed" in BASELINES
    with pytest.raises(CrossRecError, match="unknown baseline"):
        make_baseline("bpr", cfg)


def test_sasrec_takes_its_own_config() -> None:
    cfg = load_config(None, ["baselines.sasrec.dropout=0.3", "model.dropout=0.1"])
    for name in ("sasrec", "sasrec-mixed"):
        model = make_baseline(name, cfg)
        assert isinstance(model, SASRecRecommender | MixedSASRecRecommender)
        assert model.s.dropout == 0.3


def test_baselines_come_from_one_registry() -> None:
    from crossrec.baselines import BASELINES, make_baseline, register_baseline
    from crossrec.config import CrossRecConfig
    from crossrec.errors import CrossRecError

    cfg = CrossRecConfig()
    assert BASELINES == ("popularity", "itemknn", "sasrec", "sasrec-mixed", "text-zero-shot")
    assert make_baseline("itemknn", cfg).max_history == cfg.model.max_history  # type: ignore[attr-defined]
    with pytest.raises(CrossRecError, match="unknown baseline 'knn'; expected one of: popularity"):
        make_baseline("knn", cfg)
    with pytest.raises(ValueError, match="baseline 'sasrec' is already registered"):
        register_baseline("sasrec", "elsewhere:Thing")
