"""The interface every model and baseline implements to be trained and evaluated."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from crossrec.data.splits import EvalCase, Split


class Recommender(ABC):
    """Fits on a split's training data and scores every item of a domain for a batch of cases.

    Example:
        >>> model = PopularityRecommender(); model.fit(split)
        >>> scores = model.score(split.test[:8], "films")  # [8, num_films], higher is better
    """

    name: ClassVar[str]

    @abstractmethod
    def fit(self, split: Split) -> None:
        """Trains on ``split.train_sequences`` (and may early-stop on ``split.valid``)."""

    @abstractmethod
    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        """``[len(cases), num items of domain]`` float scores; column ``j`` is the domain's
        ``j``-th item (global index ``dataset.offsets[d] + j``). Items in a case's context are
        masked by the evaluator, not here."""
