"""Exact building blocks of the MTCNN cascade: area resampling of integer crops from a summed-area
table (vectorised over boxes), squaring and calibration of boxes, and greedy NMS on the "Min"
overlap (vectorised as Cluster-NMS). Shapes in the docstrings; boxes xyxy in image pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["integral_image", "area_crops", "square_boxes", "calibrate", "min_overlap_nms"]


# ---- resampling ------------------------------------------------------------------------------------
def integral_image(images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H + 1, W + 1, C) float64 summed-area table with a zero first row/column."""
    b, c, h, w = images.shape
    table = images.new_zeros(b, h + 1, w + 1, c, dtype=torch.float64)
    inner = table[:, 1:, 1:]
    torch.cumsum(images.permute(0, 2, 3, 1).double(), dim=1, out=inner)
    inner.cumsum_(dim=2)
    return table


def _bin_edges(start: Tensor, length: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Adaptive-pool bins of ``size`` cells over [start, start + length): (K, size) first/last+1."""
    i = torch.arange(size, device=start.device)
    lo = (i[None] * length[:, None]).div(size, rounding_mode="floor")
    hi = ((i[None] + 1) * length[:, None] + size - 1).div(size, rounding_mode="floor")
    return start[:, None] + lo, start[:, None] + hi


def area_crops(
    table: Tensor, image_index: Tensor, x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor, size: int
) -> Tensor:
    """Area-resample integer crops [y0, y1) x [x0, x1) to (K, C, size, size) (adaptive average pool).

    Args:
        table: (B, H + 1, W + 1, C) summed-area table (:func:`integral_image`).
        image_index, x0, y0, x1, y1: (K,) int64; crops must be non-empty and inside their image.
        size: output side.

    Returns:
        (K, C, size, size) float32 crop means, equal to ``F.interpolate(crop, size, mode="area")``,
        in channels_last memory (the conv/pool kernels of R/O-Net run 2-3x faster on CPU in it).
    """
    r0, r1 = _bin_edges(y0, y1 - y0, size)
    c0, c1 = _bin_edges(x0, x1 - x0, size)
    b = image_index[:, None, None]
    r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    total = table[b, r1, c1] - table[b, r0, c1] - table[b, r1, c0] + table[b, r0, c0]
    count = ((r1 - r0) * (c1 - c0)).unsqueeze(-1)
    return (total / count).float().permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


# ---- box helpers ---------------------------------------------------------------------------------
def square_boxes(boxes: Tensor) -> Tensor:
    """(K, 4) xyxy -> the square of side max(w, h) on the same centre (the release's ``rerec``)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def calibrate(boxes: Tensor, offsets: Tensor, plus_one: bool) -> Tensor:
    """Shift box corners by ``offsets`` (K, 4) times the side (side + 1 for R/O-Net, as released)."""
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes + offsets * torch.stack([w, h, w, h], dim=1)


def min_overlap_nms(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
    """Greedy NMS on the "Min" overlap (intersection / smaller area, +1 pixel areas), per group.

    Vectorised as Cluster-NMS (Zheng et al. 2020): iterating "suppressed by a kept, higher-scoring
    box" from all-kept reaches exactly the greedy result, each iteration one (K, K) product.

    Args:
        boxes: (K, 4) xyxy; scores: (K,); groups: (K,) int (boxes of different groups never suppress).

    Returns:
        indices of the kept boxes, by descending score.
    """
    order = scores.argsort(descending=True)
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    wh = (
        torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2]) + 1
    ).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    overlap = inter / torch.minimum(area[:, None], area[None, :])
    suppress = (overlap > threshold) & (g[:, None] == g[None, :])
    suppress = torch.triu(suppress, diagonal=1)  # row i (higher score) suppresses column j
    keep = torch.ones(len(b), dtype=torch.bool, device=b.device)
    for _ in range(len(b)):
        new_keep = ~(suppress & keep[:, None]).any(0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]
