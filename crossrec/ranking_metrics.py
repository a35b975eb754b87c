"""Ranking metrics for one held-out target per case.

A case's *rank* is the 0-based position of its target among the candidates once they are sorted
by score, best first. Ties are counted against the target (pessimistic): a candidate that scores
exactly as high as the target is ranked above it. So a model that gives every item the same score
gets the worst rank, never a lucky one, and the metrics do not depend on item order or labels.

With one relevant item, Recall@K equals HR@K, NDCG@K is ``1 / log2(rank + 2)`` inside the top K
(the ideal DCG is 1), and MRR@K is ``1 / (rank + 1)`` inside the top K.
"""

from __future__ import annotations

import torch

METRIC_NAMES = ("recall", "ndcg", "mrr")


def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Pessimistic 0-based rank of each row's target.

    Args:
        scores: ``[B, N]`` candidate scores (higher is better); NaN is not allowed.
        targets: ``[B]`` column of each row's target.
        exclude: optional ``[B, N]`` bool mask of candidates to leave out (never the target).

    Returns:
        ``[B]`` int64 ranks.
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be [B, N] and targets [B]; got {tuple(scores.shape)}, "
            f"{tuple(targets.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    above = scores >= target_scores
    above[rows, targets] = False
    if exclude is not None:
        above &= ~exclude
    return above.sum(dim=1)


def recall_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case Recall@K (= HR@K with one target): 1 when the target is in the top K."""
    return (ranks < k).to(torch.float64)


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case NDCG@K with one relevant item."""
    gain = 1.0 / torch.log2(ranks.to(torch.float64) + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain))


def mrr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-case reciprocal rank, 0 outside the top K."""
    rr = 1.0 / (ranks.to(torch.float64) + 1.0)
    return torch.where(ranks < k, rr, torch.zeros_like(rr))


_FUNCTIONS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Mean of every metric at every K, keyed ``"ndcg@10"`` etc."""
    if ranks.numel() == 0:
        return {f"{m}@{k}": float("nan") for m in METRIC_NAMES for k in ks}
    return {f"{m}@{k}": float(_FUNCTIONS[m](ranks, k).mean()) for m in METRIC_NAMES for k in ks}
