"""Render batches of posed synthetic heads (plus bodies, hair and 2D shapes) into one image.

``render_soup`` rasterises a triangle soup (``soup``) of heads posed by ``posing`` (camera and
layer convention there), shades it, paints the facial features (``features``) and stripes, and
``point_visibility`` labels which points are seen. The renderer's public names from ``posing``,
``accessories`` and ``soup`` are re-exported here.
"""

from __future__ import annotations

import torch

from .accessories import build_assets
from .features import (
    _T_HAIR,
    _T_PHASE,
    _head_table,
    _paint_animal,
    _paint_human,
    _pixel_centres,
    _subset,
    _Surface,
)
from .posing import (
    LAYER_SPACING,
    MAT_BODY,
    MAT_HAIR,
    MAT_HEAD,
    MAT_SHAPE,
    Assets,
    Piece,
    PosedHeads,
    fit_projection,
    pose_heads,
    sample_lights,
    vertex_normals,
)
from .raster import Fragments, rasterize
from .soup import Soup, head_soup, shape_soup

# The renderer's public names, re-exported here where callers have always imported them.
__all__ = [
    "MAT_HEAD",
    "MAT_HAIR",
    "MAT_BODY",
    "MAT_SHAPE",
    "sample_lights",
    "Piece",
    "Assets",
    "build_assets",
    "PosedHeads",
    "pose_heads",
    "fit_projection",
    "Soup",
    "head_soup",
    "shape_soup",
    "vertex_normals",
    "render_soup",
    "point_visibility",
    "LAYER_SPACING",
]


# ------------------------------------------------------------------------------------ rendering
def _light_table(objects: torch.Tensor) -> torch.Tensor:
    """(9, O) per-object lighting rows: light direction (3), unit half vector (3) between the light
    and the view direction, ambient, diffuse and specular strengths (from ``objects`` (O, 11))."""
    light = objects[:, 0:3]
    half = light + torch.tensor([0.0, 0.0, -1.0])
    half = half * torch.rsqrt((half * half).sum(1, keepdim=True).clamp(min=1e-12))
    return torch.cat([light, half, objects[:, 3:6]], 1).T.contiguous()


def _shade(
    normal: torch.Tensor,
    albedo: torch.Tensor,
    obj: torch.Tensor,
    objects: torch.Tensor,
    spec_scale: torch.Tensor | None,
) -> torch.Tensor:
    """Lambert plus Blinn-Phong colour (3, P) of fragments, clamped to [0, 1].

    Args:
        normal: (3, P) interpolated (unnormalised) normals; double-sided surfaces face the camera.
        albedo: (P, 3). obj: (P,) object ids. objects: (O, 11) ``render_soup`` object table.
        spec_scale: (P,) specular multiplier (hair, pupils), or None for 1.
    """
    tab = _light_table(objects)
    row = [tab[k].index_select(0, obj) for k in range(9)]
    n0, n1, n2 = normal
    # 1 / |n|, negated for normals pointing away from the camera (double-sided surfaces)
    inv = torch.rsqrt((n0 * n0 + n1 * n1 + n2 * n2).clamp_(min=1e-12))
    inv = torch.where(n2 > 0, -inv, inv)
    ndl = (n0 * row[0]).addcmul_(n1, row[1]).addcmul_(n2, row[2]).mul_(inv)
    ndh = (n0 * row[3]).addcmul_(n1, row[4]).addcmul_(n2, row[5]).mul_(inv)
    diffuse = ndl.add_(0.25).mul_(0.8).clamp_(min=0)
    spec = ndh.clamp_(min=0).pow_(24).mul_(row[8])
    if spec_scale is not None:
        spec.mul_(spec_scale)
    gain = diffuse.mul_(row[7]).add_(row[6])
    return torch.addcmul(spec, albedo.T, gain).clamp_(0, 1)


