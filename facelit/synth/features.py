"""Facial features painted per pixel: skin, hair, lips, eyes, brows and nostrils.

Skin, hair, lips, eyes, brows and nostrils are painted from each pixel's interpolated template chart
position, so they move with the mesh vertices (the landmarks) and are hidden with the surface that
carries them. The iris and pupil are drawn in image space as the projection of a disk centred on
the labelled eye centre (the 3D mean of the six eye landmarks), clipped by the eye outline: the
centroid of the pupil pixels is the labelled eye centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import tensor_cache
from .posing import PosedHeads
from .raster import points_in_polygon, polyline_distance

__all__ = ["IRIS_RADIUS", "PUPIL_RADIUS"]

IRIS_RADIUS = 0.085
PUPIL_RADIUS = 0.03


# -------------------------------------------------------------------------------------- features
def _catmull_closed(pts: torch.Tensor, sub: int = 3) -> torch.Tensor:
    p0, p1, p2, p3 = pts.roll(1, 0), pts, pts.roll(-1, 0), pts.roll(-2, 0)
    out = []
    for i in range(sub):
        t = i / sub
        t2, t3 = t * t, t * t * t
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
            )
        )
    return torch.stack(out, 1).reshape(-1, 2)


@tensor_cache()
def _human_chart_features() -> dict[str, torch.Tensor]:
    from .templates import TEMPLATES

    lm = torch.as_tensor(TEMPLATES["human"].landmarks, dtype=torch.float32)
    return {
        "eye_l": _catmull_closed(lm[36:42]),
        "eye_r": _catmull_closed(lm[42:48]),
        "lid_l": lm[[36, 37, 38, 39]],
        "lid_r": lm[[42, 43, 44, 45]],
        "brow_l": lm[17:22],
        "brow_r": lm[22:27],
        "lips_out": _catmull_closed(lm[48:60]),
        "lips_in": lm[60:68],
        "slit_y": lm[[61, 62, 63, 65, 66, 67], 1].mean(),
        "teeth_y": 0.65 * lm[[61, 62, 63, 65, 66, 67], 1].mean() + 0.35 * lm[[61, 62, 63], 1].mean(),
    }


@tensor_cache()
def _eye_weights(species: str) -> torch.Tensor:
    """(2, V) weights of the two eye centres (image-left, image-right) on the mesh."""
    from .head import head_model

    model = head_model(species)
    w = torch.zeros(2, model.num_vertices)
    lm = model.landmark_index
    if species == "human":
        w[0, lm[36:42]] = 1 / 6
        w[1, lm[42:48]] = 1 / 6
    else:
        w[0, lm[0]] = 1.0
        w[1, lm[1]] = 1.0
    return w


def _eye_ellipses(heads: PosedHeads) -> tuple[torch.Tensor, torch.Tensor]:
    """Eye centres (B, 2, 2) in pixels and inverse maps (B, 2, 2, 2) of the projected iris disks.

    The iris is a disk on the tangent plane of the head surface at the eye centre; the map takes
    image offsets from the centre to the unit disk.
    """
    model = heads.model
    cam, xy, nrm = heads.points(_eye_weights(model.species))
    size = 1.0 + (
        heads.params.warp[:, model.warp_names.index("eye_size")] if "eye_size" in model.warp_names else 0.0
    )
    radius = (IRIS_RADIUS if model.species == "human" else 0.13) * size * heads.params.scale[:, 0]
    z = cam[..., 2]
    u = cam[..., :2] / z[..., None]
    jac = torch.zeros(*cam.shape[:2], 2, 3)
    jac[..., 0, 0] = 1.0
    jac[..., 1, 1] = 1.0
    jac[..., :, 2] = -u
    jac = jac * (heads.scale[:, None, None, None] / z[..., None, None])
    up = heads.rot[:, None, :, 1].expand_as(nrm)
    t1 = torch.linalg.cross(up, nrm)
    t1 = t1 / t1.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    t2 = torch.linalg.cross(nrm, t1)
    m = jac @ torch.stack([t1, t2], -1) * radius[:, None, None, None]
    return xy, torch.linalg.inv(m + 1e-6 * torch.eye(2))


# columns of the per-head table gathered by the painters
_T_HAIR, _T_IRIS, _T_LIPS, _T_BROWS, _T_BROWW, _T_MOUTH, _T_EYEC, _T_EYEINV, _T_PHASE = (
    0,
    3,
    6,
    9,
    12,
    13,
    14,
    18,
    26,
)


def _head_table(heads: PosedHeads) -> torch.Tensor:
    """(B, 27) per-head values used per pixel: colours, brow width, mouth opening, eye ellipses and
    a hair-texture phase (from the identity, so that a head looks the same in any batch)."""
    ident = heads.identity
    centre, inv = _eye_ellipses(heads)
    if heads.origin is not None:
        centre = centre + heads.origin[:, None, :]
    return torch.cat(
        [
            ident.hair,
            ident.iris,
            ident.lips,
            ident.brows,
            ident.brow_width[:, None],
            heads.mouth_open[:, None],
            centre.flatten(1),
            inv.flatten(1),
            100.0 * ident.blush[:, None],
        ],
        1,
    )


@dataclass
class _Surface:
    """Feature-painting inputs of Q head fragments.

    Attributes:
        chart: (Q, 2) template chart position. pixel: (Q,) flat canvas pixel index.
        head: (Q,) head index into ``tab``. tab: (B, 27) per-head table (``_head_table``).
        width: canvas width (to turn flat pixel indices into pixel centres).
    """

    chart: torch.Tensor
    pixel: torch.Tensor
    head: torch.Tensor
    tab: torch.Tensor
    width: int

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """(K, 27) per-head table rows of the fragments ``idx`` (K,)."""
        return self.tab.index_select(0, self.head.index_select(0, idx))

    def centres(self, idx: torch.Tensor) -> torch.Tensor:
        """(K, 2) canvas pixel centres of the fragments ``idx`` (K,)."""
        return _pixel_centres(self.pixel.index_select(0, idx), self.width)


def _pixel_centres(pixel: torch.Tensor, width: int) -> torch.Tensor:
    """(N, 2) centres (x + 0.5, y + 0.5) of flat pixel indices (N,) of a canvas ``width`` wide."""
    return torch.stack(
        [(pixel % width).float() + 0.5, torch.div(pixel, width, rounding_mode="floor").float() + 0.5], 1
    )


def _iris_r2(pix: torch.Tensor, tab: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Squared radius (Q,) of pixels in their eye's unit iris disk (``right``: image-right eye)."""
    r = right[:, None]
    c = torch.where(r, tab[:, _T_EYEC + 2 : _T_EYEC + 4], tab[:, _T_EYEC : _T_EYEC + 2])
    m = torch.where(r, tab[:, _T_EYEINV + 4 : _T_EYEINV + 8], tab[:, _T_EYEINV : _T_EYEINV + 4])
    d = pix - c
    qx = m[:, 0] * d[:, 0] + m[:, 1] * d[:, 1]
    qy = m[:, 2] * d[:, 0] + m[:, 3] * d[:, 1]
    return qx * qx + qy * qy


