"""Text zero-shot: a frozen text encoder, no training at all.

An item is the vector of its text; a user is the mean of the vectors of their most recent items,
from every domain; an item's score is its dot product with the user vector. It needs no
interaction data, so cold-start users and items are served like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossrec.config import CrossRecConfig, EncoderConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.encoders.items import encode_dataset_items
from crossrec.recommender import Recommender


class TextZeroShotRecommender(Recommender):
    """User = mean of their last ``max_history`` item vectors.

    Example:
        >>> model = TextZeroShotRecommender(EncoderConfig()); model.fit(split)
    """

    name = "text-zero-shot"

    def __init__(self, encoder_cfg: EncoderConfig, max_history: int = 50) -> None:
        self.encoder_cfg = encoder_cfg
        self.max_history = max_history
        self._vectors: torch.Tensor | None = None
        self._offsets: list[int] = []
        self._domain_index: dict[str, int] = {}

    @classmethod
    def from_config(cls, cfg: CrossRecConfig) -> TextZeroShotRecommender:
        return cls(cfg.encoder, max_history=cfg.model.max_history)

    def fit(self, split: Split) -> None:
        ds = split.dataset
        self._vectors = encode_dataset_items(ds, self.encoder_cfg)
        self._offsets = [int(o) for o in ds.offsets]
        self._domain_index = dict(ds.domain_index)

    def user_vectors(self, cases: Sequence[EvalCase]) -> torch.Tensor:
        if self._vectors is None:
            raise RuntimeError("fit() the model before scoring")
        users = torch.zeros(len(cases), self._vectors.shape[1])
        for b, case in enumerate(cases):
            recent = case.context[-self.max_history :]
            if recent.size:
                users[b] = self._vectors[torch.from_numpy(recent)].mean(0)
        return users

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        users = self.user_vectors(cases)
        assert self._vectors is not None
        d = self._domain_index[domain]
        items = self._vectors[self._offsets[d] : self._offsets[d + 1]]
        return users @ items.T