def render_soup(
    soup: Soup, image: torch.Tensor, objects: torch.Tensor, heads: PosedHeads | None
) -> tuple[Fragments, torch.Tensor]:
    """Rasterise and shade ``soup`` over ``image`` (3, H, W) in place.

    Args:
        soup: the triangles (object ids index ``objects``; heads are objects ``0 .. B-1``).
        image: the canvas, modified in place.
        objects: (O, 11) per-object light ``direction (3), ambient, diffuse, specular``, the second
            colour (3) of striped shapes and the origin (2) of the object's tile (stripes are drawn in
            tile coordinates).
        heads: the posed heads (for hair and facial features), or None.

    Returns:
        The fragments and the object id map (H * W,) (-1 = nothing drawn).
    """
    _, h, w = image.shape
    frag = rasterize(soup.xy, soup.depth, soup.tris, soup.single, h, w, soup.tile)
    obj_map = torch.full((h * w,), -1, dtype=torch.long)
    if frag.pixel.numel() == 0:
        return frag, obj_map
    mat = soup.material.index_select(0, frag.tri)
    obj = soup.obj.index_select(0, frag.tri)
    obj_map.index_copy_(0, frag.pixel, obj)
    # normal and albedo everywhere; chart, front, hair and texture only on the "detail" fragments
    attr = soup.attr.T.contiguous()  # (11, M) channel-major
    corners = frag.corner_vertices(soup.tris)
    base = frag.interpolate(attr[:6], corners)  # (6, P)
    albedo = base[3:6].T.contiguous()
    d_idx = _subset((mat == MAT_HEAD) | (mat == MAT_HAIR) | (mat == MAT_SHAPE))
    spec_scale = None
    if d_idx.numel():
        extra = frag.interpolate(attr[6:], corners, d_idx)  # (5, D), subset D of the fragments
        d_mat, d_obj = mat.index_select(0, d_idx), obj.index_select(0, d_idx)
        hairw = extra[3].clamp(0, 1)
        pupil = torch.zeros(d_idx.numel(), dtype=torch.bool)
        if heads is not None:
            albedo, pupil = _paint_heads(heads, frag, albedo, d_idx, d_mat, d_obj, extra, hairw)
        _paint_stripes(frag, albedo, d_idx, d_mat, d_obj, extra[4], objects)
        spec_d = (1 - 0.6 * hairw) * (~pupil).float()
        spec_scale = torch.ones(frag.pixel.numel()).index_copy_(0, d_idx, spec_d)
    colour = _shade(base[0:3], albedo, obj, objects, spec_scale)
    image.view(3, -1).index_copy_(1, frag.pixel, colour)
    return frag, obj_map


