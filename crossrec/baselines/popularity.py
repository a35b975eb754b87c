"""Popularity: every user gets the domain's most interacted-with items."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossrec.config import CrossRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.recommender import Recommender


class PopularityRecommender(Recommender):
    """Scores an item by its interaction count in the training data of its domain.

    Example:
        >>> model = PopularityRecommender(); model.fit(split)
        >>> model.score(split.test[:2], "films").shape
    """

    name = "popularity"

    @classmethod
    def from_config(cls, cfg: CrossRecConfig) -> PopularityRecommender:
        return cls()

    def __init__(self) -> None:
        self._counts: torch.Tensor | None = None
        self._offsets: list[int] = []
        self._domain_index: dict[str, int] = {}

    def fit(self, split: Split) -> None:
        ds = split.dataset
        self._counts = torch.from_numpy(split.train_item_counts()).to(torch.float32)
        self._offsets = [int(o) for o in ds.offsets]
        self._domain_index = dict(ds.domain_index)

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        if self._counts is None:
            raise RuntimeError("fit() the model before scoring")
        d = self._domain_index[domain]
        row = self._counts[self._offsets[d] : self._offsets[d + 1]]
        return row.unsqueeze(0).expand(len(cases), -1).clone()
