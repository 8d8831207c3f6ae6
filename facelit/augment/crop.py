"""One crop-and-resize for every path: CPU workers, batched on the device, face-crop datasets.

``crop_resize(images, boxes, out_size)`` resamples the region ``boxes`` of each image into an
``out_size`` image with ``torchvision.ops.roi_align`` (``aligned=True``): bilinear samples inside
each output pixel's footprint, averaged. With ``antialias`` the number of samples per output pixel
and axis is ``ceil(region / output)`` (roi_align's adaptive sampling): a box filter over the
footprint when shrinking, a single bilinear sample at the pixel centre when enlarging (then equal
to ``F.interpolate(mode="bilinear", align_corners=False)`` away from the image border). Without
``antialias`` one sample per output pixel. Batched over images with one box each, on any device,
differentiable in the image.

Convention
----------
Boxes are ``xyxy`` in pixels of the pixel-area frame (DESIGN.md: pixel ``i`` covers ``[i, i + 1)``)
and need not be integral, square or inside the image. Output pixel ``(u, v)`` covers the source
area ``[x1 + u * sx, x1 + (u + 1) * sx) x [y1 + v * sy, y1 + (v + 1) * sy)`` with
``sx = (x2 - x1) / W_out``, ``sy = (y2 - y1) / H_out``, so a point maps by ``x' = (x - x1) / sx``.
Outside the image the source is ``fill`` (bilinear taps blend it in at the border, as
``grid_sample`` with constant padding would; roi_align's own edge clamping never applies because
the image is padded by one ``fill`` pixel first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ["crop_resize"]


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out_size: tuple[int, int] | int,
    fill: float = 0.0,
    antialias: bool = True,
) -> torch.Tensor:
    """Crop ``boxes`` out of ``images`` and resize them to ``out_size`` (anti-aliased when shrinking).

    Args:
        images: (B, C, H, W) float images, or one (C, H, W) image.
        boxes: (B, 4) xyxy region per image (pixel-area frame), or (4,) for one image.
        out_size: (height, width) of the output, or one int for a square.
        fill: value of the source outside the image.
        antialias: average ``ceil(region / output)`` samples per output pixel and axis.

    Returns:
        (B, C, out_h, out_w) (or (C, out_h, out_w) for one image), dtype of ``images``.

    Raises:
        ValueError: bad shapes, a non-float image, a degenerate or non-finite box, a size < 1.
    """
    single = images.dim() == 3
    if single:
        images, boxes = images[None], boxes.reshape(1, 4)
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"crop_resize: expected float (B, C, H, W) or (C, H, W) images, got {images.dtype} "
                         f"{tuple(images.shape)}")  # fmt: skip
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"crop_resize: expected ({images.shape[0]}, 4) boxes, got {tuple(boxes.shape)}")
    out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else (int(out_size[0]), int(out_size[1]))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"crop_resize: output size must be >= 1, got {(out_h, out_w)}")
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"crop_resize: degenerate crop box {i}: {boxes[i].tolist()}")
    source = F.pad(images - fill if fill else images, (1, 1, 1, 1))  # outside reads exactly `fill`
    index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
    rois = torch.cat([index, boxes + 1.0], 1)  # +1: the padding
    samples = -1 if antialias else 1  # -1: roi_align's adaptive ceil(region / output) per axis
    out = roi_align(source.float(), rois, (out_h, out_w), 1.0, samples, aligned=True).to(images.dtype)
    if fill:
        out = out + fill
    return out[0] if single else out
