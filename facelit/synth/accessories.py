"""Accessory meshes of a head (neck, torso, long hair), its skin albedo and the per-identity
``Assets`` builder (cacheable: nothing here depends on the sample)."""

from __future__ import annotations

import math

import torch

from .appearance import Identity
from .cache import tensor_cache
from .head import HeadModel, identity_heights
from .posing import MAT_BODY, MAT_HAIR, Assets, Piece, vertex_normals

__all__ = ["build_assets"]


# ------------------------------------------------------------------------------------ accessories
@tensor_cache()
def _tube_faces(rows: int, cols: int, closed: bool) -> torch.Tensor:
    """Quads of a (rows, cols) vertex grid as triangles, columns wrapping when ``closed``."""
    r = torch.arange(rows - 1)[:, None]
    c = torch.arange(cols if closed else cols - 1)[None, :]
    c1 = (c + 1) % cols
    a, b = r * cols + c, r * cols + c1
    d, e = (r + 1) * cols + c, (r + 1) * cols + c1
    t1 = torch.stack([a.expand_as(b), d.expand_as(b), b], -1)
    t2 = torch.stack([b, d.expand_as(b), e], -1)
    return torch.cat([t1.reshape(-1, 3), t2.reshape(-1, 3)])


def _ring_grid(
    ys: torch.Tensor, rx: torch.Tensor, rz: torch.Tensor, z0: float, angles: torch.Tensor
) -> torch.Tensor:
    """Vertices (B, rows * cols, 3) of elliptic rings at heights ys (B, rows), radii (B, rows)."""
    s, c = torch.sin(angles), torch.cos(angles)
    x = rx[..., None] * s
    z = z0 - rz[..., None] * c
    y = ys[..., None].expand_as(x)
    return torch.stack([x, y, z], -1).flatten(1, 2)


_RING = 14
_NECK_ANCHOR = (0.0, 2.45, 0.22)


def _piece(
    verts: torch.Tensor,
    faces: torch.Tensor,
    albedo: torch.Tensor,
    material: int,
    frame: str,
    chart: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    hair: float = 0.0,
) -> Piece:
    b, n = verts.shape[:2]
    normals = vertex_normals(verts, faces)
    if chart is None:
        chart = torch.full((b, n, 2), -9.0)
    rest = torch.cat(
        [
            albedo.expand(b, n, 3),
            chart,
            torch.full((b, n, 1), -1.0),
            torch.full((b, n, 1), hair),
            torch.zeros(b, n, 1),
        ],
        -1,
    )
    keep = (
        torch.ones(b, faces.shape[0], dtype=torch.bool)
        if keep is None
        else keep[:, None].expand(b, faces.shape[0])
    )
    return Piece(
        verts, normals, rest, faces, torch.full((faces.shape[0],), material, dtype=torch.long), keep, frame
    )


