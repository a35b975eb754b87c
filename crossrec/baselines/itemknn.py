"""ItemKNN: item-to-item cosine similarity of co-occurrence over all domains.

``sim(i, j) = c_ij / sqrt(n_i * n_j)`` where ``c_ij`` counts the training users who interacted
with both items and ``n_i`` the users of item ``i``. A user's score for item ``j`` is the sum of
``sim(i, j)`` over the items ``i`` of their context, from every domain, so source-domain history
reaches the target domain wherever users overlap. Similarities are never materialised as an
``items x items`` matrix: scores are two sparse products through the user axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from crossrec.config import CrossRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.recommender import Recommender


class ItemKNNRecommender(Recommender):
    """Cosine item-item co-occurrence.

    Args:
        max_history: only the user's most recent ``max_history`` items vote (None: all).

    Example:
        >>> model = ItemKNNRecommender(); model.fit(split)
    """

    name = "itemknn"

    @classmethod
    def from_config(cls, cfg: CrossRecConfig) -> ItemKNNRecommender:
        return cls(max_history=cfg.model.max_history)

    def __init__(self, max_history: int | None = 50) -> None:
        self.max_history = max_history
        self._user_item: sp.csr_matrix | None = None
        self._norm: np.ndarray | None = None
        self._offsets: list[int] = []
        self._domain_index: dict[str, int] = {}

    def fit(self, split: Split) -> None:
        ds = split.dataset
        rows, cols = [], []
        for u, seq in enumerate(split.train_sequences):
            if seq.size:
                uniq = np.unique(seq)
                rows.append(np.full(uniq.size, u, dtype=np.int64))
                cols.append(uniq)
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c = np.concatenate(cols) if cols else np.empty(0, np.int64)
        x = sp.csr_matrix(
            (np.ones(r.size, dtype=np.float32), (r, c)),
            shape=(len(split.train_sequences), ds.num_items),
        )
        degree = np.asarray(x.sum(axis=0)).ravel()
        self._norm = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(
            np.float32
        )
        self._user_item = x
        self._item_user = x.T.tocsr()
        self._offsets = [int(o) for o in ds.offsets]
        self._domain_index = dict(ds.domain_index)

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        if self._user_item is None or self._norm is None:
            raise RuntimeError("fit() the model before scoring")
        d = self._domain_index[domain]
        lo, hi = self._offsets[d], self._offsets[d + 1]
        rows, cols = [], []
        for b, case in enumerate(cases):
            ctx = case.context if self.max_history is None else case.context[-self.max_history :]
            uniq = np.unique(ctx)
            rows.append(np.full(uniq.size, b))
            cols.append(uniq)
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c = np.concatenate(cols) if cols else np.empty(0, np.int64)
        history = sp.csr_matrix(
            (self._norm[c], (r, c)), shape=(len(cases), self._user_item.shape[1])
        )
        # [B, items] x [items, users] -> co-users, then [B, users] x [users, domain items].
        via_users = history @ self._item_user
        scores = via_users @ self._user_item[:, lo:hi]
        dense = np.asarray(scores.todense(), dtype=np.float32) * self._norm[lo:hi]
        return torch.from_numpy(dense)
