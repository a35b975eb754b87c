"""`ModelView`: a trained `CrossRecModel` as a `Recommender` the evaluator can score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from crossrec.data.splits import EvalCase, Split
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.recommender import Recommender


class ModelView(Recommender):
    """Lets the evaluator score a `CrossRecModel` (one target domain)."""

    name = "crossrec"

    def __init__(self, model: CrossRecModel, target_only: bool = False, rank: bool = False) -> None:
        self.model = model
        self.target_only = target_only
        self.rank = rank

    def fit(self, split: Split) -> None:  # trained by CrossRecTrainer
        raise NotImplementedError("train with CrossRecTrainer")

    def contexts(self, cases: Sequence[EvalCase], domain: str) -> list[np.ndarray]:
        contexts = [c.context for c in cases]
        return self.model.within_domain(contexts, domain) if self.target_only else contexts

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        return self.model.score(self.contexts(cases, domain), domain, rank=self.rank)
