"""The "vanilla CNN" keypoint regressor (Wu & Hassner's TCDCN-style baseline, as used by Rashid et al.).

Four convolutions, each followed by BatchNorm, tanh and 2x2 max-pooling, then two fully connected
layers (BatchNorm + tanh after the first). It regresses K keypoints as (x, y) fractions of the
input side: the output ``(B, K, 2)`` times (W, H) gives pixels in the pixel-area frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facelit.nets.backbones import ImageNormalize

__all__ = ["VanillaCNN"]

_KERNELS = (5, 3, 3, 2)
_CENTRE = 0.5  # initial prediction: every keypoint at the image centre


class VanillaCNN(nn.Module):
    """Keypoint regressor.

    Args:
        num_points: K keypoints.
        channels: output channels of the four conv layers (the original: 16, 48, 64, 64).
        hidden: width of the first FC layer (the original: 100).
        pooled: spatial side the last conv map is average-pooled to before the FCs, so that any input
            size works (the original's 40 x 40 input gives 2 x 2 there).
    """

    def __init__(
        self,
        num_points: int = 5,
        channels: Sequence[int] = (16, 48, 64, 64),
        hidden: int = 100,
        pooled: int = 2,
    ) -> None:
        super().__init__()
        if len(channels) != len(_KERNELS):
            raise ValueError(f"channels must list {len(_KERNELS)} conv widths, got {tuple(channels)}")
        self.num_points = num_points
        self.normalize = ImageNormalize()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, k in zip(channels, _KERNELS, strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.Tanh(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pooled))
        self.fc1 = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * pooled * pooled, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.Tanh(),
        )
        self.fc2 = nn.Linear(hidden, 2 * num_points)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, _CENTRE)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, K, 2) keypoints as fractions of (W, H)."""
        x = self.fc1(self.features(self.normalize(images)))
        return self.fc2(x).view(-1, self.num_points, 2)

    def predict_pixels(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, K, 2) keypoints in pixels of the input."""
        size = torch.tensor([images.shape[-1], images.shape[-2]], dtype=images.dtype, device=images.device)
        return self(images) * size
