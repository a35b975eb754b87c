"""Item indexes for retrieval by inner product: exact search and an IVF approximate index.

Both answer ``search(queries, k) -> (scores, ids)``; ``ids`` are the row numbers of the vectors
given to ``build``. Exact search is the default (it is fast enough for catalogues of a few hundred
thousand items on one machine); ``IVFIndex`` probes the ``nprobe`` nearest of ``nlist`` k-means
cells for larger catalogues.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class ItemIndex(ABC):
    """Maximum inner-product search over item vectors."""

    @abstractmethod
    def build(self, vectors: torch.Tensor) -> None:
        """Indexes ``[n, dim]`` vectors (replacing what was there)."""

    @abstractmethod
    def add(self, vectors: torch.Tensor) -> torch.Tensor:
        """Appends vectors; returns their ids."""

    @abstractmethod
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` ``(scores, ids)`` per query, best first."""

    @property
    @abstractmethod
    def size(self) -> int: ...


class ExactIndex(ItemIndex):
    """Brute-force inner product, in chunks of queries to bound memory."""

    def __init__(self, chunk: int = 1024) -> None:
        self.vectors = torch.empty(0, 0)
        self.chunk = chunk

    def build(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors.detach().float().contiguous()

    def add(self, vectors: torch.Tensor) -> torch.Tensor:
        start = self.size
        self.vectors = torch.cat([self.vectors, vectors.detach().float()]) if start else vectors
        return torch.arange(start, self.size)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(k, self.size)
        scores, ids = [], []
        for start in range(0, queries.shape[0], self.chunk):
            s, i = (queries[start : start + self.chunk] @ self.vectors.T).topk(k, dim=1)
            scores.append(s)
            ids.append(i)
        return torch.cat(scores), torch.cat(ids)


class IVFIndex(ItemIndex):
    """Inverted-file index: k-means cells, search in the ``nprobe`` best cells of each query."""

    def __init__(
        self, nlist: int = 256, nprobe: int = 16, iterations: int = 20, seed: int = 0
    ) -> None:
        self.nlist, self.nprobe, self.iterations, self.seed = nlist, nprobe, iterations, seed
        self.vectors = torch.empty(0, 0)
        self.centroids = torch.empty(0, 0)
        self.assign = torch.empty(0, dtype=torch.long)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def build(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors.detach().float().contiguous()
        n = self.size
        cells = max(1, min(self.nlist, n))
        gen = torch.Generator().manual_seed(self.seed)
        self.centroids = self.vectors[torch.randperm(n, generator=gen)[:cells]].clone()
        for _ in range(self.iterations):
            self.assign = (self.vectors @ self.centroids.T).argmax(1)
            for c in range(cells):
                members = self.vectors[self.assign == c]
                if members.shape[0]:
                    self.centroids[c] = members.mean(0)
        self.assign = (self.vectors @ self.centroids.T).argmax(1)

    def add(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            self.build(vectors)
            return torch.arange(self.size)
        start = self.size
        vectors = vectors.detach().float()
        self.vectors = torch.cat([self.vectors, vectors])
        self.assign = torch.cat([self.assign, (vectors @ self.centroids.T).argmax(1)])
        return torch.arange(start, self.size)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        probe = min(self.nprobe, self.centroids.shape[0])
        cells = (queries @ self.centroids.T).topk(probe, dim=1).indices
        out_scores = torch.full((queries.shape[0], k), float("-inf"))
        out_ids = torch.full((queries.shape[0], k), -1, dtype=torch.long)
        for q in range(queries.shape[0]):
            candidates = torch.nonzero(torch.isin(self.assign, cells[q])).squeeze(1)
            scores = self.vectors[candidates] @ queries[q]
            top = scores.topk(min(k, candidates.numel()))
            out_scores[q, : top.values.numel()] = top.values
            out_ids[q, : top.values.numel()] = candidates[top.indices]
        return out_scores, out_ids