def _paint_heads(
    heads: PosedHeads,
    frag: Fragments,
    albedo: torch.Tensor,
    d_idx: torch.Tensor,
    d_mat: torch.Tensor,
    d_obj: torch.Tensor,
    extra: torch.Tensor,
    hairw: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hair strands and facial features on the detail fragments ``d_idx`` (D,) of heads.

    Args:
        albedo: (P, 3) of every fragment. d_mat, d_obj: (D,) material and object of the subset.
        extra: (5, D) chart (2), front, hair, texture. hairw: (D,) hair weight in [0, 1].

    Returns:
        The albedo (P, 3), painted in place, and the pupil mask (D,) of the subset.
    """
    pupil = torch.zeros(d_idx.numel(), dtype=torch.bool)
    chart = extra[0:2].T.contiguous()
    nh = heads.xy.shape[0]
    is_head = d_obj < nh
    tab = _head_table(heads)
    idx = _subset((hairw > 0.02) & is_head)
    if idx.numel():
        cx = chart.index_select(0, idx)
        # only the hair colour (3) and strand phase of each head's table row
        t = torch.cat([tab[:, _T_HAIR : _T_HAIR + 3], tab[:, _T_PHASE:]], 1).index_select(
            0, d_obj.index_select(0, idx)
        )
        strands = 0.88 + 0.12 * torch.sin(70.0 * cx[:, 0] + 5.0 * torch.sin(7.0 * cx[:, 1]) + t[:, 3])
        hair_col = t[:, 0:3] * strands[:, None]
        p_idx = d_idx.index_select(0, idx)
        albedo.index_copy_(
            0, p_idx, torch.lerp(albedo.index_select(0, p_idx), hair_col, hairw.index_select(0, idx)[:, None])
        )
    feat = (d_mat == MAT_HEAD) & is_head & (extra[2] > 0.05)
    feat &= heads.features.index_select(0, d_obj.clamp(max=nh - 1))
    idx = _subset(feat)
    if idx.numel():
        p_idx = d_idx.index_select(0, idx)
        surf = _Surface(
            chart.index_select(0, idx),
            frag.pixel.index_select(0, p_idx),
            d_obj.index_select(0, idx),
            tab,
            frag.width,
        )
        if heads.model.species == "human":
            col, pup = _paint_human(surf, albedo.index_select(0, p_idx), hairw.index_select(0, idx))
        else:
            col, pup = _paint_animal(
                surf,
                albedo.index_select(0, p_idx),
                torch.as_tensor(heads.model.template.landmarks, dtype=torch.float32),
            )
        albedo.index_copy_(0, p_idx, col)
        pupil.index_copy_(0, idx, pup)
    return albedo, pupil


def _paint_stripes(
    frag: Fragments,
    albedo: torch.Tensor,
    d_idx: torch.Tensor,
    d_mat: torch.Tensor,
    d_obj: torch.Tensor,
    texture: torch.Tensor,
    objects: torch.Tensor,
) -> None:
    """Stripes (in tile coordinates) on textured shapes among the detail fragments (in place on albedo)."""
    idx = _subset((d_mat == MAT_SHAPE) & (texture > 0.35))
    if idx.numel() == 0:
        return
    p_idx = d_idx.index_select(0, idx)
    tex = texture.index_select(0, idx)
    ob = objects.index_select(0, d_obj.index_select(0, idx))
    p = _pixel_centres(frag.pixel.index_select(0, p_idx), frag.width) - ob[:, 9:11]
    stripes = (0.5 + 0.5 * torch.sin(p[:, 0] * (0.15 + tex) * 3.0 + p[:, 1] * (0.7 - tex) * 2.0))[:, None]
    albedo.index_copy_(0, p_idx, torch.lerp(albedo.index_select(0, p_idx), ob[:, 6:9], stripes))


def point_visibility(
    cam: torch.Tensor,
    xy: torch.Tensor,
    normals: torch.Tensor,
    layer: torch.Tensor,
    scale: torch.Tensor,
    frag: Fragments,
    obj_map: torch.Tensor,
    obj_ids: torch.Tensor,
    tile: torch.Tensor,
    tol: float = 0.12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility of labelled points: inside their image, facing the camera and not behind a surface.

    Args:
        cam: (B, K, 3) camera points. xy: (B, K, 2) pixels in each head's own image.
        normals: (B, K, 3) unit normals. layer: (B,) layers. scale: (B,) focal lengths.
        frag: the fragments of the canvas. obj_map: (H * W,) object ids of the canvas.
        obj_ids: (B,) object id of each head. tile: (B, 4) each head's image rectangle in the canvas.
        tol: depth tolerance in head units (plus two pixels' worth).

    Returns:
        visible (B, K) bool and ``hidden_by_other`` (B, K) bool (covered by another object).
    """
    w = frag.width
    size = (tile[:, 2:] - tile[:, :2])[:, None]
    inside = ((xy >= 0) & (xy < size)).all(-1)
    facing = (normals * cam).sum(-1) < 0.3 * cam.norm(dim=-1)  # grazing silhouette points count
    q = torch.minimum(xy.clamp(min=0), size - 1).long() + tile[:, None, :2].long()
    pix = (q[..., 1] * w + q[..., 0]).reshape(-1)
    surf = frag.depth_at(pix).view_as(inside)
    own = layer[:, None] * LAYER_SPACING + cam[..., 2]
    slack = tol + 2.0 * cam[..., 2] / scale[:, None]
    covered = surf < own - slack
    other = obj_map.index_select(0, pix).view_as(inside) != obj_ids[:, None]
    visible = inside & facing & ~covered
    return visible, inside & facing & covered & other
