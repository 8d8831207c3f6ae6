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
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from facelit.augment.crop import crop_resize

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
_TURBO_JPEG_MODES = ("L", "RGB")  # JPEG modes decoded by torchvision (CMYK etc. go through PIL)


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
        with Image.open(path) as im:  # reads the header only
            if im.format == "JPEG" and im.mode in _TURBO_JPEG_MODES:
                # libjpeg-turbo through torchvision: PIL's pixels (tests/unit/test_wider_read_speed.py),
                # planar (C, H, W) without PIL's interleaved copy
                pixels = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
            else:
                pixels = torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
    except (OSError, SyntaxError, RuntimeError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    # planar float in one pass over the interleaved bytes (``.float()`` would keep their strides)
    return torch.empty(pixels.shape, dtype=torch.float32).copy_(pixels).div_(255.0)


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


def crop_and_resize(
    image: torch.Tensor, box: torch.Tensor, size: int, antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the region ``box`` of ``image`` into an (S, S) crop.

    The one crop/resize of the project (``facelit.augment.crop.crop_resize``): bilinear samples
    averaged over each crop pixel's footprint (anti-aliased when shrinking), zero outside the image.

    Args:
        image: (3, H, W) float image.
        box: (4,) xyxy crop box in image pixels (need not be square; need not lie inside the image).
        size: crop side S in pixels.
        antialias: average several samples per crop pixel when down-scaling.

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
    affine = torch.tensor([[1.0 / sx, 0.0, -x1 / sx], [0.0, 1.0 / sy, -y1 / sy]], dtype=torch.float32)
    return crop_resize(image, box, (size, size), antialias=antialias), affine


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
