"""Head-pose regression net with a domain discriminator (PADACO / DANN).

Convention
----------
Input (B, 3, H, W) float RGB in [0, 1]; the ImageNet mean/std normalisation happens inside
(:class:`facelit.nets.backbones.ImageNormalize`). Output (B, 3) (yaw, pitch, roll) in degrees
(:mod:`facelit.geometry.pose`). The regressor predicts per-angle standardised values ``z``; the
angles are ``z * pose_std + pose_mean`` with the label statistics stored as buffers (set them from
the training labels with :meth:`HeadPoseNet.set_label_stats`), so the loss can be taken on ``z``
and every angle weighs alike.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from facelit.losses.grl import GradientReversal
from facelit.nets.backbones import ImageNormalize

__all__ = ["DomainDiscriminator", "HeadPoseNet"]

POSE_DIMS = 3


class DomainDiscriminator(nn.Module):
    """MLP on features -> one domain logit (source = 1), behind a gradient-reversal layer.

    Args:
        in_features: feature width.
        hidden: widths of the hidden layers (ReLU, dropout).
        dropout: dropout probability of the hidden layers.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.grl = GradientReversal(0.0)
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, lambd: float) -> torch.Tensor:
        """(B, C) features -> (B,) logits; gradients into ``features`` are scaled by ``-lambd``."""
        self.grl.lambd = float(lambd)
        return self.mlp(self.grl(features)).squeeze(-1)


class HeadPoseNet(nn.Module):
    """Feature extractor F (any timm model, pooled features), regressor R and discriminator D.

    Args:
        backbone: timm model name (``resnet18`` in PADACO; ``resnet10t`` etc. for CPU demos).
        weights_file: local backbone checkpoint (timm ``pretrained_cfg_overlay``); nothing is fetched.
        discriminator_hidden: hidden widths of D.
        dropout: dropout of D.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights_file: str | Path | None = None,
        discriminator_hidden: tuple[int, ...] = (256, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        kwargs: dict = {"pretrained": False}
        if weights_file is not None:
            path = Path(weights_file)
            if not path.is_file():
                raise FileNotFoundError(f"backbone weights file not found: {path}")
            kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
        try:
            self.features = timm.create_model(backbone, num_classes=0, **kwargs)
        except RuntimeError as err:  # timm: "Unknown model (...)"
            raise ValueError(f"cannot build timm backbone {backbone!r}: {err}") from None
        self.normalize = ImageNormalize()
        # Width of the pooled output: timm's head_hidden_size where a conv head follows pooling (MobileNetV3).
        width = int(getattr(self.features, "head_hidden_size", None) or self.features.num_features)
        self.regressor = nn.Linear(width, POSE_DIMS)
        self.discriminator = DomainDiscriminator(width, tuple(discriminator_hidden), dropout)
        self.register_buffer("pose_mean", torch.zeros(POSE_DIMS))
        self.register_buffer("pose_std", torch.ones(POSE_DIMS))

    @torch.no_grad()
    def set_label_stats(self, poses: torch.Tensor) -> None:
        """Set the de-normalisation from (N, 3) training labels (std floored at 1 degree)."""
        if poses.dim() != 2 or poses.shape[1] != POSE_DIMS or len(poses) < 2:
            raise ValueError(f"expected (N >= 2, 3) poses, got {tuple(poses.shape)}")
        self.pose_mean.copy_(poses.float().mean(0))
        self.pose_std.copy_(poses.float().std(0).clamp_min(1.0))

    def standardize(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 3) degrees -> (B, 3) standardised targets."""
        return (pose - self.pose_mean) / self.pose_std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> (B, C) pooled features."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        return self.features(self.normalize(images))

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) features -> (B, 3) standardised pose ``z``."""
        return self.regressor(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> (B, 3) yaw, pitch, roll in degrees."""
        return self.regress(self.embed(images)) * self.pose_std + self.pose_mean
