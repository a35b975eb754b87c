"""The ranker: re-scores retrieved candidates with ``sigmoid(W . [f_u, f_i, f_u * f_i] + b)``."""

from __future__ import annotations

import torch
from torch import nn


class Ranker(nn.Module):
    """A logistic ranker over user and item features, trained with BCE on hard negatives.

    Example:
        >>> ranker = Ranker(64)
        >>> probs = ranker(user[:, None, :], items)  # [B, N] in (0, 1)
    """

    def __init__(self, dim: int, retrieval_scale: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * dim, 1)
        # Start as the retrieval score (a scaled dot product, the f_u * f_i block) and learn
        # corrections from there, so an untrained ranker never reorders worse than retrieval.
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, 2 * dim :] = retrieval_scale
            self.linear.bias.zero_()

    def logits(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``user`` ``[..., dim]`` broadcast against ``items`` ``[..., dim]``."""
        user = user.expand_as(items)
        return self.linear(torch.cat([user, items, user * items], dim=-1)).squeeze(-1)

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(user, items))
