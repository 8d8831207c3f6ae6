"""Face crops around landmarks or boxes, shared by every landmark dataset reader.

One crop path serves all readers (300W-LP, AFLW2000-3D, AFLW, AFLW-19, 300W): a square crop box
is chosen around the face, the image is resampled into an (S, S) crop with ``grid_sample``, and
the landmarks and the face box are mapped by the very same affine transform. The result is a
face-crop sample of :mod:`facelit.batch`.

Convention
----------
Points are (x, y) in the pixel-AREA frame: the top-left corner of the top-left pixel is (0, 0) and
pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``. The crop affine ``A`` (2, 3) maps
original-image points to crop points, ``p_crop = A @ [x, y, 1]``; for a crop box ``(x1, y1, x2, y2)``
and crop size ``S`` it is ``x_crop = (x - x1) * S / (x2 - x1)`` (same for y), exact in the area frame:
crop pixel ``u`` covers the source interval ``[x1 + u * s, x1 + (u + 1) * s)``, ``s = (x2 - x1) / S``.

Annotation files mark positions in one of two other frames; readers convert at read time with
the offsets below:

* MATLAB tools (3DDFA's 300W-LP / AFLW2000-3D ``.mat`` files, the AFLW-19 ``AFLWinfo_release.mat``,
  the iBUG ``.pts`` files that the 300W CSVs copy) are 1-based with integers at pixel centres:
  ``x_area = x - 1 + 0.5`` (:data:`MATLAB_TO_AREA` = -0.5). 3DDFA's own Python port subtracts 1
  from its MATLAB-derived coordinates "for Python compatibility", which confirms the 1-based frame.
* 0-based tools with integers at pixel centres (OpenCV-style; the AFLW annotation tool's
  ``aflw.sqlite``): ``x_area = x + 0.5`` (:data:`ZERO_BASED_TO_AREA`).

The shift changes no NME (prediction and ground truth live in the same frame); it matters for
flips (``x' = W - x``) and for pixel-exact overlays.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "MATLAB_TO_AREA",
    "ZERO_BASED_TO_AREA",
    "load_rgb",
    "square_box",
    "crop_box_from_points",
    "crop_and_resize",
    "apply_affine",
    "points_box",
    "make_crop_sample",
]

MATLAB_TO_AREA = -0.5
ZERO_BASED_TO_AREA = 0.5


def load_rgb(path: str | Path) -> torch.Tensor:
    """Read an image file as float32 RGB in [0, 1], shape (3, H, W).

    Raises:
        FileNotFoundError: naming the path when the file does not exist.
        ValueError: naming the path when the file is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def points_box(points: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Tight xyxy box (4,) of the visible points of one face.

    Args:
        points: (K, 2) points.
        visible: (K,) bool; ``None`` means all points.

    Raises:
        ValueError: when no point is visible.
    """
    if points.ndim != 2 or points.shape[-1] != 2:
        raise ValueError(f"expected (K, 2) points, got shape {tuple(points.shape)}")
    pts = points if visible is None else points[visible.bool()]
    if pts.shape[0] == 0:
        raise ValueError("cannot build a box: no visible point")
    return torch.cat([pts.min(dim=0).values, pts.max(dim=0).values])


def square_box(box: torch.Tensor, margin: float) -> torch.Tensor:
    """Square box (4,) xyxy centred on ``box`` with side ``max(w, h) * (1 + 2 * margin)``.

    ``margin`` is the fraction of the longer side added on each side (0.25 adds a quarter of the
    face size left, right, above and below).

    Raises:
        ValueError: for a negative margin or a degenerate box (both sides zero or not finite).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    box = box.to(torch.float32)
    wh = box[2:] - box[:2]
    side = float(wh.max()) * (1.0 + 2.0 * margin)
    if not math.isfinite(side) or side <= 0:
        raise ValueError(f"degenerate face box {box.tolist()}: cannot build a crop")
    centre = (box[:2] + box[2:]) / 2
    half = side / 2
    return torch.cat([centre - half, centre + half])


def crop_box_from_points(points: torch.Tensor, visible: torch.Tensor | None, margin: float) -> torch.Tensor:
    """Square crop box (4,) xyxy around the visible points: :func:`square_box` of their tight box."""
    return square_box(points_box(points, visible), margin)


def _pooled_region(
    image: torch.Tensor, box: tuple[float, float, float, float], factor: int
) -> tuple[torch.Tensor, float, float]:
    """Box-filter the part of ``image`` under ``box`` by an integer ``factor``.

    The region is aligned to multiples of ``factor``, keeps one pooled pixel of slack on each side
    for the bilinear taps, is limited to the image (plus that slack: outside is zero anyway) and is
    zero-filled beyond the image, so pooled pixel ``j`` covers image pixels
    ``[c0 + j * f, c0 + (j + 1) * f)`` exactly: a point ``x`` maps to ``(x - c0) / f``.

    Returns:
        pooled (C, h, w) region (possibly empty) and its origin (c0, r0) in image pixels.
    """
    x1, y1, x2, y2 = box
    h, w = image.shape[-2:]
    f = factor
    c0 = max(math.floor(x1 / f) - 1, -1) * f
    r0 = max(math.floor(y1 / f) - 1, -1) * f
    c1 = min(math.ceil(x2 / f) + 1, math.ceil(w / f) + 1) * f
    r1 = min(math.ceil(y2 / f) + 1, math.ceil(h / f) + 1) * f
    if c1 <= c0 or r1 <= r0:  # the box misses the image entirely
        return image.new_zeros((image.shape[0], 0, 0)), float(c0), float(r0)
    region = image.new_zeros((image.shape[0], r1 - r0, c1 - c0))
    xs0, xs1, ys0, ys1 = max(c0, 0), min(c1, w), max(r0, 0), min(r1, h)
    if xs1 > xs0 and ys1 > ys0:
        region[:, ys0 - r0 : ys1 - r0, xs0 - c0 : xs1 - c0] = image[:, ys0:ys1, xs0:xs1]
    return F.avg_pool2d(region.unsqueeze(0), f)[0], float(c0), float(r0)


def crop_and_resize(
    image: torch.Tensor, box: torch.Tensor, size: int, antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the region ``box`` of ``image`` into an (S, S) crop.

    Bilinear sampling with ``grid_sample(align_corners=False)`` evaluated at crop pixel centres;
    regions outside the image are zero. When the crop shrinks the region by ``s >= 2`` image pixels
    per crop pixel, ``antialias`` first box-filters the region by the integer ``floor(s)`` (aligned
    so that the area-frame mapping stays exact), then samples the remaining factor in [1, 2).

    Args:
        image: (3, H, W) float image.
        box: (4,) xyxy crop box in image pixels (need not be square; need not lie inside the image).
        size: crop side S in pixels.
        antialias: box-filter before sampling when down-scaling by 2 or more.

    Returns:
        crop (3, S, S) and the affine (2, 3) that maps image points to crop points.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    box = box.to(torch.float64)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1) or not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"degenerate crop box {box.tolist()}")
    sx, sy = (x2 - x1) / size, (y2 - y1) / size
    factor = int(math.floor(min(sx, sy))) if antialias else 1
    src, ox, oy, f = image, 0.0, 0.0, 1
    if factor >= 2:
        src, ox, oy = _pooled_region(image, (x1, y1, x2, y2), factor)
        f = factor
    affine = torch.tensor([[1.0 / sx, 0.0, -x1 / sx], [0.0, 1.0 / sy, -y1 / sy]], dtype=torch.float32)
    if src.shape[-1] == 0 or src.shape[-2] == 0:  # the box misses the image entirely
        return image.new_zeros((image.shape[0], size, size)), affine
    h, w = src.shape[-2:]
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    gx = ((x1 + centres * sx - ox) / f) * (2.0 / w) - 1.0
    gy = ((y1 + centres * sy - oy) / f) * (2.0 / h) - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (S, S, 2) as (x, y)
    crop = F.grid_sample(
        src.unsqueeze(0),
        grid.unsqueeze(0).to(src.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return crop[0], affine


def apply_affine(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Map (..., K, 2) points with a (2, 3) affine: ``p' = A[:, :2] @ p + A[:, 2]``."""
    affine = affine.to(points.dtype)
    return points @ affine[:, :2].T + affine[:, 2]


def make_crop_sample(
    image: torch.Tensor,
    points: torch.Tensor,
    visible: torch.Tensor,
    crop_box: torch.Tensor,
    size: int,
    *,
    pose: torch.Tensor | None = None,
    face_box: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Crop one face and build a face-crop sample of :mod:`facelit.batch`.

    Args:
        image: (3, H, W) float RGB in [0, 1].
        points: (K, 2) landmarks in image pixels (area frame). Values at invisible points are kept
            as given (zeros when the file has none).
        visible: (K,) bool.
        crop_box: (4,) xyxy crop region in image pixels.
        size: crop side S.
        pose: (3,) yaw, pitch, roll in degrees, or ``None`` when the dataset has no pose.
        face_box: (4,) xyxy face box in image pixels; ``None`` uses the tight box of the visible
            points (or the crop box itself when no point is visible).
        meta: extra per-sample information (file name ...), copied into the sample's ``meta``.

    Returns:
        dict with ``image`` (3, S, S), ``landmarks`` (K, 2) and ``box`` (4,) in crop pixels,
        ``visible`` (K,) bool, ``pose`` (3,) (zeros when unknown) and ``meta`` holding
        ``has_pose``, ``orig_landmarks`` (K, 2), ``orig_size`` (H, W), ``affine`` (2, 3) plus ``meta``.
    """
    visible = visible.to(torch.bool)
    points = points.to(torch.float32)
    crop, affine = crop_and_resize(image, crop_box, size)
    if face_box is None:
        face_box = points_box(points, visible) if bool(visible.any()) else crop_box
    corners = apply_affine(face_box.to(torch.float32).view(2, 2), affine).view(4)
    info: dict[str, Any] = dict(meta or {})
    info.update(
        has_pose=pose is not None,
        orig_landmarks=points.clone(),
        orig_size=tuple(image.shape[-2:]),
        affine=affine,
    )
    return {
        "image": crop.clamp_(0.0, 1.0),
        "landmarks": apply_affine(points, affine),
        "landmarks_visible": visible,
        "pose": torch.zeros(3) if pose is None else pose.to(torch.float32),
        "boxes": corners,
        "meta": info,
    }
