"""Affine geometry for augmentation: 3x3 matrices in our frame, point/box transforms, kornia frame.

Convention
----------
Points are (x, y) in pixels with the pixel-AREA frame of DESIGN.md: pixel ``i`` covers
``[i, i + 1)``, the top-left image corner is (0, 0) and a horizontal flip of a W-wide image is
``x' = W - x``. Every matrix built here is a (B, 3, 3) homogeneous matrix that maps INPUT pixel
coordinates to OUTPUT pixel coordinates in that frame (``p_out = M @ p_in``), composed right to
left (``A @ B`` applies ``B`` first). Rotation angles are in degrees, positive = counter-clockwise
as seen on the screen (y points down), the convention of kornia and OpenCV.

kornia uses the pixel-CENTRE frame (pixel ``i`` has its centre at the integer ``i``, so its flip is
``x' = W - 1 - x``) and its ``warp_affine`` matrices map source to destination centre coordinates
with ``align_corners=True``. The two frames differ by half a pixel, ``c = x - 0.5``, so a matrix
``M`` in our frame is ``T(-0.5) @ M @ T(+0.5)`` in kornia's (:func:`to_kornia_frame`); the one
place where images are warped through kornia (:func:`warp_image`) converts there and nowhere else.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import warp_affine

__all__ = [
    "identity_matrix",
    "translation_matrix",
    "scaling_matrix",
    "rotation_matrix",
    "hflip_matrix",
    "about_point",
    "crop_resize_matrix",
    "similarity_scale",
    "transform_points",
    "transform_boxes",
    "points_inside",
    "to_kornia_frame",
    "from_kornia_frame",
    "warp_image",
    "render_gaussian_dots",
    "dot_centroids",
    "uniform",
]


def uniform(
    shape: tuple[int, ...],
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``U[low, high)`` draws for augmentation parameters, returned on ``device``.

    Drawn on the generator's device (a CPU generator drives a device batch reproducibly) or, without
    a generator, from the global RNG of ``device``.
    """
    device = torch.device(device)
    gen_device = generator.device if generator is not None else device
    return (torch.rand(shape, generator=generator, device=gen_device) * (high - low) + low).to(device)


def _vec(x: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """A (B,) float tensor from a tensor or a Python number (B = 1 for numbers)."""
    if isinstance(x, torch.Tensor):
        t = x
        if like is not None:
            t = t.to(device=like.device, dtype=like.dtype)
        elif not t.is_floating_point():
            t = t.float()
    else:
        t = torch.tensor(
            [float(x)],
            dtype=like.dtype if like is not None else torch.float32,
            device=like.device if like is not None else None,
        )
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"expected a scalar or a (B,) tensor, got shape {tuple(t.shape)}")
    return t


def _assemble(
    a: torch.Tensor, b: torch.Tensor, tx: torch.Tensor, c: torch.Tensor, d: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    """(B, 3, 3) matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from broadcastable (B,) entries."""
    a, b, tx, c, d, ty = torch.broadcast_tensors(a, b, tx, c, d, ty)
    zero = torch.zeros_like(a)
    one = torch.ones_like(a)
    rows = torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=-1)
    return rows.reshape(-1, 3, 3)


def identity_matrix(
    batch: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B, 3, 3) identity matrices."""
    return torch.eye(3, device=device, dtype=dtype).expand(batch, 3, 3).clone()


def translation_matrix(tx: torch.Tensor | float, ty: torch.Tensor | float) -> torch.Tensor:
    """(B, 3, 3) translations ``p' = p + (tx, ty)``; ``tx``, ``ty`` scalars or (B,)."""
    tx = _vec(tx)
    ty = _vec(ty, tx)
    zero = torch.zeros_like(tx)
    one = torch.ones_like(tx)
    return _assemble(one, zero, tx, zero, one, ty)


def scaling_matrix(sx: torch.Tensor | float, sy: torch.Tensor | float | None = None) -> torch.Tensor:
    """(B, 3, 3) scalings about the origin ``p' = (sx x, sy y)``; ``sy`` defaults to ``sx``."""
    sx = _vec(sx)
    sy = sx if sy is None else _vec(sy, sx)
    zero = torch.zeros_like(sx)
    return _assemble(sx, zero, zero, zero, sy, zero)


