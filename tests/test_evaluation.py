from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from crossrec.config import EvalConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.errors import EvaluationError
from crossrec.evaluation import TargetDomainEvaluator, format_rows
from crossrec.recommender import Recommender


class Oracle(Recommender):
    """Knows every answer: the target scores highest."""

    name = "oracle"

    def __init__(self, split: Split, worst: bool = False) -> None:
        self.split = split
        self.worst = worst

    def fit(self, split: Split) -> None:
        pass

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        ds = self.split.dataset
        offset = int(ds.offsets[ds.domain_index[domain]])
        scores = torch.rand(len(cases), ds.num_domain_items(domain))
        for b, c in enumerate(cases):
            scores[b, c.target - offset] = -5.0 if self.worst else 5.0
        return scores


class SeenLover(Recommender):
    """Ranks the items a user has already seen first, then the target."""

    name = "seen-lover"

    def __init__(self, split: Split) -> None:
        self.split = split

    def fit(self, split: Split) -> None:
        pass

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        ds = self.split.dataset
        d = ds.domain_index[domain]
        offset = int(ds.offsets[d])
        scores = torch.zeros(len(cases), ds.num_domain_items(domain))
        for b, c in enumerate(cases):
            seen = c.context[ds.item_domain[c.context] == d] - offset
            scores[b, torch.from_numpy(seen)] = 10.0
            scores[b, c.target - offset] = 5.0
        return scores


def test_oracle_is_perfect_in_every_protocol_and_slice(small_split: Split) -> None:
    ev = TargetDomainEvaluator(small_split, EvalConfig(batch_size=37))
    rows = ev.evaluate(Oracle(small_split))
    assert {r.protocol for r in rows} == {"full", "sampled"}
    assert {r.slice for r in rows} == {"all", "cold-users", "cold-items"}
    for row in rows:
        assert all(v == pytest.approx(1.0) for v in row.metrics.values()), row


def test_worst_model_scores_zero(small_split: Split) -> None:
    rows = TargetDomainEvaluator(small_split, EvalConfig()).evaluate(
        Oracle(small_split, worst=True), protocols=["full"]
    )
    assert all(v == 0.0 for r in rows for v in r.metrics.values())


def test_seen_items_are_excluded(small_split: Split) -> None:
    rows = TargetDomainEvaluator(small_split, EvalConfig()).evaluate(
        SeenLover(small_split), protocols=["full"]
    )
    overall = next(r for r in rows if r.slice == "all")
    assert overall.metrics["ndcg@10"] == pytest.approx(1.0)


def test_sampled_protocol_has_fixed_negatives(small_split: Split) -> None:
    cfg = EvalConfig(num_negatives=20, protocols=["sampled"])
    ev = TargetDomainEvaluator(small_split, cfg)
    torch.manual_seed(0)
    a = ev.evaluate(Oracle(small_split, worst=True))
    # The worst model ranks the target last among target + 20 negatives: rank 20.
    assert all(r.metrics["recall@20"] == 0.0 and r.metrics["recall@50"] == 1.0 for r in a)
    first = dict(ev._negatives)
    ev2 = TargetDomainEvaluator(small_split, cfg)
    ev2.evaluate(Oracle(small_split, worst=True))
    assert all((first[k][1] == ev2._negatives[k][1]).all() for k in first)
    # Negatives never include the target or seen items.
    ds = small_split.dataset
    films = ds.domain_index["films"]
    offset = int(ds.offsets[films])
    for (_, idx), (target, negs) in first.items():
        case = small_split.test[idx]
        seen = set((case.context[ds.item_domain[case.context] == films] - offset).tolist())
        assert int(target[0]) not in set(negs.tolist())
        assert not seen & set(negs.tolist())


def test_wrong_score_shape_is_reported(small_split: Split) -> None:
    class Broken(Oracle):
        name = "broken"

        def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
            return torch.zeros(len(cases), 3)

    with pytest.raises(EvaluationError, match=r"broken.score returned shape"):
        TargetDomainEvaluator(small_split, EvalConfig()).evaluate(Broken(small_split))


def test_table_labels_sampled_protocol(small_split: Split) -> None:
    rows = TargetDomainEvaluator(small_split, EvalConfig()).evaluate(Oracle(small_split))
    table = format_rows(rows, [10])
    assert "sampled (999 neg.)" in table
    assert "| oracle | films | full | all |" in table
