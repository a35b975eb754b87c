"""UniSRec's parametric-whitening mixture-of-experts adapter (Hou et al., KDD 2022).

Each expert whitens the frozen text vector with a learned shift and projection,
``(x - b_k) W_k``; a softmax gate over ``x W_g`` mixes the experts. Only the adapter learns, so the
language model's knowledge stays intact while the space is fitted to recommendation.
"""

from __future__ import annotations

import torch
from torch import nn


class WhiteningMoEAdapter(nn.Module):
    """Maps ``[..., text_dim]`` text vectors to ``[..., dim]`` item vectors.

    Example:
        >>> adapter = WhiteningMoEAdapter(384, 64, num_experts=8)
        >>> adapter(torch.randn(10, 384)).shape
        torch.Size([10, 64])
    """

    def __init__(self, text_dim: int, dim: int, num_experts: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(num_experts, text_dim))
        self.proj = nn.Parameter(torch.empty(num_experts, text_dim, dim))
        nn.init.normal_(self.proj, std=text_dim**-0.5)
        self.gate = nn.Linear(text_dim, num_experts, bias=False)
        nn.init.zeros_(self.gate.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        weights = torch.softmax(self.gate(x), dim=-1)  # [..., E]
        # (x - b_k) W_k = x W_k - b_k W_k: one [text_dim, E * dim] product, without the
        # [..., E, text_dim] intermediate (it dominated training over whole catalogues).
        e, text_dim, dim = self.proj.shape
        flat = self.proj.permute(1, 0, 2).reshape(text_dim, e * dim)
        experts = (x @ flat).reshape(*x.shape[:-1], e, dim)
        experts = experts - torch.einsum("ed,edk->ek", self.shift, self.proj)
        return (weights.unsqueeze(-1) * experts).sum(-2)
