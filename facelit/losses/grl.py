"""Gradient reversal (Ganin & Lempitsky, 2015) and the DANN adaptation-weight schedule.

The gradient-reversal layer is the identity in the forward pass and multiplies the incoming
gradient by ``-lambda`` in the backward pass, so that one optimizer step lowers the domain
discriminator's loss while raising it for the feature extractor in front of the layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["DANN_GAMMA", "GradientReversal", "grad_reverse", "dann_lambda"]

DANN_GAMMA = 10.0
"""Steepness of the DANN schedule ``2 / (1 + exp(-gamma p)) - 1`` (Ganin & Lempitsky use 10)."""


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity on ``x`` (any shape) whose gradient is multiplied by ``-lambd``.

    Raises:
        ValueError: for a negative or non-finite ``lambd``.
    """
    lambd = float(lambd)
    if not math.isfinite(lambd) or lambd < 0:
        raise ValueError(f"gradient-reversal lambda must be finite and >= 0, got {lambd}")
    return _GradReverse.apply(x, lambd)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; set ``lambd`` between steps (e.g. from :func:`dann_lambda`)."""

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def dann_lambda(progress: float, lambda_max: float = 1.0, gamma: float = DANN_GAMMA) -> float:
    """Adaptation weight ``lambda_max * (2 / (1 + exp(-gamma p)) - 1)`` at training progress ``p``.

    Args:
        progress: fraction of the adaptation phase done; clipped to [0, 1] (0 -> 0, 1 -> ~lambda_max).
        lambda_max: the weight the schedule rises to.
        gamma: steepness (:data:`DANN_GAMMA`).
    """
    if lambda_max < 0:
        raise ValueError(f"lambda_max must be >= 0, got {lambda_max}")
    p = min(1.0, max(0.0, float(progress)))
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
