"""The user tower: a causal Transformer over a user's recent item vectors from every domain."""

from __future__ import annotations

import torch
from torch import nn


class UserTower(nn.Module):
    """Reads ``[BOS, item_1, ..., item_L]`` (right-padded) and returns one state per position;
    state ``t`` summarises the first ``t`` items. A user vector for a target domain combines a
    state with that domain's learned query.

    Example:
        >>> tower = UserTower(dim=64, num_domains=2, max_len=50)
        >>> states = tower(item_vectors, item_domains, lengths)  # [B, L + 1, 64]
        >>> user = tower.user_vector(states[:, -1], target_domain)  # [B, 64], unit norm
    """

    def __init__(
        self,
        dim: int,
        num_domains: int,
        max_len: int = 50,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.bos = nn.Parameter(torch.zeros(dim))
        self.pos_emb = nn.Embedding(max_len + 1, dim)
        self.domain_emb = nn.Embedding(num_domains, dim)
        self.target_query = nn.Embedding(num_domains, dim)
        for emb in (self.pos_emb, self.domain_emb, self.target_query):
            nn.init.normal_(emb.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            num_heads,
            dim_feedforward=4 * dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * dim, dim)

    def forward(
        self, item_vectors: torch.Tensor, item_domains: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """States ``[B, L + 1, dim]`` for ``item_vectors`` ``[B, L, dim]`` whose first
        ``lengths[b]`` rows are real (the rest padding)."""
        b, length, dim = item_vectors.shape
        if length > self.max_len:
            raise ValueError(f"history of {length} items exceeds max_len={self.max_len}")
        h = item_vectors + self.domain_emb(item_domains)
        h = torch.cat([self.bos.expand(b, 1, dim), h], dim=1)
        positions = torch.arange(length + 1, device=h.device)
        h = self.dropout(h + self.pos_emb(positions).unsqueeze(0))
        causal = torch.triu(
            torch.ones(length + 1, length + 1, dtype=torch.bool, device=h.device), 1
        )
        # Right padding sits after every real position, so causal attention never reaches it.
        h = self.blocks(h, mask=causal)
        return self.norm(h)

    def user_vector(
        self, states: torch.Tensor, target_domain: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """User vectors (unit norm unless ``normalize`` is false) from states ``[N, dim]`` for
        target domains ``[N]``."""
        mixed = self.out(torch.cat([states, self.target_query(target_domain)], dim=-1))
        vectors = mixed + states
        return nn.functional.normalize(vectors, dim=-1) if normalize else vectors
