"""One crop-and-resize for every path: CPU workers, batched on the device, face-crop datasets.

``crop_resize(images, boxes, out_size)`` resamples the region ``boxes`` of each image into an
``out_size`` image with the arithmetic of ``torchvision.ops.roi_align`` (``aligned=True``): bilinear
samples inside each output pixel's footprint, averaged. With ``antialias`` the number of samples per
output pixel and axis is ``ceil(region / output)`` (roi_align's adaptive sampling): a box filter over
the footprint when shrinking, a single bilinear sample at the pixel centre when enlarging (then equal
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
``grid_sample`` with constant padding would): the sampling is roi_align's on the image padded by one
``fill`` pixel, whose edge clamping therefore never reaches a real pixel.

Implementation
--------------
roi_align's weights factor over the axes (a bilinear weight is a product of a row weight and a
column weight, and a sample is dropped when its row OR its column is out of range), so the average
of the ``grid_h x grid_w`` samples is ``R_y @ image @ R_x^T`` with banded per-axis matrices. Each
band has ``2 * grid`` taps per output pixel (two bilinear neighbours per sample), applied as weighted
row sums (``embedding_bag``) over the image rows, then over the columns of the window the column band
touches: no padded copy of the image, ``2 * grid`` multiply-adds per output value and axis. Equal to
roi_align up to float rounding (``tests/unit/test_crop_resize_speed.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_resize"]

_ALIGNED_OFFSET = 0.5  # roi_align(aligned=True): pixel centres at integer + 0.5
_PAD = 1.0  # the virtual one-pixel ``fill`` border around the image


def _axis_taps(
    start: torch.Tensor, end: torch.Tensor, out: int, size: int, antialias: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """roi_align's sampling along one axis as taps into the unpadded image.

    Args:
        start, end: (B,) float32 box edges along the axis (pixel-area frame).
        out: number of output pixels along the axis.
        size: image size along the axis.

    Returns:
        ``(index, weight)``, both (B, out, 2 * G) (G = the largest sample count per output pixel
        in the batch): source indices in ``[0, size)`` and their weights (zero for the padding, for
        dropped samples and for unused slots), already divided by the sample count.
    """
    padded = size + 2 * int(_PAD)
    roi_start = (start + _PAD) - _ALIGNED_OFFSET
    roi_len = ((end + _PAD) - _ALIGNED_OFFSET) - roi_start
    bin_size = roi_len / out  # (B,)
    grid = torch.ceil(roi_len / out).clamp_(min=1.0) if antialias else torch.ones_like(roi_len)
    g_max = int(grid.max()) if grid.numel() else 1
    dev, dt = start.device, start.dtype
    ph = torch.arange(out, device=dev, dtype=dt)[None, :, None]
    iy = torch.arange(g_max, device=dev, dtype=dt)[None, None, :]
    b_, g_ = bin_size[:, None, None], grid[:, None, None]
    pos = (roi_start[:, None, None] + ph * b_) + ((iy + 0.5) * b_) / g_  # (B, out, G)
    used = (iy < g_) & (pos >= -1.0) & (pos <= padded)
    pos = pos.clamp(min=0.0)
    low = pos.floor()
    top = low >= padded - 1
    low = torch.where(top, torch.full_like(low, padded - 1), low)
    frac = torch.where(top, torch.zeros_like(pos), pos - low)
    scale = used.to(dt) / g_
    index = torch.stack((low, torch.where(top, low, low + 1.0)), -1).flatten(-2).long() - int(_PAD)
    weight = torch.stack(((1.0 - frac) * scale, frac * scale), -1).flatten(-2)
    inside = (index >= 0) & (index < size)
    return index.clamp_(0, size - 1), torch.where(inside, weight, torch.zeros_like(weight))


def _column_window(index: torch.Tensor, weight: torch.Tensor) -> tuple[int, int]:
    """[lo, hi) of the source indices with a nonzero weight ((0, 1) when there is none)."""
    hit = index[weight != 0]
    if hit.numel() == 0:
        return 0, 1
    return int(hit.min()), int(hit.max()) + 1


def _weighted_rows(table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted sums of rows: (N, L) table, (P, R, K) taps into the table's P blocks of N / P rows
    -> (P * R, L), ``out[p, r] = sum_k weight[p, r, k] * table[p * N / P + index[p, r, k]]``
    (``embedding_bag``: one pass over the taps, differentiable in the table)."""
    p, r, k = index.shape
    offsets = torch.arange(p, device=index.device)[:, None, None] * (table.shape[0] // p)
    return F.embedding_bag(
        (index + offsets).view(p * r, k), table, mode="sum", per_sample_weights=weight.reshape(p * r, k)
    )


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
    b, c, height, width = images.shape
    iy, wy = _axis_taps(boxes[:, 1], boxes[:, 3], out_h, height, antialias)
    ix, wx = _axis_taps(boxes[:, 0], boxes[:, 2], out_w, width, antialias)
    x0, x1 = _column_window(ix, wx)
    ix = (ix - x0).clamp_(0, x1 - x0 - 1)  # zero-weight taps may fall outside the window
    # rows: (B * C * H, W) table -> (B, C, out_h, W)
    table = images.float().contiguous().view(b * c * height, width)
    rows = _weighted_rows(table, iy.repeat_interleave(c, 0), wy.repeat_interleave(c, 0))
    # columns: the window's columns as rows of a (B * C * (x1 - x0), out_h) table -> (B, C, out_w, out_h)
    cols = rows.view(b * c, out_h, width)[:, :, x0:x1].transpose(1, 2).contiguous()
    out = _weighted_rows(cols.view(-1, out_h), ix.repeat_interleave(c, 0), wx.repeat_interleave(c, 0))
    out = out.view(b, c, out_w, out_h).transpose(2, 3)  # (B, C, out_h, out_w)
    if fill:  # the outside reads `fill`: out = R_y (image - fill) R_x^T + fill
        out = out + fill * (1.0 - wy.sum(-1)[:, None, :, None] * wx.sum(-1)[:, None, None, :])
    out = out.to(images.dtype).contiguous()
    return out[0] if single else out
