"""Distribution distances between a source and a target batch of features."""

from __future__ import annotations

import torch
from torch import nn


def mmd_distance(
    source: torch.Tensor, target: torch.Tensor, bandwidths: tuple[float, ...] = (0.25, 0.5, 1, 2, 4)
) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels.

    Bandwidths are multiples of the median pairwise squared distance of the pooled batch (computed
    without gradient), so the loss is scale-free. Zero for identical batches.
    """
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"need [n, d] and [m, d]; got {tuple(source.shape)}, {tuple(target.shape)}"
        )
    pooled = torch.cat([source, target])
    d2 = torch.cdist(pooled, pooled).pow(2)
    with torch.no_grad():
        off_diag = d2[~torch.eye(d2.shape[0], dtype=torch.bool, device=d2.device)]
        scale = off_diag.median().clamp(min=1e-6)
    kernel = sum(torch.exp(-d2 / (scale * b)) for b in bandwidths)
    assert isinstance(kernel, torch.Tensor)
    n = source.shape[0]
    k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()


def coral_distance(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (||C_s||_F^2 + ||C_t||_F^2)`` between feature covariances: zero
    for identical batches, at most 2, and free of the features' scale. (Deep CORAL's
    ``/ (4 d^2)`` made the loss ~1e-8 on the item adapter's small outputs, so it did nothing at
    any weight.)"""
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"feature sizes differ: {source.shape[1]} vs {target.shape[1]}")

    def cov(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / max(x.shape[0] - 1, 1)

    cs, ct = cov(source), cov(target)
    return (cs - ct).pow(2).sum() / (cs.pow(2).sum() + ct.pow(2).sum()).clamp(min=1e-12)


class DomainDiscriminator(nn.Module):
    """A small MLP that tells source (label 0) from target (label 1) features."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def loss_and_accuracy(
        self, source: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        logits = self(torch.cat([source, target]))
        labels = torch.cat([torch.zeros(source.shape[0]), torch.ones(target.shape[0])]).to(logits)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        accuracy = float(((logits > 0).float() == labels).float().mean())
        return loss, accuracy