def _accessories(model: HeadModel, ident: Identity) -> list[Piece]:
    """Neck, torso (humans) and long hair of B identities, in their local frames."""
    b = ident.batch
    p = ident.params
    ang = torch.linspace(0, 2 * math.pi, _RING + 1)[:-1]
    sw = p.scale[:, 0:1]
    pieces = []
    if model.species == "human":
        ys = torch.tensor([0.7, 1.6, 2.55]).expand(b, 3)
        neck = _ring_grid(ys, 0.5 * sw.expand(b, 3), 0.47 * sw.expand(b, 3), 0.22, ang)
    else:
        ys = torch.tensor([0.2, 1.4, 2.6]).expand(b, 3)
        neck = _ring_grid(ys, 0.75 * sw.expand(b, 3), 0.75 * sw.expand(b, 3), 0.9, ang)
        neck[..., 2] += neck[..., 1] * 0.45
    pieces.append(_piece(neck, _tube_faces(3, _RING, True), ident.skin[:, None], MAT_BODY, "head"))
    if model.species != "human":
        return pieces
    ys = torch.tensor([0.0, 0.12, 0.45, 1.0, 3.2]).expand(b, 5)
    rx = torch.tensor([0.5, 1.55, 2.3, 2.55, 2.6]) * sw
    rz = torch.tensor([0.45, 0.8, 1.0, 1.05, 1.05]).expand(b, 5)
    torso = torch.cat([torch.zeros(b, 1, 3), _ring_grid(ys, rx, rz, 0.0, ang)], 1)
    cap = torch.stack(
        [
            torch.zeros(_RING, dtype=torch.long),
            1 + (torch.arange(_RING) + 1) % _RING,
            1 + torch.arange(_RING),
        ],
        -1,
    )
    t_faces = torch.cat([cap, _tube_faces(5, _RING, True) + 1])
    collar = (torch.arange(1 + 5 * _RING) <= _RING).float()[None, :, None]  # cap and first ring
    alb = torch.lerp(ident.clothes[:, 0:1], ident.clothes[:, 1:2], collar)
    pieces.append(_piece(torso, t_faces, alb, MAT_BODY, "body"))
    vol = p.hair[:, 2]
    hang = math.pi + torch.linspace(-1.75, 1.75, 13)
    rows_t = torch.linspace(0, 1, 6)
    ys = -0.55 + rows_t[None] * (0.75 + ident.hair_length[:, None])
    rxh = (0.98 + vol[:, None] * 0.9) * sw + rows_t[None] * 0.22
    rzh = (1.12 + vol[:, None] * 0.9) + rows_t[None] * 0.1
    sheet = _ring_grid(ys, rxh, rzh, 0.05, hang)
    # chart of the sheet: angle around the head (vertical strands) and height
    around = (hang - math.pi).repeat(rows_t.numel())[None].expand(b, -1)
    chart = torch.stack([around, model.template.y_centre - sheet[..., 1]], -1)
    pieces.append(
        _piece(
            sheet,
            _tube_faces(6, hang.numel(), False),
            ident.hair[:, None],
            MAT_HAIR,
            "head",
            chart,
            ident.hair_length > 0,
            hair=1.0,
        )
    )
    return pieces


def build_assets(model: HeadModel, ident: Identity) -> Assets:
    """Identity-only precomputations (heights, hair, albedo, accessories) of B heads."""
    heights, hair = identity_heights(model, ident.params)
    return Assets(ident, heights, hair, _head_albedo(model, ident), _accessories(model, ident))


def _head_albedo(model: HeadModel, ident: Identity) -> torch.Tensor:
    """(B, V, 3) per-vertex albedo: skin with blush, beard, animal blaze; hair is mixed per pixel."""
    x, y = model.chart[:, 0], model.chart[:, 1]
    skin = ident.skin[:, None, :].expand(-1, x.numel(), 3)
    front = model.front.clamp(min=0)
    if model.species == "human":
        blush = torch.exp(-(((x.abs() - 0.55) / 0.2) ** 2 + ((y + 0.35) / 0.2) ** 2)) * front
        redden = torch.tensor([0.08, -0.04, -0.03])
        skin = skin + ident.blush[:, None, None] * blush[None, :, None] * redden / 0.1
        beard_region = torch.sigmoid((-0.42 - y) / 0.03) * (front > 0.05).float()
        lips_gap = torch.exp(-((x / 0.42) ** 8) - (((y + 0.69) / 0.16) ** 8))
        beard_w = (ident.beard[:, None] * (beard_region * (1 - lips_gap))[None]).clamp(0, 1)
        skin = skin * (1 - beard_w[..., None]) + ident.hair[:, None] * beard_w[..., None]
    else:
        lm = model.template.landmarks
        blaze = torch.exp(-((x / 0.16) ** 4)) * (front > 0.3).float() * (y < float(lm[0, 1]) + 0.5).float()
        bl = ident.blaze[:, None, None] * blaze[None, :, None]
        skin = skin * (1 - bl) + 0.92 * bl
        muzzle = torch.exp(-(((y - float(lm[2, 1])) / 0.45) ** 2)) * front
        skin = skin * (1 - 0.35 * muzzle[None, :, None])
    return skin.clamp(0, 1)
