"""SphereFace networks (Liu et al., CVPR 2017) and a timm alternative, both ending in an embedding.

SphereFace-N: four stages of widths 64/128/256/512; each stage is a 3x3 stride-2 conv (+PReLU)
followed by residual units of two 3x3 convs (+PReLU each) with an identity shortcut; no
BatchNorm; fc5 maps the flattened last map (7x6x512 at 112x96) to the 512-d embedding. Units
per stage (the paper's Table 2; N counts the conv layers, 4 + 2 x units): SphereFace-4
[0,0,0,0], -10 [0,1,2,0], -20 [1,2,4,1], -36 [2,4,8,2], -64 [3,8,16,3]. The released
SphereFace-64 prototxt has [3,7,16,3]; we follow the paper (``units=(3, 7, 16, 3)`` reproduces
the prototxt). Initialisation as the official prototxts: Xavier for the stride-2 convs and fc5,
Gaussian (std 0.01) for the residual convs, PReLU slopes 0.25. ``width`` scales every stage's
channels (CPU demos use 0.25).

:class:`TimmEmbedding`: any timm model's pooled features -> BatchNorm -> Linear -> BatchNorm
embedding head (the common "BN-FC-BN" head of ArcFace-style models), ``pretrained=False`` unless
a local ``weights_file`` is given. Inputs are RGB in [0, 1]; both normalise internally
((x - 0.5) / 0.5 as the official (x - 127.5) / 128 preprocessing for SphereFace; ImageNet
statistics for timm models).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from facelit.nets.backbones import ImageNormalize

__all__ = ["SPHERE_UNITS", "SPHERE_WIDTHS", "SphereNet", "TimmEmbedding", "create_embedding_net"]

SPHERE_UNITS: dict[int, tuple[int, int, int, int]] = {
    4: (0, 0, 0, 0),
    10: (0, 1, 2, 0),
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}
SPHERE_WIDTHS = (64, 128, 256, 512)
_SPHERE_MEAN, _SPHERE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_RESIDUAL_STD = 0.01
_STRIDE = 16  # four stride-2 stages


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels)
        self.conv2, self.act2 = nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=_RESIDUAL_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act2(self.conv2(self.act1(self.conv1(x))))


def _out_side(n: int) -> int:
    for _ in range(4):
        n = (n + 1) // 2  # 3x3, stride 2, padding 1
    return n


class SphereNet(nn.Module):
    """SphereFace-N embedding network: (B, 3, H, W) in [0, 1] -> (B, embedding_dim).

    Args:
        depth: 4, 10, 20, 36 or 64 (ignored when ``units`` is given).
        image_size: (height, width) of the input crops (fc5 reads the last map's H/16 x W/16 cells).
        embedding_dim: size of fc5 (512 in the paper).
        width: channel multiplier of every stage.
        units: residual units per stage, overriding ``depth`` (e.g. the prototxt's (3, 7, 16, 3)).
    """

    def __init__(
        self,
        depth: int = 20,
        image_size: Sequence[int] = (112, 96),
        embedding_dim: int = 512,
        width: float = 1.0,
        units: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if units is None:
            if depth not in SPHERE_UNITS:
                raise ValueError(f"SphereFace depth must be one of {sorted(SPHERE_UNITS)}, got {depth}")
            units = SPHERE_UNITS[depth]
        if len(units) != 4 or min(units) < 0:
            raise ValueError(f"units must be 4 non-negative counts, got {tuple(units)}")
        if len(image_size) != 2 or min(image_size) < _STRIDE:
            raise ValueError(f"image_size must be (height, width) >= {_STRIDE}, got {tuple(image_size)}")
        self.normalize = ImageNormalize(_SPHERE_MEAN, _SPHERE_STD)
        layers: list[nn.Module] = []
        cin = 3
        for n, base in zip(units, SPHERE_WIDTHS, strict=True):
            cout = max(1, round(base * width))
            conv = nn.Conv2d(cin, cout, 3, 2, 1)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.PReLU(cout), *[_Residual(cout) for _ in range(n)]]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.fc5 = nn.Linear(
            cin * _out_side(self.image_size[0]) * _out_side(self.image_size[1]), embedding_dim
        )
        nn.init.xavier_uniform_(self.fc5.weight)
        nn.init.zeros_(self.fc5.bias)
        self.embedding_dim = int(embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != self.image_size:
            raise ValueError(f"SphereNet built for {self.image_size} crops, got {tuple(images.shape[-2:])}")
        return self.fc5(self.features(self.normalize(images)).flatten(1))


class TimmEmbedding(nn.Module):
    """Any timm backbone with a BN-FC-BN embedding head: (B, 3, H, W) in [0, 1] -> (B, embedding_dim).

    Args:
        name: timm model name; embedding_dim: output size; weights_file: local weights (nothing is
        fetched); dropout: before the FC.
    """

    def __init__(
        self,
        name: str = "resnet18",
        embedding_dim: int = 512,
        weights_file: str | Path | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kwargs = {"pretrained_cfg_overlay": {"file": str(weights_file)}} if weights_file else {}
        self.normalize = ImageNormalize()
        self.body = timm.create_model(name, pretrained=weights_file is not None, num_classes=0, **kwargs)
        features = self.body.num_features
        self.head = nn.Sequential(
            nn.BatchNorm1d(features),
            nn.Dropout(dropout),
            nn.Linear(features, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )
        self.embedding_dim = int(embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.normalize(images)))


def create_embedding_net(
    backbone: str,
    image_size: Sequence[int],
    embedding_dim: int = 512,
    width: float = 1.0,
    weights_file: str | None = None,
) -> nn.Module:
    """``sphere4|10|20|36|64`` -> :class:`SphereNet`; any other name -> :class:`TimmEmbedding`."""
    if backbone.startswith("sphere"):
        suffix = backbone[len("sphere") :]
        if not suffix.isdigit():
            raise ValueError(f"SphereFace backbone names are sphere{{4,10,20,36,64}}, got {backbone!r}")
        if weights_file:
            raise ValueError(
                "weights_file applies to timm backbones; load SphereNet weights from a checkpoint"
            )
        return SphereNet(int(suffix), image_size, embedding_dim, width)
    return TimmEmbedding(backbone, embedding_dim, weights_file)
