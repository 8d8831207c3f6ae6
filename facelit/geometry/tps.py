"""Thin-plate-spline warps in our pixel-area frame, on top of kornia's TPS functions.

A TPS warp here is always stored as the map ``T`` from OUTPUT (warped image) coordinates to INPUT
(original image) coordinates, because that is what image resampling needs: output pixel ``p``
takes the input colour at ``T(p)``. The same ``T`` maps keypoints predicted on the warped image
back onto the original image (:func:`map_points`).

Convention
----------
* Pixel points are (x, y) in the pixel-AREA frame of DESIGN.md (pixel ``i`` covers ``[i, i + 1)``).
* kornia's TPS functions work in ``grid_sample``'s normalised frame with ``align_corners=False``:
  ``x_norm = (2 x_area) / W - 1`` exactly (a pixel centre ``i + 0.5`` lands on ``(2i + 1)/W - 1``,
  the half-pixel convention of kornia's ``warp_image_tps``). :func:`to_normalised` and
  :func:`from_normalised` are the only place where this conversion happens.
* kornia's ``get_tps_transform(src, dst)`` solves for a spline whose kernel centres are ``dst`` and
  that sends ``src`` onto ``dst``; ``warp_points_tps(p, dst, ...)`` evaluates it. ``warp_image_tps``
  evaluates the spline on the OUTPUT grid, so the image warp is fitted output -> input:
  ``src`` = control points in the output image, ``dst`` = where they come from in the input.
  :class:`TpsWarp` keeps (centres, kernel weights, affine weights) of that one fit together.
* kornia's ``RandomThinPlateSpline`` augmentation moves pixels but not keypoints: never use it for
  labelled data; warp keypoints with :func:`map_points` / the inverse fit instead.
* Pixels that sample outside the input are filled with the per-image, per-channel mean colour
  (``fill="mean"``), the background of the official interspecies code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_tps_transform, warp_points_tps

__all__ = [
    "TpsWarp",
    "to_normalised",
    "from_normalised",
    "pixel_grid",
    "fit_tps",
    "fit_tps_masked",
    "similarity_lstsq",
    "border_anchors",
    "fit_tps_anchored",
    "folds",
    "control_grid",
    "sampling_grid",
    "warp_image",
    "map_points",
]

Fill = Literal["mean", "zeros"]
Solver = Literal["standard", "kornia"]


@dataclass
class TpsWarp:
    """One batch of fitted TPS maps output -> input, in the normalised frame.

    Attributes:
        centres: (B, N, 2) kernel centres (the ``dst`` points of the fit, input frame).
        kernel_weights: (B, N, 2).
        affine_weights: (B, 3, 2).
    """

    centres: torch.Tensor
    kernel_weights: torch.Tensor
    affine_weights: torch.Tensor

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(B, M, 2) normalised output points -> (B, M, 2) normalised input points."""
        return warp_points_tps(points, self.centres, self.kernel_weights, self.affine_weights)


