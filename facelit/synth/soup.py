"""Triangle soups: heads, accessories and 2D shapes of a batch as one list of attributed triangles."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facelit.geometry.pose import head_to_camera

from .accessories import _NECK_ANCHOR
from .posing import _ATTR, LAYER_SPACING, LOD_PIXELS, MAT_HEAD, MAT_SHAPE, PosedHeads

__all__ = ["Soup", "head_soup", "shape_soup"]


def _batched_tris(faces: torch.Tensor, batch: int, verts_per: int) -> torch.Tensor:
    return (faces[None] + (torch.arange(batch) * verts_per)[:, None, None]).reshape(-1, 3)


# ------------------------------------------------------------------------------------ geometry soup
@dataclass
class Soup:
    """Triangles of everything to draw, in image space.

    Attributes:
        xy: (M, 2) pixels. depth: (M,) rasteriser depth. attr: (M, 11) per-vertex attributes
        (normal 3, albedo 3, chart 2, front 1, hair 1, texture 1). tris: (T, 3). single: (T,) bool.
        material: (T,) int64. obj: (T,) int64 object id (heads first, then shapes).
        tile: (T, 4) pixel rectangle (x0, y0, x1, y1) of each triangle's image in the canvas; ``xy``
            are relative to its (x0, y0) (see ``rasterize``).
    """

    xy: torch.Tensor
    depth: torch.Tensor
    attr: torch.Tensor
    tris: torch.Tensor
    single: torch.Tensor
    material: torch.Tensor
    obj: torch.Tensor
    tile: torch.Tensor

    @staticmethod
    def cat(parts: list[Soup]) -> Soup:
        if len(parts) == 1:
            return parts[0]
        offsets, n = [], 0
        for p in parts:
            offsets.append(n)
            n += p.xy.shape[0]
        return Soup(
            torch.cat([p.xy for p in parts]),
            torch.cat([p.depth for p in parts]),
            torch.cat([p.attr for p in parts]),
            torch.cat([p.tris + o for p, o in zip(parts, offsets, strict=True)]),
            torch.cat([p.single for p in parts]),
            torch.cat([p.material for p in parts]),
            torch.cat([p.obj for p in parts]),
            torch.cat([p.tile for p in parts]),
        )


def head_soup(
    heads: PosedHeads, tile: torch.Tensor, obj_offset: int = 0, lod_pixels: float = LOD_PIXELS
) -> Soup:
    """Triangles of B posed heads with their necks, torsos and long hair.

    ``tile`` (B, 4) is the pixel rectangle (x0, y0, x1, y1) of each head's image in the stacked
    canvas (head coordinates are relative to its corner; drawing is clipped to it). Heads whose face box is
    smaller than ``lod_pixels`` are drawn with the coarse triangulation (same vertices).
    """
    model = heads.model
    b, v = heads.xy.shape[:2]
    assets = heads.assets
    heads.origin = tile[:, :2]
    depth = heads.layer[:, None] * LAYER_SPACING + heads.cam[..., 2]
    attr = torch.cat(
        [
            heads.normals,
            assets.albedo,
            model.chart.expand(b, v, 2),
            model.front.expand(b, v)[..., None],
            assets.hair[..., None],
            torch.zeros(b, v, 1),
        ],
        -1,
    )
    obj = torch.arange(obj_offset, obj_offset + b)
    box_h = heads.xy[:, model.box_index, 1]
    coarse = (box_h.amax(1) - box_h.amin(1)) < lod_pixels
    parts = []
    for use, faces, single in (
        (~coarse, model.faces, model.single_sided),
        (coarse, model.coarse_faces, model.coarse_single),
    ):
        idx = use.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        f = faces.shape[0]
        tris = (faces[None] + (idx * v)[:, None, None]).reshape(-1, 3)
        parts.append(
            Soup(
                heads.xy.reshape(-1, 2),
                depth.reshape(-1),
                attr.reshape(-1, _ATTR),
                tris,
                single.repeat(idx.numel()),
                torch.full((idx.numel() * f,), MAT_HEAD, dtype=torch.long),
                obj.index_select(0, idx).repeat_interleave(f),
                tile.index_select(0, idx).repeat_interleave(f, 0),
            )
        )
    if len(parts) == 2:  # share the vertex arrays of both levels of detail
        parts[1].xy, parts[1].depth, parts[1].attr = parts[1].xy[:0], parts[1].depth[:0], parts[1].attr[:0]
        parts[1].tris = parts[1].tris - b * v  # Soup.cat adds the first part's vertex count back
    t = torch.zeros(b, 3)
    t[:, 2] = heads.distance
    body_rot = None
    for piece in assets.pieces:
        if piece.frame == "head":
            rot, shift = heads.rot, t
        else:
            if body_rot is None:
                body_rot = head_to_camera(heads.ypr * torch.tensor([0.35, 0.0, 0.4]))
                anchor = torch.tensor(_NECK_ANCHOR)
                body_shift = heads.rot @ anchor + t
            rot, shift = body_rot, body_shift
        cam = torch.baddbmm(shift[:, None, :], piece.verts, rot.transpose(1, 2))
        nrm = piece.normals @ rot.transpose(1, 2)
        n = cam.shape[1]
        keep = piece.keep.reshape(-1)
        tri = _batched_tris(piece.faces, b, n)
        mat = piece.material.repeat(b)
        o = obj.repeat_interleave(piece.faces.shape[0])
        clip = tile.repeat_interleave(piece.faces.shape[0], 0)
        if not bool(keep.all()):
            sel = keep.nonzero().squeeze(1)
            tri, mat, o, clip = (
                tri.index_select(0, sel),
                mat.index_select(0, sel),
                o.index_select(0, sel),
                clip.index_select(0, sel),
            )
        parts.append(
            Soup(
                heads.project(cam).reshape(-1, 2),
                (heads.layer[:, None] * LAYER_SPACING + cam[..., 2]).reshape(-1),
                torch.cat([nrm, piece.rest], -1).reshape(-1, _ATTR),
                tri,
                torch.zeros(tri.shape[0], dtype=torch.bool),
                mat,
                o,
                clip,
            )
        )
    return Soup.cat(parts)


def shape_soup(
    centre: torch.Tensor,
    axes: torch.Tensor,
    angle: torch.Tensor,
    power: torch.Tensor,
    colour: torch.Tensor,
    depth: torch.Tensor,
    texture: torch.Tensor,
    tile: torch.Tensor,
    obj_offset: int,
) -> Soup:
    """Flat superellipse shapes (clutter, occluders) as triangle fans, one object each.

    Args:
        centre: (K, 2) pixels relative to the tile corner. axes: (K, 2). angle: (K,). power: (K,).
        colour: (K, 3) albedo. depth: (K,) rasteriser depth. texture: (K,) in [0, 1] (stripes when
        > 0.35). tile: (K, 4) clip rectangles. obj_offset: object id of the first shape.
    """
    from .background import superellipse_fans

    k = centre.shape[0]
    verts, tris = superellipse_fans(centre, axes, angle, power)
    n = verts.shape[1]
    normal = torch.tensor([0.0, 0.0, -1.0]).expand(k, n, 3)
    attr = torch.cat(
        [
            normal,
            colour[:, None].expand(k, n, 3),
            torch.full((k, n, 3), -9.0),
            torch.zeros(k, n, 1),
            texture[:, None, None].expand(k, n, 1),
        ],
        -1,
    )
    segs = tris.shape[0] // max(k, 1)
    return Soup(
        verts.reshape(-1, 2),
        depth[:, None].expand(k, n).reshape(-1),
        attr.reshape(-1, _ATTR),
        tris,
        torch.zeros(tris.shape[0], dtype=torch.bool),
        torch.full((tris.shape[0],), MAT_SHAPE, dtype=torch.long),
        torch.arange(obj_offset, obj_offset + k).repeat_interleave(segs),
        tile.repeat_interleave(segs, 0),
    )
