"""Vectorised triangle rasteriser with a z-buffer, and 2D shape tests, in plain torch.

Convention
----------
Image points are (x, y) pixels in the pixel-area frame: pixel ``(i, j)`` (column i, row j) covers
``[i, i + 1) x [j, j + 1)`` and is sampled at its centre ``(i + 0.5, j + 0.5)``. Flat pixel indices
are ``j * W + i``. Smaller depth is closer to the camera. Triangles are oriented outwards by the
right-hand rule in a camera frame with x right, y down, z forward; the side facing the camera then
has a NEGATIVE doubled signed area
``(x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0)`` (counter-clockwise on screen, since y points down), and
single-sided triangles whose area is positive (seen from behind) are culled.

The rasteriser enumerates, for every triangle at once, its scanline spans (rows whose centre is
in the triangle, then the pixel centres between the two crossed edges: half-open rules, so shared
edges are neither doubled nor cracked) with two ragged ``repeat_interleave``, and resolves
visibility with one ``scatter_reduce(amin)`` over an int64 key (quantised depth, candidate id).
No per-pixel or per-triangle Python loop; cost grows with the covered area plus the rows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

__all__ = ["Fragments", "rasterize", "points_in_polygon", "polyline_distance", "MAX_DEPTH"]

_KEY_MAX = torch.iinfo(torch.int64).max
MAX_DEPTH = float(1 << 16)
_DEPTH_SCALE = float(1 << 20)
_MAX_CANDIDATES = 1 << 26  # keys: depth * 2^20 (< 2^36) * 2^26 < 2^62
_INF = float("inf")


_LOCAL = threading.local()


def _workspace(n: int) -> torch.Tensor:
    """A per-thread reusable int64 buffer of length n (avoids page-faulting a fresh z-buffer per call)."""
    buf = getattr(_LOCAL, "zbuf", None)
    if buf is None or buf.numel() < n:
        # A normal tensor even when first needed under inference mode (a validation loop rendering
        # in the main process), so that later renders outside inference mode can write into it.
        with torch.inference_mode(False):
            buf = torch.empty(max(n, 1 << 16), dtype=torch.long)
        _LOCAL.zbuf = buf
    return buf[:n]


@dataclass
class Fragments:
    """The visible surface sample of every covered pixel.

    Attributes:
        pixel: (P,) int64 flat pixel index ``y * W + x``, unique, increasing.
        tri: (P,) int64 index of the winning triangle.
        weights: (3, P) float32 screen-space barycentric weights of the pixel centre in that
            triangle, one contiguous row per corner (``bary`` is the (P, 3) view).
        depth: (P,) float32 interpolated depth.
        height, width: image size.
    """

    pixel: torch.Tensor
    tri: torch.Tensor
    weights: torch.Tensor
    depth: torch.Tensor
    height: int
    width: int

    @property
    def bary(self) -> torch.Tensor:
        """(P, 3) barycentric weights (a view of ``weights``)."""
        return self.weights.T

    def depth_at(self, pixel: torch.Tensor) -> torch.Tensor:
        """Depth of the visible surface at flat pixel indices (N,), +inf where nothing was drawn."""
        pos = torch.searchsorted(self.pixel, pixel).clamp(max=max(self.pixel.numel() - 1, 0))
        if self.pixel.numel() == 0:
            return torch.full(pixel.shape, float("inf"))
        hit = self.pixel.index_select(0, pos) == pixel
        return torch.where(hit, self.depth.index_select(0, pos), float("inf"))

    def corner_vertices(self, tris: torch.Tensor) -> torch.Tensor:
        """(3, P) vertex index of each corner of every fragment's triangle (``tris`` (T, 3))."""
        return tris.T.contiguous().index_select(1, self.tri)

    def interpolate(
        self, values: torch.Tensor, corners: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Barycentric interpolation of channel-major per-vertex values.

        Args:
            values: (C, M) per-vertex values, one contiguous row per channel.
            corners: (3, P) from ``corner_vertices``.
            index: optional (Q,) int64 subset of the fragments.

        Returns:
            (C, P) (or (C, Q)) ``w0 * v0 + w1 * v1 + w2 * v2``.
        """
        w = self.weights
        if index is not None:
            corners, w = corners.index_select(1, index), w.index_select(1, index)
        values = values.contiguous()
        out = values.index_select(1, corners[0]).mul_(w[0])
        corner = torch.empty_like(out)  # one buffer for the other two corners' values
        out.addcmul_(torch.index_select(values, 1, corners[1], out=corner), w[1])
        return out.addcmul_(torch.index_select(values, 1, corners[2], out=corner), w[2])


def _max3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.maximum(a, b), c)


def _min3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.minimum(a, b), c)


def _empty(height: int, width: int) -> Fragments:
    return Fragments(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(3, 0),
        torch.zeros(0),
        height,
        width,
    )


def rasterize(
    xy: torch.Tensor,
    depth: torch.Tensor,
    tris: torch.Tensor,
    single_sided: torch.Tensor,
    height: int,
    width: int,
    tile: torch.Tensor | None = None,
) -> Fragments:
    """Rasterise triangles with a z-buffer.

    Args:
        xy: (M, 2) vertex positions in pixels.
        depth: (M,) vertex depths in [0, MAX_DEPTH) (smaller is closer), resolved to 2^-20.
        tris: (T, 3) int64 vertex indices.
        single_sided: (T,) bool; such triangles are dropped when back-facing.
        height, width: image size.
        tile: optional (T, 4) pixel rectangles ``x0, y0, x1, y1`` (integers) of the image each
            triangle belongs to when several images are stacked on one canvas: the triangle's ``xy``
            are relative to ``(x0, y0)`` and it draws nothing outside its tile. Local coordinates
            keep a tile's result independent of where it is stacked.

    Returns:
        ``Fragments`` of the covered pixels. Visibility ties are broken by triangle order, so the
        result for a tile does not depend on what other tiles contain.
    """
    if xy.dim() != 2 or xy.shape[1] != 2 or depth.shape != xy.shape[:1]:
        raise ValueError(
            f"rasterize: expected xy (M, 2) and depth (M,), got {tuple(xy.shape)}, {tuple(depth.shape)}"
        )
    if tris.dim() != 2 or tris.shape[1] != 3 or single_sided.shape != tris.shape[:1]:
        raise ValueError(f"rasterize: expected tris (T, 3) and single_sided (T,), got {tuple(tris.shape)}")
    # Structure-of-arrays layout throughout: per-corner quantities are lists of three contiguous
    # 1D tensors (x[k] is corner k of every triangle), so no op works on strided (N, 3) columns.
    corners = tris.T.contiguous()  # (3, T)
    px_all, py_all = xy[:, 0].contiguous(), xy[:, 1].contiguous()
    x = [px_all.index_select(0, corners[k]) for k in range(3)]
    y = [py_all.index_select(0, corners[k]) for k in range(3)]
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    # rows whose centre j + 0.5 lies in [ymin, ymax)
    if tile is None:
        tile = torch.tensor([0.0, 0.0, float(width), float(height)]).expand(tris.shape[0], 4)
    size_x, size_y = tile[:, 2] - tile[:, 0], tile[:, 3] - tile[:, 1]
    j0 = torch.ceil(_min3(*y) - 0.5).clamp_(min=0)
    j1 = torch.minimum(torch.ceil(_max3(*y) - 0.5), size_y) - 1
    keep = (area2.abs() > 1e-9) & ((area2 < 0) | ~single_sided) & (j1 >= j0)
    keep &= (_max3(*x) > 0) & (_min3(*x) < size_x)
    t_idx = keep.nonzero().squeeze(1)
    if t_idx.numel() == 0:
        return _empty(height, width)
    x = [c.index_select(0, t_idx) for c in x]
    y = [c.index_select(0, t_idx) for c in y]
    j0, j1 = j0.index_select(0, t_idx), j1.index_select(0, t_idx)
    kept_corners = corners.index_select(1, t_idx)
    zt = [depth.index_select(0, kept_corners[k]) for k in range(3)]
    inv = area2.index_select(0, t_idx).reciprocal()
    # Barycentric weights relative to the first corner (x0, y0), where they are exactly (1, 0, 0):
    # w_k = e_k + a_k (px - x0) + b_k (py - y0), depth z = z0 + az (px - x0) + bz (py - y0).
    # Local coordinates keep float32 precise on tall stacked canvases.
    a = [(y[(k + 1) % 3] - y[(k + 2) % 3]) * inv for k in range(3)]
    b = [(x[(k + 2) % 3] - x[(k + 1) % 3]) * inv for k in range(3)]
    az = a[0] * zt[0] + a[1] * zt[1] + a[2] * zt[2]
    bz = b[0] * zt[0] + b[1] * zt[1] + b[2] * zt[2]
    x0, y0, z0 = x[0], y[0], zt[0]
    # where each weight crosses zero along a row, as a multiple of its value at px = x0, and which
    # side of the span it bounds (a_k > 0: from below, a_k < 0: from above)
    neg_inv_a, lower, upper = [], [], []
    for ak in a:
        flat = ak.abs() < 1e-9
        neg_inv_a.append(torch.where(flat, 0.0, -1.0 / torch.where(flat, 1.0, ak)))
        lower.append(torch.where(ak > 1e-9, 0.0, -_INF))
        upper.append(torch.where(ak < -1e-9, 0.0, _INF))
    x_hi = size_x.index_select(0, t_idx)
    origin = tile.index_select(0, t_idx)[:, :2].long()
    pix0 = origin[:, 1] * width + origin[:, 0]  # flat canvas index of the tile's first pixel
    # scanline spans: one entry per (triangle, row); the span is where all three weights are >= 0
    rows = (j1 - j0 + 1).long()
    n_rows = int(rows.sum())
    r_tri = torch.repeat_interleave(rows, output_size=n_rows)  # triangle of each row
    r_start = (rows.cumsum(0) - rows).index_select(0, r_tri)
    yc = j0.index_select(0, r_tri) + (torch.arange(n_rows) - r_start) + 0.5
    r_x0 = x0.index_select(0, r_tri)
    dy = yc - y0.index_select(0, r_tri)
    base = [b[k].index_select(0, r_tri) * dy for k in range(3)]  # weights at px = x0
    base[0] += 1.0
    t = [base[k] * neg_inv_a[k].index_select(0, r_tri) for k in range(3)]  # local x of the crossings
    left = _max3(*(t[k] + lower[k].index_select(0, r_tri) for k in range(3))) + r_x0
    right = _min3(*(t[k] + upper[k].index_select(0, r_tri) for k in range(3))) + r_x0
    i0 = torch.ceil(left - 0.5).clamp_(min=0)
    i1 = torch.minimum(torch.floor(right - 0.5), x_hi.index_select(0, r_tri) - 1)
    span = (i1 - i0 + 1).clamp_(min=0).nan_to_num_(0.0).long()
    total = int(span.sum())
    if total == 0:
        return _empty(height, width)
    if total >= _MAX_CANDIDATES:
        raise ValueError(
            f"rasterize: {total} fragments exceed the limit {_MAX_CANDIDATES}; draw fewer or smaller tiles"
        )
    row_z = torch.addcmul(z0.index_select(0, r_tri), bz.index_select(0, r_tri), dy)  # depth at px = x0
    row_az = az.index_select(0, r_tri)
    row_i0 = i0 + 0.5 - r_x0  # local x of the first pixel centre of the span
    p_row = torch.repeat_interleave(span, output_size=total)  # row of each candidate
    cand = torch.arange(total)
    step = (span.cumsum(0) - span).index_select(0, p_row).neg_().add_(cand)  # pixel offset in its span
    px_local = row_i0.index_select(0, p_row).add_(step)  # (exact: offsets are small integers)
    z = row_z.index_select(0, p_row).addcmul_(row_az.index_select(0, p_row), px_local)
    row_pix = (
        pix0.index_select(0, r_tri) + (yc - 0.5).long() * width + i0.long()
    )  # flat index of the span start
    pix = row_pix.index_select(0, p_row).add_(step)
    # key = quantised depth * 2^26 + candidate id: the smallest key is the closest, earliest candidate
    key = z.clamp(0.0, MAX_DEPTH).mul_(_DEPTH_SCALE).long().mul_(_MAX_CANDIDATES).add_(cand)
    zbuf = _workspace(height * width).fill_(_KEY_MAX)
    zbuf.scatter_reduce_(0, pix, key, reduce="amin")
    won_pix = (zbuf != _KEY_MAX).nonzero().squeeze(1)
    win = zbuf.index_select(0, won_pix).bitwise_and_(_MAX_CANDIDATES - 1)  # = key % 2^26 (keys >= 0)
    w_row = p_row.index_select(0, win)
    w_tri = r_tri.index_select(0, w_row)
    w_px = px_local.index_select(0, win)
    bary = torch.empty(3, win.numel())
    for k in range(3):
        torch.index_select(base[k], 0, w_row, out=bary[k]).addcmul_(a[k].index_select(0, w_tri), w_px)
    bary.clamp_(min=0)
    bary /= (bary[0] + bary[1] + bary[2]).clamp_(min=1e-9)
    return Fragments(won_pix, t_idx.index_select(0, w_tri), bary, z.index_select(0, win), height, width)


def points_in_polygon(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Even-odd test of points against one or several closed polygons.

    Args:
        points: (P, 2).
        polygon: (n, 2) vertices, or (P, n, 2) one polygon per point.

    Returns:
        (P,) bool.
    """
    a = polygon
    b = polygon.roll(-1, -2)
    px, py = points[:, 0:1], points[:, 1:2]
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    straddle = (ay > py) != (by > py)
    dy = torch.where(by == ay, torch.ones_like(by), by - ay)
    x_cross = ax + (py - ay) * (bx - ax) / dy
    crossings = (straddle & (px < x_cross)).sum(1)
    return crossings % 2 == 1


def polyline_distance(points: torch.Tensor, polyline: torch.Tensor) -> torch.Tensor:
    """Distance of points to an open polyline.

    Args:
        points: (P, 2).
        polyline: (n, 2) vertices (n >= 2), or (P, n, 2) one polyline per point.

    Returns:
        (P,) Euclidean distance to the nearest segment.
    """
    a = polyline[..., :-1, :]
    d = polyline[..., 1:, :] - a
    rel = points[:, None, :] - a
    t = ((rel * d).sum(-1) / (d * d).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    diff = rel - t[..., None] * d
    return (diff * diff).sum(-1).amin(1).sqrt()