def rotation_matrix(angle: torch.Tensor | float) -> torch.Tensor:
    """(B, 3, 3) rotations about the origin by ``angle`` degrees, counter-clockwise on the screen.

    With y pointing down, a point to the right of the origin moves up:
    ``x' = cos a * x + sin a * y``, ``y' = -sin a * x + cos a * y``.
    """
    rad = torch.deg2rad(_vec(angle))
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    return _assemble(cos, sin, zero, -sin, cos, zero)


def hflip_matrix(width: torch.Tensor | float) -> torch.Tensor:
    """(B, 3, 3) horizontal flips of a ``width``-wide image: ``x' = width - x`` (pixel-area frame)."""
    w = _vec(width)
    zero = torch.zeros_like(w)
    one = torch.ones_like(w)
    return _assemble(-one, zero, w, zero, one, zero)


def about_point(matrix: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Conjugate (B, 3, 3) ``matrix`` so that it acts about ``center`` (B, 2): ``T(c) @ M @ T(-c)``."""
    center = center.to(matrix)
    return (
        translation_matrix(center[:, 0], center[:, 1])
        @ matrix
        @ translation_matrix(-center[:, 0], -center[:, 1])
    )


def crop_resize_matrix(
    x0: torch.Tensor,
    y0: torch.Tensor,
    crop_w: torch.Tensor,
    crop_h: torch.Tensor,
    out_w: float,
    out_h: float,
) -> torch.Tensor:
    """(B, 3, 3) matrices mapping the crop ``[x0, x0 + crop_w) x [y0, y0 + crop_h)`` onto an
    ``out_w`` x ``out_h`` image: ``x' = (x - x0) * out_w / crop_w`` (likewise y).

    Args:
        x0, y0, crop_w, crop_h: (B,) crop corner and size in input pixels.
        out_w, out_h: output size in pixels.
    """
    x0 = _vec(x0)
    y0, crop_w, crop_h = _vec(y0, x0), _vec(crop_w, x0), _vec(crop_h, x0)
    sx = out_w / crop_w
    sy = out_h / crop_h
    zero = torch.zeros_like(sx)
    return _assemble(sx, zero, -x0 * sx, zero, sy, -y0 * sy)


def similarity_scale(matrix: torch.Tensor) -> torch.Tensor:
    """(B,) isotropic scale ``sqrt(|det A|)`` of the linear part of (B, 3, 3) matrices.

    This is the factor that multiplies lengths (and the depth of mesh vertices) under a similarity.
    """
    det = (
        matrix[:, 0, 0] * matrix[:, 1, 1] - matrix[:, 0, 1] * matrix[:, 1, 0]
    )  # closed form: no LAPACK/cusolver
    return det.abs().sqrt()


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 3, 3) affine matrices to (B, ..., 2) points; returns (B, ..., 2)."""
    if matrix.dim() != 3 or matrix.shape[-2:] != (3, 3):
        raise ValueError(f"expected (B, 3, 3) matrices, got shape {tuple(matrix.shape)}")
    if points.dim() < 2 or points.shape[-1] != 2 or points.shape[0] != matrix.shape[0]:
        raise ValueError(
            f"expected (B, ..., 2) points with B = {matrix.shape[0]}, got shape {tuple(points.shape)}"
        )
    flat = points.reshape(points.shape[0], -1, 2).to(matrix)
    linear = matrix[:, :2, :2]
    shift = matrix[:, None, :2, 2]
    out = torch.baddbmm(shift, flat, linear.transpose(1, 2))
    return out.reshape(points.shape).to(points.dtype)


def transform_boxes(matrix: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Axis-aligned boxes enclosing the four transformed corners of (B, ..., 4) xyxy ``boxes``.

    Exact for flips, crops and scalings; for rotations it returns the enclosing box of the rotated
    rectangle. Returns (B, ..., 4) xyxy.
    """
    if boxes.dim() < 2 or boxes.shape[-1] != 4:
        raise ValueError(f"expected (B, ..., 4) boxes, got shape {tuple(boxes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack(
        [
            torch.stack([x1, y1], -1),
            torch.stack([x2, y1], -1),
            torch.stack([x1, y2], -1),
            torch.stack([x2, y2], -1),
        ],
        dim=-2,
    )  # (B, ..., 4, 2)
    moved = transform_points(matrix, corners)
    return torch.cat([moved.amin(dim=-2), moved.amax(dim=-2)], dim=-1)


def points_inside(points: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """(...,) bool: the (..., 2) points lie inside the image ``[0, width) x [0, height)``."""
    x, y = points[..., 0], points[..., 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def _half_pixel(batch: int, sign: float, like: torch.Tensor) -> torch.Tensor:
    half = torch.full((batch,), 0.5 * sign, device=like.device, dtype=like.dtype)
    return translation_matrix(half, half)


def to_kornia_frame(matrix: torch.Tensor) -> torch.Tensor:
    """Convert (B, 3, 3) matrices from our pixel-area frame to kornia's pixel-centre frame.

    ``M_k = T(-0.5) @ M @ T(+0.5)``: shift centre coordinates to area coordinates, apply ``M``,
    shift back.
    """
    b = matrix.shape[0]
    return _half_pixel(b, -1.0, matrix) @ matrix @ _half_pixel(b, 1.0, matrix)


def from_kornia_frame(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_kornia_frame`: ``M = T(+0.5) @ M_k @ T(-0.5)``."""
    b = matrix.shape[0]
    return _half_pixel(b, 1.0, matrix) @ matrix @ _half_pixel(b, -1.0, matrix)


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) image batch, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"expected a float image in [0, 1], got dtype {image.dtype}")


