"""Hybrid retrieve-and-rank: candidates from the two towers, item co-visitation and popularity,
re-scored by a small model over per-candidate features.

* **Co-visitation** (`CoVisitation`) is counted on the towers' training sequences, across
  domains: user-level co-occurrence (ItemKNN's cosine, ``c_ij / sqrt(n_i n_j)``) and sequential
  transitions (``j`` following ``i`` within ``window`` steps, weighted ``1 / gap``).
* **Candidates** of a case: the top ``tower`` items by the two-tower score, the top ``covis``
  by each co-visitation score and the ``popular`` most popular items of the domain.
* **Features** of a candidate: the two-tower logit, both co-visitation scores, popularity, text
  similarity to the user's recent items and to the last one, whether it was ever trained on, and
  two user features (history length, share of the history in the candidate's domain).
* **The ranker** (`HybridRanker`) is a small MLP with a linear skip, trained with a softmax over
  each case's candidates on positions the towers never trained on (each held-out training user's
  last item), so it learns how far to trust each source where the towers are not overfitted.
  Scores are logits: no saturated sigmoid, no ties at the top.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

logger = logging.getLogger(__name__)

FEATURES = (
    "tower",
    "knn",
    "transition",
    "popularity",
    "text_history",
    "text_last",
    "cold",
    "history_length",
    "domain_share",
)


@dataclass
class CandidateSizes:
    """How many candidates each source contributes per case."""

    tower: int = 100
    covis: int = 50
    popular: int = 20


class CoVisitation:
    """Cross-domain item co-visitation counted on training sequences.

    Example:
        >>> covis = CoVisitation.from_sequences(split.train_sequences, num_items)
        >>> knn, trans = covis.scores([context], domain_ids)  # [1, len(domain_ids)] each
    """

    def __init__(
        self, user_item: sp.csr_matrix, transitions: sp.csr_matrix, window: int = 3
    ) -> None:
        self.user_item = user_item.tocsr()
        self.item_user = self.user_item.T.tocsr()
        self.transitions = transitions.tocsr()
        self.window = window
        degree = np.asarray(self.user_item.sum(axis=0)).ravel()
        self.counts = degree.astype(np.float32)
        self.norm = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(
            np.float32
        )
        self._columns: dict[bytes, tuple[sp.csr_matrix, sp.csr_matrix]] = {}

    @classmethod
    def from_sequences(
        cls, sequences: Sequence[np.ndarray], num_items: int, window: int = 3
    ) -> CoVisitation:
        """Counts co-occurrence and transitions on ``sequences`` (global item indices)."""
        rows, cols = [], []
        src, dst, weight = [], [], []
        for u, seq in enumerate(sequences):
            if not seq.size:
                continue
            uniq = np.unique(seq)
            rows.append(np.full(uniq.size, u, dtype=np.int64))
            cols.append(uniq)
            for gap in range(1, window + 1):
                if seq.size > gap:
                    src.append(seq[:-gap])
                    dst.append(seq[gap:])
                    weight.append(np.full(seq.size - gap, 1.0 / gap, dtype=np.float32))
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c = np.concatenate(cols) if cols else np.empty(0, np.int64)
        user_item = sp.csr_matrix(
            (np.ones(r.size, dtype=np.float32), (r, c)), shape=(max(len(sequences), 1), num_items)
        )
        s = np.concatenate(src) if src else np.empty(0, np.int64)
        d = np.concatenate(dst) if dst else np.empty(0, np.int64)
        w = np.concatenate(weight) if weight else np.empty(0, np.float32)
        transitions = sp.csr_matrix((w, (s, d)), shape=(num_items, num_items))
        transitions.sum_duplicates()
        return cls(user_item, transitions, window)

    def with_sequences(self, sequences: Sequence[np.ndarray]) -> CoVisitation:
        """These counts plus those of ``sequences`` (e.g. streamed events: each a recent
        context and its next item), as new users; items beyond the counted catalogue are
        dropped."""
        kept = [np.asarray(s, dtype=np.int64) for s in sequences]
        kept = [s[s < self.num_items] for s in kept]
        more = CoVisitation.from_sequences(kept, self.num_items, self.window)
        user_item = sp.vstack([self.user_item, more.user_item]).tocsr()
        return CoVisitation(user_item, self.transitions + more.transitions, self.window)

    @property
    def num_items(self) -> int:
        return int(self.user_item.shape[1])

    def _domain_columns(self, ids: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        key = ids.tobytes()
        if key not in self._columns:
            known = ids[ids < self.num_items]
            self._columns = {
                key: (self.user_item[:, known].tocsr(), self.transitions[:, known].tocsr())
            }
        return self._columns[key]

    def scores(
        self, contexts: Sequence[np.ndarray], ids: np.ndarray, max_history: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """ItemKNN and transition scores ``[B, len(ids)]`` of the items ``ids`` (items added
        after counting score 0)."""
        users_cols, trans_cols = self._domain_columns(ids)
        known = int((ids < self.num_items).sum())
        b = len(contexts)
        rows, cols, hist_w, last_w = [], [], [], []
        for i, ctx in enumerate(contexts):
            ctx = np.asarray(ctx, dtype=np.int64)
            ctx = ctx[ctx < self.num_items][-max_history:]
            uniq = np.unique(ctx)
            rows.append(np.full(uniq.size, i))
            cols.append(uniq)
            hist_w.append(self.norm[uniq])
            recent = ctx[::-1][: self.window]
            weights = np.zeros(self.num_items, dtype=np.float32)
            np.add.at(weights, recent, 1.0 / np.arange(1, recent.size + 1, dtype=np.float32))
            last_w.append(weights)
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c = np.concatenate(cols) if cols else np.empty(0, np.int64)
        h = sp.csr_matrix((np.concatenate(hist_w), (r, c)), shape=(b, self.num_items))
        knn = np.zeros((b, ids.size), dtype=np.float32)
        trans = np.zeros((b, ids.size), dtype=np.float32)
        co_users = h @ self.item_user
        knn[:, :known] = (co_users @ users_cols).toarray() * self.norm[ids[:known]]
        recent_m = sp.csr_matrix(np.stack(last_w)) if last_w else sp.csr_matrix((0, 0))
        trans[:, :known] = (recent_m @ trans_cols).toarray()
        return knn, trans

    def tensors(self) -> dict[str, torch.Tensor]:
        """The counts as plain tensors (CSR parts), for a checkpoint."""
        out: dict[str, torch.Tensor] = {}
        for name, m in (("user_item", self.user_item), ("transitions", self.transitions)):
            out[f"{name}.indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
            out[f"{name}.indices"] = torch.from_numpy(m.indices.astype(np.int64))
            out[f"{name}.data"] = torch.from_numpy(m.data.astype(np.float32))
            out[f"{name}.shape"] = torch.tensor(m.shape, dtype=torch.int64)
        out["window"] = torch.tensor(self.window)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> CoVisitation:
        def csr(name: str) -> sp.csr_matrix:
            shape = tuple(int(x) for x in tensors[f"{name}.shape"].tolist())
            return sp.csr_matrix(
                (
                    tensors[f"{name}.data"].numpy(),
                    tensors[f"{name}.indices"].numpy(),
                    tensors[f"{name}.indptr"].numpy(),
                ),
                shape=shape,
            )

        return cls(csr("user_item"), csr("transitions"), int(tensors["window"]))


class HybridRanker(nn.Module):
    """Scores candidates from their features: a small MLP plus a linear skip, on standardised
    features. Its outputs are logits.

    Example:
        >>> ranker = HybridRanker(len(FEATURES))
        >>> logits = ranker(features)  # [B, C, F] -> [B, C]
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_features: int = len(FEATURES), hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, 1)
        out = nn.Linear(hidden, 1)
        # The MLP starts at zero: training begins from the linear model and adds interactions.
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), out)

    def fit_scaling(self, features: torch.Tensor) -> None:
        flat = features.reshape(-1, features.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.mean) / self.std
        return (self.linear(x) + self.mlp(x)).squeeze(-1)