def _subset(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)


def _paint_human(
    surf: _Surface, albedo: torch.Tensor, hairw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint eyes, brows, lips and nostrils onto skin albedo (Q, 3) (in place); returns albedo and a
    pupil mask (Q,)."""
    feats = _human_chart_features()
    chart = surf.chart
    x, y = chart[:, 0], chart[:, 1]
    ax = x.abs()
    pupil = torch.zeros(x.shape[0], dtype=torch.bool)
    bare = hairw < 0.5
    # eyes: sclera and lash line from the chart, iris and pupil in image space
    idx = _subset((y > 0.16) & (y < 0.40) & (ax > 0.2) & (ax < 0.76) & bare)
    if idx.numel():
        cx, t = chart.index_select(0, idx), surf.rows(idx)
        right = cx[:, 0] > 0
        inside = points_in_polygon(cx, torch.where(right[:, None, None], feats["eye_r"], feats["eye_l"]))
        lash = (
            polyline_distance(cx, torch.where(right[:, None, None], feats["lid_r"], feats["lid_l"])) < 0.017
        )
        r2 = _iris_r2(surf.centres(idx), t, right)
        iris = inside & (r2 < 1.0)
        pup = inside & (r2 < (PUPIL_RADIUS / IRIS_RADIUS) ** 2)
        col = torch.where(inside[:, None], torch.tensor(_SCLERA), albedo.index_select(0, idx))
        col = torch.where(iris[:, None], t[:, _T_IRIS : _T_IRIS + 3] * (1.0 - 0.45 * r2[:, None] ** 2), col)
        lash_col = (t[:, _T_BROWS : _T_BROWS + 3] * 0.5).clamp(min=0.06)
        col = torch.where((lash & ~iris)[:, None], lash_col, col)
        col = col * (~pup).float()[:, None]
        albedo.index_copy_(0, idx, col)
        pupil.index_copy_(0, idx, pup)
    # brows: tapered strokes with soft edges
    idx = _subset((y > 0.38) & (y < 0.72) & (ax > 0.1) & (ax < 0.92) & bare)
    if idx.numel():
        cx, t = chart.index_select(0, idx), surf.rows(idx)
        right = cx[:, 0] > 0
        d = polyline_distance(cx, torch.where(right[:, None, None], feats["brow_r"], feats["brow_l"]))
        half = t[:, _T_BROWW] * (1.0 - 0.45 * ((cx[:, 0].abs() - 0.18) / 0.62).clamp(0, 1))
        a = ((half - d) / 0.012).clamp(0, 1)[:, None] * 0.9
        albedo.index_copy_(0, idx, torch.lerp(albedo.index_select(0, idx), t[:, _T_BROWS : _T_BROWS + 3], a))
    # lips, mouth cavity and teeth
    idx = _subset((y > -0.9) & (y < -0.5) & (ax < 0.48))
    if idx.numel():
        cx, t = chart.index_select(0, idx), surf.rows(idx)
        outer = points_in_polygon(cx, feats["lips_out"])
        inner = points_in_polygon(cx, feats["lips_in"])
        lower = (cx[:, 1] < feats["slit_y"]).float()[:, None]
        col = torch.where(
            (outer & ~inner)[:, None],
            t[:, _T_LIPS : _T_LIPS + 3] * (1.0 + 0.12 * lower),
            albedo.index_select(0, idx),
        )
        teeth = inner & (cx[:, 1] > feats["teeth_y"]) & (t[:, _T_MOUTH] > 0.04)
        col = torch.where(inner[:, None], torch.tensor(_CAVITY), col)
        col = torch.where(teeth[:, None], torch.tensor(_TEETH), col)
        albedo.index_copy_(0, idx, col)
    # nostrils
    idx = _subset((y > -0.37) & (y < -0.26) & (ax < 0.16))
    if idx.numel():
        cx = chart.index_select(0, idx)
        r = ((cx[:, 0].abs() - 0.085) / 0.048) ** 2 + ((cx[:, 1] + 0.312) / 0.02) ** 2
        a = (1.0 - r).clamp(0, 0.5)[:, None] * 1.28
        albedo.index_copy_(0, idx, albedo.index_select(0, idx) * (1 - a))
    return albedo, pupil


_SCLERA = (0.9, 0.88, 0.85)  # RGB of the eye white, the mouth cavity and the teeth
_CAVITY = (0.25, 0.06, 0.06)
_TEETH = (0.86, 0.84, 0.78)


def _paint_animal(
    surf: _Surface, albedo: torch.Tensor, landmarks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eyes (dark, with a black pupil), nostrils and the mouth line of horse/sheep heads, painted onto
    albedo (Q, 3) in place; returns albedo and a pupil mask (Q,)."""
    chart = surf.chart
    x, y = chart[:, 0], chart[:, 1]
    pupil = torch.zeros(x.shape[0], dtype=torch.bool)
    ex, ey = float(landmarks[1, 0]), float(landmarks[1, 1])
    idx = _subset(((x.abs() - ex).abs() < 0.3) & ((y - ey).abs() < 0.3))
    if idx.numel():
        cx, t = chart.index_select(0, idx), surf.rows(idx)
        r2 = _iris_r2(surf.centres(idx), t, cx[:, 0] > 0)
        in_chart = (((cx[:, 0].abs() - ex) / 0.2) ** 2 + ((cx[:, 1] - ey) / 0.14) ** 2) < 1.0
        eye = in_chart & (r2 < 1.0)
        pup = in_chart & (r2 < 0.3)
        col = torch.where(
            eye[:, None], t[:, _T_IRIS : _T_IRIS + 3] * (1 - 0.5 * r2[:, None]), albedo.index_select(0, idx)
        )
        albedo.index_copy_(0, idx, col * (~pup).float()[:, None])
        pupil.index_copy_(0, idx, pup)
    ny, mx, my = float(landmarks[2, 1]), float(landmarks[4, 0]), float(landmarks[4, 1])
    idx = _subset((y < ny + 0.3) & (y > my - 0.25) & (x.abs() < mx + 0.45))
    if idx.numel():
        cx = chart.index_select(0, idx)
        r = ((cx[:, 0].abs() - (0.55 * mx + 0.05)) / 0.11) ** 2 + ((cx[:, 1] - ny - 0.05) / 0.07) ** 2
        dark = (1.0 - r).clamp(0, 0.5)[:, None] * 1.8
        mouth_line = torch.tensor([[-mx, my], [0.0, my - 0.05], [mx, my]])
        dm = polyline_distance(cx, mouth_line)
        dark = torch.maximum(dark, ((0.035 - dm) / 0.015).clamp(0, 1)[:, None] * 0.85)
        albedo.index_copy_(0, idx, albedo.index_select(0, idx) * (1 - dark))
    return albedo, pupil
