"""Landmark network: a timm backbone with a coordinate-regression or a heatmap head.

Convention
----------
Input: (B, 3, H, W) float RGB in [0, 1]; the backbone's mean/std normalisation (ImageNet for the
usual timm models, read from the model's ``pretrained_cfg``) happens inside ``forward``.
Output: (B, K, 2) landmark coordinates normalised to the crop, ``(x / W, y / H)`` in the pixel-area
frame (0 = left/top edge of the image, 1 = right/bottom edge).

The heatmap head predicts K heatmaps at stride 4 and decodes them by soft-argmax: heatmap cell
``j`` covers ``[j, j + 1)`` heatmap pixels, so its centre ``j + 0.5`` divided by the heatmap width
is its normalised coordinate (no half-pixel bias).
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

__all__ = ["HEADS", "POOLS", "mean_shape", "soft_argmax_2d", "HeatmapHead", "LandmarkRegressor"]

HEADS = ("regression", "heatmap")
# How the regression head reads the last feature map: "avg" pools it globally (C features), "flatten"
# keeps every cell (C * h * w features), so where a part of the face lies survives to the linear layer.
POOLS = ("avg", "flatten")
HEATMAP_STRIDE = 4


def mean_shape(points: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each landmark over the samples where it is visible.

    Args:
        points: (N, K, 2) landmarks in one frame (e.g. crop pixels).
        visible: (N, K) bool; ``None`` means all.

    Returns:
        (K, 2) mean shape, the strongest image-blind predictor of landmarks in that frame.

    Raises:
        ValueError: if a point is visible in no sample (its mean is undefined).
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be (N, K, 2), got {tuple(points.shape)}")
    if visible is None:
        visible = torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
    if visible.shape != points.shape[:2]:
        raise ValueError(f"visible must be (N, K) = {tuple(points.shape[:2])}, got {tuple(visible.shape)}")
    weight = visible.to(points.dtype).unsqueeze(-1)
    count = weight.sum(dim=0)
    if bool((count == 0).any()):
        missing = torch.nonzero(count[:, 0] == 0).flatten().tolist()
        raise ValueError(f"points {missing} are visible in none of the {points.shape[0]} samples")
    return (points * weight).sum(dim=0) / count


def soft_argmax_2d(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Expected location under a softmax of each heatmap.

    Args:
        heatmaps: (B, K, h, w) logits.
        beta: inverse temperature applied to the logits.

    Returns:
        (B, K, 2) normalised (x, y) in [0, 1]: cell centres ``(j + 0.5) / w``, ``(i + 0.5) / h``.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected (B, K, h, w) heatmaps, got shape {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    prob = torch.softmax(heatmaps.float().flatten(2) * beta, dim=-1).view(b, k, h, w)
    xs = (torch.arange(w, device=heatmaps.device, dtype=prob.dtype) + 0.5) / w
    ys = (torch.arange(h, device=heatmaps.device, dtype=prob.dtype) + 0.5) / h
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


class HeatmapHead(nn.Module):
    """Deconvolution head (SimpleBaseline style): stride ``reduction`` features -> K heatmaps at stride 4.

    Each stage doubles the resolution with a 4x4 stride-2 transposed convolution, BatchNorm and ReLU;
    a final 1x1 convolution gives the K heatmap logits.
    """

    def __init__(self, in_channels: int, reduction: int, num_points: int, channels: int = 256) -> None:
        super().__init__()
        stages = math.log2(reduction / HEATMAP_STRIDE)
        if reduction < HEATMAP_STRIDE or not stages.is_integer():
            raise ValueError(f"backbone reduction {reduction} must be {HEATMAP_STRIDE} times a power of two")
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(int(stages)):
            layers += [
                nn.ConvTranspose2d(c, channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c = channels
        self.upsample = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, num_points, kernel_size=1)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.upsample(features))


class LandmarkRegressor(nn.Module):
    """Facial landmark network over any timm backbone.

    Args:
        backbone: timm model name (``timm.list_models()``), e.g. ``"seresnet50"``, ``"resnet18"``.
        num_points: K landmarks.
        head: ``"regression"`` (last feature map -> linear 2K) or ``"heatmap"`` (features_only
            backbone, deconvolution head, soft-argmax).
        pretrained: load the timm pretrained weights (from the hub unless ``weights_file`` is given).
        weights_file: local checkpoint of the backbone, loaded through
            ``pretrained_cfg_overlay=dict(file=...)`` (implies ``pretrained``).
        mean_shape: (K, 2) normalised mean shape; the regression bias starts at it (flattened x, y)
            and the weights near zero, so a fresh model predicts the mean shape. Default: all points
            at the crop centre (0.5, 0.5). Regression head only.
        head_channels: channels of the heatmap head's deconvolution stages.
        heatmap_beta: soft-argmax inverse temperature.
        head_init_std: std of the regression weight initialisation.
        pool: how the regression head reads the (B, C, h, w) last feature map: ``"avg"`` (global
            average pooling, C features) or ``"flatten"`` (all C * h * w cells; needs ``input_size``,
            and the net then accepts only that input size). Regression head only.
        input_size: side of the square input the net is built for (``pool="flatten"`` only).
    """

    def __init__(
        self,
        backbone: str = "seresnet50",
        num_points: int = 68,
        head: str = "regression",
        pretrained: bool = False,
        weights_file: str | Path | None = None,
        mean_shape: torch.Tensor | None = None,
        head_channels: int = 256,
        heatmap_beta: float = 1.0,
        head_init_std: float = 1e-3,
        pool: str = "avg",
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; known: {HEADS}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if mean_shape is not None and head != "regression":
            raise ValueError(
                "mean_shape initialises the regression head; it has no meaning for head='heatmap'"
            )
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; known: {POOLS}")
        if pool == "flatten" and (head != "regression" or input_size is None or input_size < 1):
            raise ValueError(
                f"pool='flatten' needs head='regression' and a positive input_size, got head={head!r}, "
                f"input_size={input_size!r}"
            )
        kwargs: dict = {"pretrained": bool(pretrained or weights_file is not None)}
        if weights_file is not None:
            path = Path(weights_file)
            if not path.is_file():
                raise FileNotFoundError(f"backbone weights file not found: {path}")
            kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        self.head_type = head
        self.num_points = num_points
        self.heatmap_beta = heatmap_beta
        self.pool = pool
        self.grid: tuple[int, int] | None = None  # (h, w) of the flattened feature map
        if head == "regression":
            if pool == "avg":
                self.backbone = timm.create_model(backbone, num_classes=0, **kwargs)
                in_features = int(self.backbone.num_features)
            else:
                self.backbone = timm.create_model(backbone, num_classes=0, global_pool="", **kwargs)
                in_features = self._flat_features(int(input_size))
            self.fc = nn.Linear(in_features, 2 * num_points)
            self._init_regression(mean_shape, head_init_std)
            self.reduction = 1
        else:
            # Every stage runs anyway to reach the deepest one; the head reads only the last output.
            self.backbone = timm.create_model(backbone, features_only=True, **kwargs)
            info = self.backbone.feature_info
            self.reduction = int(info.reduction()[-1])
            self.head = HeatmapHead(int(info.channels()[-1]), self.reduction, num_points, head_channels)
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = cfg.get("std", IMAGENET_DEFAULT_STD)
        self.register_buffer(
            "pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    @torch.no_grad()
    def _flat_features(self, size: int) -> int:
        """C * h * w of the backbone's un-pooled output for a (1, 3, size, size) input; sets ``grid``."""
        was_training = self.backbone.training
        self.backbone.eval()
        features = self.backbone(torch.zeros(1, 3, size, size))
        self.backbone.train(was_training)
        if features.ndim != 4:
            raise ValueError(
                f"pool='flatten' needs a (B, C, h, w) backbone output, got {tuple(features.shape)}"
            )
        self.grid = (int(features.shape[-2]), int(features.shape[-1]))
        return int(features[0].numel())

    def _init_regression(self, mean_shape: torch.Tensor | None, std: float) -> None:
        k = self.num_points
        if mean_shape is None:
            mean_shape = torch.full((k, 2), 0.5)
        mean_shape = torch.as_tensor(mean_shape, dtype=torch.float32)
        if mean_shape.shape != (k, 2):
            raise ValueError(f"mean_shape must be ({k}, 2), got {tuple(mean_shape.shape)}")
        with torch.no_grad():
            nn.init.normal_(self.fc.weight, std=std)
            self.fc.bias.copy_(mean_shape.reshape(-1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] RGB -> backbone input."""
        return (image - self.pixel_mean.to(image.dtype)) / self.pixel_std.to(image.dtype)

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """(B, K, H/4, W/4) heatmap logits (heatmap head only)."""
        if self.head_type != "heatmap":
            raise RuntimeError("heatmaps() needs head='heatmap'")
        h, w = image.shape[-2:]
        if h % self.reduction or w % self.reduction:
            raise ValueError(
                f"input size {h}x{w} must be a multiple of the backbone reduction {self.reduction}"
            )
        return self.head(self.backbone(self.normalize(image))[-1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, K, 2) normalised landmark coordinates."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(image.shape)}")
        if self.head_type == "heatmap":
            return soft_argmax_2d(self.heatmaps(image), self.heatmap_beta)
        features = self.backbone(self.normalize(image))
        if self.pool == "flatten":
            if tuple(features.shape[-2:]) != self.grid:
                raise ValueError(
                    f"pool='flatten' was built for a {self.grid} feature map, got "
                    f"{tuple(features.shape[-2:])} from a {image.shape[-2]}x{image.shape[-1]} input: "
                    "use the input_size the net was built for"
                )
            features = features.flatten(1)
        out = self.fc(features)
        return out.view(image.shape[0], self.num_points, 2)