def candidate_columns(
    tower: torch.Tensor,
    knn: torch.Tensor,
    transition: torch.Tensor,
    popularity: torch.Tensor,
    sizes: CandidateSizes,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate columns ``[B, C]`` (into the domain's items) from every source, and a mask of
    the first occurrence of each (duplicates across sources are masked out).

    ``exclude`` ``[B, N]`` marks items that may not be candidates (already seen)."""
    n = tower.shape[1]
    penalty = torch.zeros_like(tower)
    if exclude is not None:
        penalty = penalty.masked_fill(exclude, float("-inf"))
    parts = [(tower + penalty).topk(min(sizes.tower, n), dim=1).indices]
    for source in (knn, transition):
        parts.append((source + penalty).topk(min(sizes.covis, n), dim=1).indices)
    pop = popularity.unsqueeze(0).expand_as(tower) + penalty
    parts.append(pop.topk(min(sizes.popular, n), dim=1).indices)
    cols = torch.cat(parts, dim=1)
    order = cols.sort(dim=1, stable=True)
    first = torch.ones_like(cols, dtype=torch.bool)
    first_sorted = torch.ones_like(cols, dtype=torch.bool)
    first_sorted[:, 1:] = order.values[:, 1:] != order.values[:, :-1]
    first.scatter_(1, order.indices, first_sorted)
    if exclude is not None:
        first &= ~exclude.gather(1, cols)
    return cols, first


def fit_hybrid_ranker(
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden: int = 32,
    epochs: int = 40,
    batch: int = 256,
    lr: float = 5e-3,
    seed: int = 0,
    init: HybridRanker | None = None,
) -> tuple[HybridRanker, list[float]]:
    """Fits a `HybridRanker` with a softmax over each case's candidates.

    Args:
        features: ``[N, C, F]`` candidate features of ``N`` cases.
        mask: ``[N, C]`` which candidates count (first occurrences).
        labels: ``[N]`` the column of each case's answer (a counted candidate).

        init: a fitted ranker to continue from (a copy is trained), else a fresh one.

    Returns the ranker (in eval mode) and the mean loss of every epoch.
    """
    torch.manual_seed(seed)
    if init is not None:
        # Continue from a fitted ranker (its feature scaling included): few new cases adjust
        # it rather than replace it.
        ranker = copy.deepcopy(init).train()
    else:
        ranker = HybridRanker(features.shape[-1], hidden).to(features.device)
        ranker.fit_scaling(features[mask])
    ranker.requires_grad_(True)
    with torch.enable_grad():
        losses = _train_ranker(ranker, features, mask, labels, epochs, batch, lr, seed)
    ranker.eval()
    return ranker, losses


def _train_ranker(
    ranker: HybridRanker,
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> list[float]:
    optimizer = torch.optim.Adam(ranker.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    for _ in range(epochs):
        total = 0.0
        for idx in np.array_split(
            rng.permutation(features.shape[0]), max(1, len(features) // batch)
        ):
            logits = ranker(features[idx]).masked_fill(~mask[idx], float("-inf"))
            loss = nn.functional.cross_entropy(logits, labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.size
        losses.append(total / features.shape[0])
    return losses
