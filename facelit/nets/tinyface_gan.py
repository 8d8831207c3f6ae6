"""Tiny-face GAN nets (Bai et al., "Finding Tiny Faces in the Wild with Generative Adversarial
Network", CVPR 2018): a generator that super-resolves a low-resolution face proposal by 4x and
refines it, and a discriminator with two heads (real vs generated, face vs non-face).

Generator (paper, Table 1, widths configurable):

- up-sampling sub-network: conv 3x3-64, ``upsample_blocks`` (8) residual blocks, conv 3x3-64,
  log2(scale) stride-2 3x3 deconvolutions (256 channels), conv 3x3 to RGB -> G1 (B, 3, sH, sW);
- refinement sub-network on G1: conv 3x3-64, ``refine_blocks`` (8) residual blocks, two convs,
  conv 3x3 to RGB with tanh -> G2 (B, 3, sH, sW).

Discriminator: VGG19 conv1-conv5 (2, 2, 4, 4, 4 convs per stage, max-pool after stages 1-4; the
fifth pool of VGG19 is removed), global average pooling, then two parallel linear heads giving
logits: ``real`` (HR vs SR) and ``face`` (face vs non-face).

Convention
----------
Images are float RGB in [0, 1] (project contract); each net maps them to [-1, 1] in its first
operation. G1 and G2 are returned in [0, 1] units (G2 is exactly in [0, 1] through the tanh;
G1 is unbounded, as the paper's linear RGB conv). With ``residual=True`` (not in the paper; the
CPU demo's choice) G1 adds the bicubic up-sampling of the input and G2 adds G1, and both output
convolutions start at zero, so that the untrained generator is exactly bicubic up-sampling; G2 is
then clamped to [0, 1] instead of a tanh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualBlock", "TinyFaceGenerator", "TinyFaceDiscriminator", "bicubic_upsample", "VGG19_CONVS"]

VGG19_CONVS = (2, 2, 4, 4, 4)  # convs per stage of VGG19 conv1..conv5
VGG19_WIDTHS = (64, 128, 256, 512, 512)
_LEAK = 0.2


def _to_signed(images: torch.Tensor) -> torch.Tensor:
    return images * 2.0 - 1.0


def bicubic_upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic up-sampling of (B, 3, H, W) by ``scale`` (align_corners=False), clamped to [0, 1]."""
    return F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


class ResidualBlock(nn.Module):
    """conv 3x3 - ReLU - conv 3x3, plus the identity (EDSR-style, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyFaceGenerator(nn.Module):
    """Up-sampling + refinement generator.

    Args:
        channels: width of both sub-networks (64 in the paper).
        upsample_blocks: residual blocks of the up-sampling sub-network (8).
        refine_blocks: residual blocks of the refinement sub-network (8).
        deconv_channels: width of the stride-2 deconvolutions (256).
        scale: up-sampling factor, a power of two (4 in the paper: two deconvolutions).
        residual: add the bicubic up-sampling to G1 and G1 to G2 (see the module docstring).
    """

    def __init__(
        self,
        channels: int = 64,
        upsample_blocks: int = 8,
        refine_blocks: int = 8,
        deconv_channels: int = 256,
        scale: int = 4,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        if min(channels, deconv_channels) < 1 or min(upsample_blocks, refine_blocks) < 0:
            raise ValueError("channels must be >= 1 and block counts >= 0")
        self.scale = scale
        self.residual = residual
        self.head = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.up_body = nn.Sequential(
            *[ResidualBlock(channels) for _ in range(upsample_blocks)],
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        ups: list[nn.Module] = []
        width = channels
        for _ in range(int(math.log2(scale))):
            ups += [
                nn.ConvTranspose2d(width, deconv_channels, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(inplace=True),
            ]
            width = deconv_channels
        self.upsample = nn.Sequential(*ups)
        self.to_g1 = nn.Conv2d(width, 3, 3, padding=1)
        self.refine = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            *[ResidualBlock(channels) for _ in range(refine_blocks)],
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
        if residual:  # start exactly at bicubic: the corrections begin at zero
            for conv in (self.to_g1, self.refine[-1]):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Super-resolve (B, 3, h, w) LR images in [0, 1].

        Returns:
            G1 (B, 3, s*h, s*w) (up-sampling sub-network) and G2 (B, 3, s*h, s*w) (refined), [0, 1] units.
        """
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"expected (B, 3, h, w) images, got shape {tuple(lr.shape)}")
        feat = self.head(_to_signed(lr))
        feat = feat + self.up_body(feat)
        raw = self.to_g1(self.upsample(feat))  # [-1, 1] units
        if self.residual:
            g1 = bicubic_upsample(lr, self.scale) + raw / 2.0
            g2 = (g1 + self.refine(_to_signed(g1)) / 2.0).clamp(0.0, 1.0)
        else:
            g1 = (raw + 1.0) / 2.0
            g2 = (torch.tanh(self.refine(_to_signed(g1))) + 1.0) / 2.0
        return g1, g2


class TinyFaceDiscriminator(nn.Module):
    """VGG19-style conv1-conv5 trunk (last max-pool removed) with real/fake and face/non-face heads.

    Args:
        widths: channels of the five stages (VGG19: 64, 128, 256, 512, 512).
        convs_per_stage: 3x3 convs per stage (VGG19: 2, 2, 4, 4, 4).
        batch_norm: BatchNorm after every conv (not in VGG19; off by default).
    """

    def __init__(
        self,
        widths: Sequence[int] = VGG19_WIDTHS,
        convs_per_stage: Sequence[int] = VGG19_CONVS,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        widths, convs = tuple(int(w) for w in widths), tuple(int(c) for c in convs_per_stage)
        if len(widths) != len(convs) or not widths or min(widths) < 1 or min(convs) < 1:
            raise ValueError(f"widths {widths} and convs_per_stage {convs} must be equally long and positive")
        layers: list[nn.Module] = []
        in_ch = 3
        for stage, (width, count) in enumerate(zip(widths, convs, strict=True)):
            for _ in range(count):
                layers.append(nn.Conv2d(in_ch, width, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.LeakyReLU(_LEAK, inplace=True))
                in_ch = width
            if stage < len(widths) - 1:  # VGG19's last max-pool is removed
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.real_head = nn.Linear(in_ch, 1)
        self.face_head = nn.Linear(in_ch, 1)
        self.stride = 2 ** (len(widths) - 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for (B, 3, H, W) images in [0, 1] (H, W multiples of ``stride``).

        Returns:
            real (B,) logit of "a real HR image", face (B,) logit of "a face".
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        pooled = self.features(_to_signed(images)).mean(dim=(2, 3))
        return self.real_head(pooled).squeeze(1), self.face_head(pooled).squeeze(1)
