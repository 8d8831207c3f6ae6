"""Axis-aligned box helpers: area, IoU, clipping, format conversion and degenerate-box checks.

Convention
----------
Boxes are ``xyxy`` in pixels of the image they belong to, in the pixel-area frame of DESIGN.md:
the top-left corner of the top-left pixel is (0, 0) and pixel ``i`` covers ``[i, i + 1)``. A box
covering pixels 0..9 in x is therefore ``x1 = 0, x2 = 10`` and its width is ``x2 - x1 = 10`` (no
``+ 1`` anywhere). ``cxcywh`` is (centre x, centre y, width, height) in the same frame. A box is
*degenerate* when ``x2 <= x1`` or ``y2 <= y1`` (zero or negative extent) or a coordinate is not
finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "clip_boxes",
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "degenerate_boxes",
    "check_boxes",
]


def _check_last_dim(boxes: Tensor, name: str) -> None:
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes; degenerate boxes have area 0.

    Args:
        boxes: (..., 4) xyxy.

    Returns:
        (...,) areas.
    """
    _check_last_dim(boxes, "boxes")
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union, batched over leading dimensions (differentiable).

    Args:
        boxes1: (..., N, 4) xyxy.
        boxes2: (..., M, 4) xyxy; leading dimensions broadcast against those of ``boxes1``.

    Returns:
        (..., N, M) IoU in [0, 1]; 0 where the union is empty (two degenerate boxes).
    """
    _check_last_dim(boxes1, "boxes1")
    _check_last_dim(boxes2, "boxes2")
    # Per-coordinate views, and in-place updates of the (..., N, M) temporaries: matching calls this
    # on millions of pairs, where every extra full-size tensor costs time and memory.
    x1a, y1a, x2a, y2a = (c.unsqueeze(-1) for c in boxes1.unbind(-1))
    x1b, y1b, x2b, y2b = (c.unsqueeze(-2) for c in boxes2.unbind(-1))
    inter = torch.minimum(x2a, x2b).sub_(torch.maximum(x1a, x1b)).clamp_(min=0)
    inter = inter.mul_(torch.minimum(y2a, y2b).sub_(torch.maximum(y1a, y1b)).clamp_(min=0))
    union = (box_area(boxes1).unsqueeze(-1) + box_area(boxes2).unsqueeze(-2)).sub_(inter)
    return inter.div_(union.clamp_(min=torch.finfo(union.dtype).tiny))


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip ``xyxy`` boxes to the image rectangle ``[0, W] x [0, H]``.

    Args:
        boxes: (..., 4) xyxy.
        image_size: (H, W) in pixels.

    Returns:
        (..., 4) clipped boxes (a new tensor).
    """
    _check_last_dim(boxes, "boxes")
    h, w = image_size
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {image_size}")
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) (cx, cy, w, h)."""
    _check_last_dim(boxes, "boxes")
    xy1, xy2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat(((xy1 + xy2) * 0.5, xy2 - xy1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) xyxy."""
    _check_last_dim(boxes, "boxes")
    c, half = boxes[..., :2], boxes[..., 2:] * 0.5
    return torch.cat((c - half, c + half), dim=-1)


def degenerate_boxes(boxes: Tensor) -> Tensor:
    """Bool mask of degenerate boxes (non-positive width or height, or a non-finite coordinate).

    Args:
        boxes: (..., 4) xyxy.

    Returns:
        (...,) bool.
    """
    _check_last_dim(boxes, "boxes")
    bad_extent = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
    return bad_extent | ~torch.isfinite(boxes).all(dim=-1)


def check_boxes(boxes: Tensor, mask: Tensor | None = None, name: str = "boxes") -> None:
    """Raise ``ValueError`` naming the first degenerate box (among ``mask``-selected ones).

    Args:
        boxes: (..., 4) xyxy.
        mask: (...,) bool; only these boxes are checked (e.g. the ``valid`` mask of padded targets).
        name: how the error message calls the tensor.
    """
    bad = degenerate_boxes(boxes)
    if mask is not None:
        bad = bad & mask
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        value = [round(float(v), 4) for v in boxes[index]]
        raise ValueError(
            f"{name}{list(index)} is degenerate (x2 <= x1, y2 <= y1 or non-finite): {value}; "
            f"{int(bad.sum())} degenerate box(es) in total. Drop them or mark them invalid upstream."
        )
