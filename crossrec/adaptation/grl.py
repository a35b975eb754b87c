"""The gradient-reversal layer: identity forward, gradient times ``-lambda`` backward."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Returns ``x``; in backward, multiplies the incoming gradient by ``-lambd``."""
    out: torch.Tensor = _ReverseGrad.apply(x, lambd)
    return out


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``lambd`` as training progresses.

    Example:
        >>> grl = GradientReversal(); grl.lambd = dann_lambda(0.5)
        >>> domain_logits = discriminator(grl(features))
    """

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's schedule ``2 / (1 + exp(-gamma * p)) - 1`` for progress ``p`` in [0, 1]:
    0 at the start, rising smoothly towards 1, so the noisy early discriminator cannot disrupt
    the features."""
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0
