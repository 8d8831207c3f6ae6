"""Five-point face alignment: least-squares similarity (Umeyama) to the recognition templates.

Convention
----------
Points are (x, y) in the pixel-AREA frame of DESIGN.md (pixel ``i`` covers ``[i, i + 1)``).
The SphereFace template was published in the 1-based pixel coordinates of its MATLAB alignment
code, where pixel ``j`` (1-based) has its centre at ``j``; in our frame that centre is at
``j - 0.5``, so every published coordinate is shifted by ``-0.5``
(``facelit.datasets.crops.MATLAB_TO_AREA``).
The 112x112 template (insightface/ArcFace) is the 112x96 one with ``x + 8`` (the 16 extra columns
split evenly). Templates for other output sizes scale both axes with the size (exact in the area
frame, whose origin is the image corner). Matrices are (B, 3, 3) maps from input to output pixels,
as in ``facelit.augment.geometry``; images are warped there (one batched kornia call).
"""

from __future__ import annotations

from typing import Literal

import torch

from facelit.augment.geometry import transform_points, warp_image
from facelit.datasets.crops import MATLAB_TO_AREA

__all__ = [
    "SPHEREFACE_TEMPLATE_MATLAB",
    "TEMPLATE_SIZES",
    "TemplateName",
    "alignment_template",
    "umeyama_similarity",
    "align_faces",
]

SPHEREFACE_TEMPLATE_MATLAB = (
    (30.2946, 51.6963),  # left eye (subject's right eye, image left)
    (65.5318, 51.5014),  # right eye
    (48.0252, 71.7366),  # nose tip
    (33.5493, 92.3655),  # left mouth corner
    (62.7299, 92.2041),  # right mouth corner
)
"""The official 5-point template of SphereFace's MATLAB alignment, 1-based pixels of a 112x96 crop."""

TemplateName = Literal["112x96", "112x112"]
TEMPLATE_SIZES: dict[str, tuple[int, int]] = {"112x96": (112, 96), "112x112": (112, 112)}
"""(height, width) at which each template is defined."""
_WIDE_TEMPLATE_SHIFT = 8.0  # 112x112 = 112x96 with x + 8


def alignment_template(
    height: int | None = None, width: int | None = None, name: TemplateName = "112x96"
) -> torch.Tensor:
    """The 5-point template (5, 2) in our frame for an output crop of ``height x width`` pixels.

    Args:
        height, width: output size; default the template's own size (112x96 or 112x112).
        name: ``112x96`` (SphereFace) or ``112x112`` (x + 8, ArcFace-style crops).
    """
    if name not in TEMPLATE_SIZES:
        raise ValueError(f"unknown alignment template {name!r}; use one of {list(TEMPLATE_SIZES)}")
    ref_h, ref_w = TEMPLATE_SIZES[name]
    height, width = height or ref_h, width or ref_w
    if height < 1 or width < 1:
        raise ValueError(f"template size must be positive, got {height}x{width}")
    pts = torch.tensor(SPHEREFACE_TEMPLATE_MATLAB, dtype=torch.float64) + MATLAB_TO_AREA
    if name == "112x112":
        pts[:, 0] += _WIDE_TEMPLATE_SHIFT
    pts[:, 0] *= width / ref_w
    pts[:, 1] *= height / ref_h
    return pts.float()


def umeyama_similarity(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

    Umeyama (1991), batched and closed form for 2-D points: with centred points and the weighted
    cross terms a = sum w (x_s x_d + y_s y_d), b = sum w (x_s y_d - y_s x_d), the optimum is
    s R = [[a, -b], [b, a]] / sum w |p_s|^2, the translation matches the weighted centroids.

    Args:
        src: (B, N, 2) source points (e.g. detected landmarks), N >= 2.
        dst: (B, N, 2) or (N, 2) destination points (the template).
        weights: (B, N) non-negative weights (e.g. visibility), default 1; >= 2 points must weigh.

    Returns:
        (B, 3, 3) matrices mapping source pixels to destination pixels.
    """
    if src.dim() != 3 or src.shape[-1] != 2 or src.shape[1] < 2:
        raise ValueError(f"src must be (B, N >= 2, 2), got {tuple(src.shape)}")
    dst = dst.to(src).expand_as(src) if dst.dim() == 2 else dst.to(src)
    if dst.shape != src.shape:
        raise ValueError(f"dst {tuple(dst.shape)} does not match src {tuple(src.shape)}")
    w = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device) if weights is None else weights.to(src)
    if w.shape != src.shape[:2]:
        raise ValueError(f"weights must be {tuple(src.shape[:2])}, got {tuple(w.shape)}")
    if bool(((w > 0).sum(dim=1) < 2).any()):
        raise ValueError("umeyama_similarity needs at least two weighted points per face")
    total = w.sum(dim=1, keepdim=True)
    mu_s = (w[..., None] * src).sum(1) / total
    mu_d = (w[..., None] * dst).sum(1) / total
    s0, d0 = src - mu_s[:, None], dst - mu_d[:, None]
    a = (w * (s0 * d0).sum(-1)).sum(1)
    b = (w * (s0[..., 0] * d0[..., 1] - s0[..., 1] * d0[..., 0])).sum(1)
    var = (w * (s0**2).sum(-1)).sum(1).clamp_min(torch.finfo(src.dtype).tiny)
    ca, sb = a / var, b / var
    linear = torch.stack([torch.stack([ca, -sb], -1), torch.stack([sb, ca], -1)], -2)  # (B, 2, 2)
    shift = mu_d - (linear @ mu_s[..., None]).squeeze(-1)
    out = torch.zeros(src.shape[0], 3, 3, dtype=src.dtype, device=src.device)
    out[:, :2, :2], out[:, :2, 2], out[:, 2, 2] = linear, shift, 1.0
    return out


def align_faces(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    size: tuple[int, int] = TEMPLATE_SIZES["112x96"],
    template: TemplateName = "112x96",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp faces so that their 5 landmarks land on the template (batched, on the images' device).

    Args:
        images: (B, C, H, W) float images in [0, 1] (any channel count).
        landmarks: (B, 5, 2) five-point landmarks (eyes, nose, mouth corners) in our frame.
        size: (height, width) of the aligned crops.
        template: template name (scaled to ``size``).
        weights: (B, 5) point weights (visibility); default all 1.

    Returns:
        aligned (B, C, h, w) crops, matrices (B, 3, 3) input -> crop pixels, and the (B, 5, 2)
        landmarks mapped into the crop.
    """
    if landmarks.dim() != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (B, 5, 2), got {tuple(landmarks.shape)}")
    dst = alignment_template(size[0], size[1], template).to(landmarks)
    matrices = umeyama_similarity(
        landmarks.double(), dst.double(), None if weights is None else weights.double()
    )
    matrices = matrices.to(images.dtype)
    aligned = warp_image(images, matrices, (int(size[0]), int(size[1])))
    return aligned, matrices, transform_points(matrices, landmarks)
