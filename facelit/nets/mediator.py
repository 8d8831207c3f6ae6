"""The CDP mediator: an MLP that maps a pair's committee evidence to the probability that both
nodes show the same identity (Zhan et al., ECCV 2018, Sec. 3.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["OFFICIAL_WIDTH_FACTOR", "MediatorNet"]

OFFICIAL_WIDTH_FACTOR = 3
"""Hidden width of the official mediator: 3 x the input size, for both hidden layers."""


class MediatorNet(nn.Module):
    """MLP: [BatchNorm] -> (Linear -> ReLU) per hidden layer -> Linear to one logit.

    Args:
        input_dim: F, the size of a pair's input row.
        hidden_dims: widths of the hidden layers; ``None`` = two layers of 3F (the official net).
        input_norm: standardise the inputs with a BatchNorm1d without affine parameters (the input
            columns mix 0/1 votes, cosines and small variances; the official net has none).

    Shapes: (B, F) -> (B,) logits.
    """

    def __init__(
        self, input_dim: int, hidden_dims: Sequence[int] | None = None, input_norm: bool = True
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        widths = list(hidden_dims) if hidden_dims is not None else [OFFICIAL_WIDTH_FACTOR * input_dim] * 2
        layers: list[nn.Module] = [nn.BatchNorm1d(input_dim, affine=False)] if input_norm else []
        previous = input_dim
        for width in widths:
            layers += [nn.Linear(previous, int(width)), nn.ReLU()]
            previous = int(width)
        layers.append(nn.Linear(previous, 1))
        self.layers = nn.Sequential(*layers)
        self.input_dim = input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"mediator inputs must be (B, {self.input_dim}), got {tuple(x.shape)}")
        return self.layers(x).squeeze(1)