def _size_tensor(size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(2,) tensor (W, H) from an (H, W) size."""
    h, w = size
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got (H, W) = {size}")
    return torch.tensor([float(w), float(h)], dtype=like.dtype, device=like.device)


def to_normalised(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., 2) pixel-area points of an (H, W) image -> ``grid_sample`` frame (align_corners=False)."""
    return points * (2.0 / _size_tensor(size, points)) - 1.0


def from_normalised(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_normalised`."""
    return (points + 1.0) * (_size_tensor(size, points) / 2.0)


def pixel_grid(size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(H * W, 2) normalised centres of every pixel of an (H, W) image, row-major (x fastest)."""
    h, w = size
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / w) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def _check_pairs(src: torch.Tensor, dst: torch.Tensor) -> None:
    if src.dim() != 3 or src.shape[-1] != 2 or src.shape != dst.shape:
        raise ValueError(
            f"expected two (B, N, 2) point sets of one shape, got {tuple(src.shape)} and {tuple(dst.shape)}"
        )
    if src.shape[1] < 3:
        raise ValueError(f"a TPS needs at least 3 point pairs, got {src.shape[1]}")


def _tps_kernel(sq_dist: torch.Tensor) -> torch.Tensor:
    """The TPS radial basis ``r^2 log r`` from squared distances (0 at r = 0), kornia's kernel."""
    safe = torch.where(sq_dist > 0, sq_dist, torch.ones_like(sq_dist))
    return torch.where(sq_dist > 0, 0.5 * sq_dist * safe.log(), torch.zeros_like(sq_dist))


def fit_tps(src: torch.Tensor, dst: torch.Tensor, solver: Solver = "standard") -> TpsWarp:
    """Fit the TPS that sends normalised ``src`` (B, N, 2) onto normalised ``dst`` (B, N, 2).

    For an image warp, ``src`` are points of the OUTPUT image and ``dst`` the corresponding points
    of the INPUT image. Differentiable in both arguments. Solved in float64 for conditioning.

    ``solver="standard"`` is the textbook thin-plate spline (kernel centres at ``src``: the
    minimum-bending-energy interpolant), evaluated by kornia's ``warp_points_tps``.
    ``solver="kornia"`` is kornia's ``get_tps_transform(src, dst)``, whose kernel is built between
    ``src`` and ``dst`` (centres at ``dst``): it interpolates the pairs too, but it is not the
    minimum-bending spline and swirls when the two sets differ by more than a small deformation
    (measured on pose-matched human -> horse keypoints), so the ground-truth warps use ``standard``.
    """
    _check_pairs(src, dst)
    if solver == "kornia":
        kernel, affine = get_tps_transform(src.double(), dst.double())
        return TpsWarp(dst, kernel.to(src.dtype), affine.to(src.dtype))
    if solver != "standard":
        raise ValueError(f"solver must be 'standard' or 'kornia', got {solver!r}")
    s, d = src.double(), dst.double()
    b, n, _ = s.shape
    k = _tps_kernel(torch.cdist(s, s).square())
    p = torch.cat([s.new_ones(b, n, 1), s], dim=-1)
    top = torch.cat([k, p], dim=-1)
    bottom = torch.cat([p.transpose(1, 2), s.new_zeros(b, 3, 3)], dim=-1)
    rhs = torch.cat([d, s.new_zeros(b, 3, 2)], dim=1)
    weights = torch.linalg.solve(torch.cat([top, bottom], dim=1), rhs)
    return TpsWarp(src, weights[:, :n].to(src.dtype), weights[:, n:].to(src.dtype))


def fit_tps_masked(src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor) -> TpsWarp:
    """:func:`fit_tps` using only the pairs where ``mask`` (B, N) is True (at least 3 per row).

    Rows are grouped by their mask pattern and each group is solved in one batched call. Masked-out
    pairs get zero kernel weight and their centre is parked on a used centre, so the returned
    (B, N, 2) tensors evaluate exactly like the fit on the used pairs alone.
    """
    _check_pairs(src, dst)
    if mask.shape != src.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, N) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    counts = mask.sum(1)
    if bool((counts < 3).any()):
        bad = torch.nonzero(counts < 3).flatten().tolist()
        raise ValueError(f"rows {bad} have fewer than 3 used point pairs; a TPS needs 3")
    centres = dst.clone()
    kernel = torch.zeros_like(src)
    affine = src.new_zeros(src.shape[0], 3, 2)
    patterns, group = torch.unique(mask, dim=0, return_inverse=True)
    for g, pattern in enumerate(patterns):
        rows = torch.nonzero(group == g).flatten()
        used = torch.nonzero(pattern).flatten()
        fit = fit_tps(src[rows][:, used], dst[rows][:, used])
        block_centres = centres[rows]
        block_centres[:, ~pattern] = fit.centres[:, :1]
        block_centres[:, used] = fit.centres
        centres = centres.index_copy(0, rows, block_centres)
        block_kernel = torch.zeros_like(src[rows])
        block_kernel[:, used] = fit.kernel_weights
        kernel = kernel.index_copy(0, rows, block_kernel)
        affine = affine.index_copy(0, rows, fit.affine_weights)
    return TpsWarp(centres, kernel, affine)


def similarity_lstsq(src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) least-squares similarity (scale, rotation, shift) sending ``src`` onto ``dst`` (B, N, 2)
    over the pairs where ``mask`` (B, N) is True (closed form: ``dst ~ a * src + t`` in complex numbers)."""
    w = mask.to(src.dtype)[..., None]
    n = w.sum(1, keepdim=True).clamp(min=1)
    ms, md = (src * w).sum(1, keepdim=True) / n, (dst * w).sum(1, keepdim=True) / n
    s, d = (src - ms) * w, (dst - md) * w
    den = (s * s).sum((1, 2)).clamp(min=1e-12)
    re = (s * d).sum((1, 2)) / den  # a = re + i im
    im = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / den
    linear = torch.stack([torch.stack([re, -im], -1), torch.stack([im, re], -1)], 1)  # (B, 2, 2)
    shift = md[:, 0] - (linear @ ms[:, 0, :, None])[..., 0]
    return torch.cat([linear, shift[..., None]], dim=2)


def border_anchors(like: torch.Tensor) -> torch.Tensor:
    """(8, 2) normalised anchor points on the output border: 4 corners and 4 edge midpoints."""
    v = torch.tensor([-1.0, 0.0, 1.0], dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(v, v, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    return points[points.abs().amax(-1) == 1.0]


def fit_tps_anchored(src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor) -> TpsWarp:
    """A TPS through the used pairs of ``src`` -> ``dst`` (B, N, 2) that follows their least-squares
    similarity at the image border; ``mask`` (B, N) bool marks the used pairs (at least 3 per row).

    With a handful of keypoints a bare TPS extrapolates wildly towards the border, and kornia's
    spline (kernel between ``src`` and ``dst``) is ill-conditioned when the two sets are far apart
    (a face twice the size of the other). So: (1) the best similarity ``S`` of the used pairs is
    found (:func:`similarity_lstsq`); (2) the TPS is fitted from ``src`` plus the 8 output
    :func:`border_anchors` (kept in place) to ``S^-1(dst)`` plus the anchors, a near-identity fit;
    (3) ``S`` is folded into the spline's weights (the spline is linear in them), so the result is
    one :class:`TpsWarp` that passes exactly through every used pair.
    """
    _check_pairs(src, dst)
    if mask.shape != src.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, N) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    sim = similarity_lstsq(src, dst, mask)
    linear, shift = sim[:, :, :2], sim[:, :, 2]
    det = torch.linalg.det(linear)
    if bool((det.abs() < 1e-10).any()):
        raise ValueError("degenerate point pairs: the used source points coincide")
    local = (dst - shift[:, None]) @ torch.linalg.inv(linear).transpose(1, 2)
    anchors = border_anchors(src).expand(src.shape[0], -1, -1)
    ones = torch.ones(anchors.shape[:2], dtype=torch.bool, device=mask.device)
    fit = fit_tps_masked(
        torch.cat([src, anchors], 1), torch.cat([local, anchors], 1), torch.cat([mask, ones], 1)
    )
    lt = linear.transpose(1, 2)
    affine = fit.affine_weights @ lt
    affine = torch.cat([affine[:, :1] + shift[:, None], affine[:, 1:]], dim=1)
    return TpsWarp(fit.centres, fit.kernel_weights @ lt, affine)


def folds(grid: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the dense sampling grid (B, H, W, 2) folds the image somewhere (its finite-difference
    Jacobian determinant is <= 0 at some pixel), i.e. the warp is not one-to-one."""
    dx = grid[:, :-1, 1:] - grid[:, :-1, :-1]
    dy = grid[:, 1:, :-1] - grid[:, :-1, :-1]
    det = dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]
    return (det <= 0).flatten(1).any(1)


def control_grid(side: int, extent: float = 1.0, like: torch.Tensor | None = None) -> torch.Tensor:
    """(side * side, 2) regular control points over ``[-extent, extent]^2`` (normalised), row-major."""
    if side < 2:
        raise ValueError(f"control grid side must be >= 2, got {side}")
    ref = like if like is not None else torch.zeros(())
    axis = torch.linspace(-extent, extent, side, dtype=ref.dtype, device=ref.device)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def sampling_grid(warp: TpsWarp, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) dense ``grid_sample`` grid: ``T`` evaluated at every output pixel centre."""
    b = warp.centres.shape[0]
    h, w = size
    grid = pixel_grid(size, warp.kernel_weights).expand(b, -1, -1)
    return warp(grid).reshape(b, h, w, 2)


def warp_image(image: torch.Tensor, grid: torch.Tensor, fill: Fill = "mean") -> torch.Tensor:
    """Resample ``image`` (B, C, H, W) at ``grid`` (B, h, w, 2) -> (B, C, h, w), bilinear.

    Pixels that sample outside the input take the image's per-channel mean (``fill="mean"``) or 0.
    """
    if image.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != image.shape[0]:
        raise ValueError(
            f"expected (B, C, H, W) image and (B, h, w, 2) grid, got {tuple(image.shape)}, "
            f"{tuple(grid.shape)}"
        )
    if fill not in ("mean", "zeros"):
        raise ValueError(f"fill must be 'mean' or 'zeros', got {fill!r}")
    grid = grid.to(image.dtype)
    if fill == "zeros":
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = image.mean(dim=(2, 3), keepdim=True)
    return (
        F.grid_sample(image - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean
    )


def map_points(
    warp: TpsWarp, points: torch.Tensor, out_size: tuple[int, int], in_size: tuple[int, int]
) -> torch.Tensor:
    """Pixel points (B, K, 2) of the OUTPUT (warped) image -> pixel points of the INPUT image."""
    return from_normalised(warp(to_normalised(points, out_size)), in_size)
