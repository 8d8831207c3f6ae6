"""The warping network of interspecies keypoint transfer (Rashid et al. 2017).

A CNN (AlexNet-style conv1-conv5, or any timm backbone by name) followed by a 1x1 convolution and
two fully connected layers with BatchNorm predicts the offsets of a ``grid x grid`` TPS control
grid. Control point ``c_j`` of the OUTPUT (warped) image is sampled from ``c_j + offset_j`` of the
INPUT image; the thin-plate spline through these pairs (:func:`facelit.geometry.tps.fit_tps`)
gives a differentiable dense sampling grid. The last layer starts at zero: the identity warp.

Convention: control points and offsets are in ``grid_sample``'s normalised frame
(:mod:`facelit.geometry.tps`).
"""

from __future__ import annotations

from torch import Tensor, nn

from facelit.geometry.tps import TpsWarp, control_grid, fit_tps, sampling_grid, warp_image
from facelit.nets.backbones import ImageNormalize, create_backbone

__all__ = ["ALEXNET", "AlexNetConvs", "WarpingNet"]

ALEXNET = "alexnet"
_ALEX_CHANNELS = (96, 256, 384, 384, 256)


class AlexNetConvs(nn.Module):
    """AlexNet's conv1-conv5 (ReLU, max-pooling after conv1, conv2 and conv5), widths times ``width``.

    conv1 is 5x5 stride 2 instead of 11x11 stride 4 so that small face crops (64 px) keep a 4 x 4 map
    (total stride 16). ``out_channels`` gives the conv5 width.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(8, int(round(ch * width))) for ch in _ALEX_CHANNELS]
        relu = nn.ReLU(inplace=True)
        self.body = nn.Sequential(
            nn.Conv2d(3, c[0], 5, stride=2, padding=2),
            relu,
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c[0], c[1], 5, padding=2),
            relu,
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c[1], c[2], 3, padding=1),
            relu,
            nn.Conv2d(c[2], c[3], 3, padding=1),
            relu,
            nn.Conv2d(c[3], c[4], 3, padding=1),
            relu,
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.out_channels = c[4]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class WarpingNet(nn.Module):
    """Predict a TPS warp (output -> input) of an image.

    Args:
        backbone: ``"alexnet"`` (:class:`AlexNetConvs`) or a timm model name (its last feature map).
        width: channel multiplier of the AlexNet-style backbone.
        grid_size: control grid side (5 in the paper).
        grid_extent: the control grid spans ``[-extent, extent]^2`` of the normalised output frame.
        reduce_channels: output channels of the 1x1 conv.
        hidden: width of the first FC layer.
        pooled: the reduced map is average-pooled to ``pooled x pooled`` before the FCs.
        weights_file: local timm weights for the backbone (timm backbones only).
    """

    def __init__(
        self,
        backbone: str = ALEXNET,
        width: float = 1.0,
        grid_size: int = 5,
        grid_extent: float = 1.0,
        reduce_channels: int = 64,
        hidden: int = 256,
        pooled: int = 4,
        weights_file: str | None = None,
    ) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        if backbone == ALEXNET:
            if weights_file is not None:
                raise ValueError("weights_file is only supported for timm backbones")
            self.backbone: nn.Module = AlexNetConvs(width)
            channels = self.backbone.out_channels
        else:
            body = create_backbone(backbone, out_strides=(32,), weights_file=weights_file)
            self.backbone = body
            channels = body.feature_info.channels()[-1]
        self.timm = backbone != ALEXNET
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, reduce_channels, 1, bias=False),
            nn.BatchNorm2d(reduce_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pooled),
            nn.Flatten(),
        )
        self.fc1 = nn.Sequential(
            nn.Linear(reduce_channels * pooled * pooled, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fc2 = nn.Linear(hidden, 2 * grid_size * grid_size)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.register_buffer("control", control_grid(grid_size, grid_extent), persistent=False)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters after the backbone (1x1 conv and FCs)."""
        return [*self.reduce.parameters(), *self.fc1.parameters(), *self.fc2.parameters()]

    def offsets(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, G * G, 2) control-point offsets (normalised frame)."""
        x = self.normalize(images)
        feats = self.backbone(x)
        if self.timm:
            feats = feats[-1]
        return self.fc2(self.fc1(self.reduce(feats))).view(images.shape[0], -1, 2)

    def forward(self, images: Tensor) -> TpsWarp:
        """(B, 3, H, W) -> the predicted output -> input TPS warp of each image."""
        offsets = self.offsets(images)
        src = self.control.to(offsets.dtype).expand(offsets.shape[0], -1, -1)
        return fit_tps(src, src + offsets)

    @staticmethod
    def warp(images: Tensor, warp: TpsWarp) -> tuple[Tensor, Tensor]:
        """Apply ``warp`` to (B, 3, H, W) images (mean-colour background).

        Returns (warped (B, 3, H, W), grid (B, H, W, 2))."""
        grid = sampling_grid(warp, (images.shape[-2], images.shape[-1]))
        return warp_image(images, grid, fill="mean"), grid