def warp_image(
    image: torch.Tensor,
    matrix: torch.Tensor,
    out_size: tuple[int, int],
    fill: float = 0.0,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp (B, C, H, W) images with (B, 3, 3) matrices in OUR frame, in one batched kornia call.

    Args:
        image: (B, C, H, W) float images.
        matrix: (B, 3, 3) input -> output pixel maps (pixel-area frame).
        out_size: (height, width) of the output.
        fill: value of output pixels that come from outside the input.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        (B, C, out_h, out_w) images.
    """
    _check_image(image)
    if matrix.shape != (image.shape[0], 3, 3):
        raise ValueError(f"expected ({image.shape[0]}, 3, 3) matrices, got shape {tuple(matrix.shape)}")
    kornia_m = to_kornia_frame(matrix.to(image))[:, :2, :]
    size = (int(out_size[0]), int(out_size[1]))
    if fill == 0.0:
        return warp_affine(image, kornia_m, size, mode=mode, padding_mode="zeros", align_corners=True)
    # Bilinear weights sum to one, so warping (image - fill) with zero padding and adding fill back
    # fills the outside exactly (and blends it at the border), in one warp instead of kornia's two.
    out = warp_affine(image - fill, kornia_m, size, mode=mode, padding_mode="zeros", align_corners=True)
    return out + fill


def _pixel_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(size, device=like.device, dtype=like.dtype) + 0.5


def render_gaussian_dots(points: torch.Tensor, height: int, width: int, sigma: float = 1.5) -> torch.Tensor:
    """Render one Gaussian dot (peak 1) per point, each in its own channel.

    Useful as heatmap targets and to check geometry: a dot rendered at ``p`` has its centroid
    (:func:`dot_centroids`) at ``p`` in our frame (pixel centres at ``i + 0.5``).

    Args:
        points: (B, K, 2) points in pixels.
        height, width: image size.
        sigma: standard deviation in pixels.

    Returns:
        (B, K, height, width) float images.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected (B, K, 2) points, got shape {tuple(points.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    pts = points if points.is_floating_point() else points.float()
    dx = _pixel_centres(width, pts) - pts[..., 0, None]  # (B, K, W)
    dy = _pixel_centres(height, pts) - pts[..., 1, None]  # (B, K, H)
    scale = -0.5 / (sigma * sigma)
    return torch.exp(scale * dy[..., :, None] ** 2) * torch.exp(scale * dx[..., None, :] ** 2)


def dot_centroids(images: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroids of (B, K, H, W) non-negative images, in our frame.

    Returns:
        (B, K, 2) (x, y) in pixels; NaN for an all-zero channel.
    """
    if images.dim() != 4:
        raise ValueError(f"expected (B, K, H, W) images, got shape {tuple(images.shape)}")
    w = images.clamp_min(0.0)
    total = w.sum(dim=(-2, -1))
    x = (w.sum(dim=-2) * _pixel_centres(images.shape[-1], w)).sum(dim=-1) / total
    y = (w.sum(dim=-1) * _pixel_centres(images.shape[-2], w)).sum(dim=-1) / total
    return torch.stack([x, y], dim=-1)
