"""Render batches of posed synthetic heads (plus bodies, hair and 2D shapes) into one image.

Convention
----------
Camera frame of ``facelit.geometry.pose``: x right, y down, z forward. Each head b is posed by
``head_to_camera(ypr_b)`` at distance ``distance_b`` on the optical axis and projected with a
pinhole camera ``x = s_b * X / Z + c_b`` (pixels, pixel-area frame), where the focal length
``s_b`` and principal point ``c_b`` are chosen so that the face box lands where the caller wants
it. Objects are ordered by a *layer* (smaller = closer); the rasteriser depth is
``layer * 1000 + Z``, so heads of a scene occlude each other by layer and themselves by depth.

Mesh labels: x, y in pixels; z = ``(Z_nose - Z) * s / Z_nose`` pixels, positive towards the camera,
0 at the nose tip.

Feature drawing: skin, hair, lips, eyes, brows and nostrils are painted from each pixel's
interpolated template chart position, so they move with the mesh vertices (the landmarks) and are
hidden with the surface that carries them. The iris and pupil are drawn in image space as the
projection of a disk centred on the labelled eye centre (the 3D mean of the six eye landmarks),
clipped by the eye outline: the centroid of the pupil pixels is the labelled eye centre.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch

from facelit.geometry.pose import head_to_camera

from .appearance import Identity
from .head import HeadModel, HeadParams, deform, identity_heights
from .raster import Fragments, points_in_polygon, polyline_distance, rasterize

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

MAT_HEAD, MAT_HAIR, MAT_BODY, MAT_SHAPE = 0, 1, 2, 3
LAYER_SPACING = 1000.0
LOD_PIXELS = 100.0  # face boxes lower than this use the coarse mesh
_ATTR = 11  # normal 3, albedo 3, chart 2, front 1, hair 1, texture id 1
IRIS_RADIUS = 0.085
PUPIL_RADIUS = 0.03


def sample_lights(
    r: torch.Tensor, ambient: tuple[float, float], diffuse: tuple[float, float]
) -> torch.Tensor:
    """Directional lights from uniform draws r (B, 5): a (B, 6) table ``direction (3), ambient, diffuse,
    specular`` in the camera frame (the direction points towards the light, mostly frontal and above)."""
    az = (r[:, 0] * 2 - 1) * 1.1
    el = r[:, 1] * 1.2 - 0.3
    d = torch.stack([torch.sin(az) * torch.cos(el), -torch.sin(el), -torch.cos(az) * torch.cos(el)], 1)
    amb = ambient[0] + (ambient[1] - ambient[0]) * r[:, 2]
    dif = diffuse[0] + (diffuse[1] - diffuse[0]) * r[:, 3]
    return torch.cat([d, amb[:, None], dif[:, None], (0.05 + 0.2 * r[:, 4])[:, None]], 1)


@dataclass
class Piece:
    """A rigid accessory mesh (neck, torso, long hair) of B heads in a local frame.

    Attributes:
        verts: (B, n, 3) local-frame vertices. normals: (B, n, 3) local unit normals.
        rest: (B, n, 8) albedo 3, chart 2, front 1, hair 1, texture 1.
        faces: (f, 3). material: (f,) int64. keep: (B, f) bool, False for faces a head lacks.
        frame: ``"head"`` (moves with the head) or ``"body"`` (shoulders: a damped rotation, hung
            below the neck).
    """

    verts: torch.Tensor
    normals: torch.Tensor
    rest: torch.Tensor
    faces: torch.Tensor
    material: torch.Tensor
    keep: torch.Tensor
    frame: str


@dataclass
class Assets:
    """Per-identity precomputations of B heads (cacheable: they do not depend on the sample).

    Attributes:
        identity: the identities. heights: (B, V) height field. hair: (B, V) hair coverage.
        albedo: (B, V, 3) skin albedo per vertex. pieces: accessories.
    """

    identity: Identity
    heights: torch.Tensor
    hair: torch.Tensor
    albedo: torch.Tensor
    pieces: list[Piece]


@dataclass
class PosedHeads:
    """B heads posed in the camera frame and projected.

    Attributes:
        model: the species model. assets: their identities and precomputations. params: shape +
        expression. ypr: (B, 3) degrees. rot: (B, 3, 3) head-to-camera rotations. distance: (B,).
        cam: (B, V, 3) camera-frame vertices. normals: (B, V, 3) camera-frame unit normals.
        scale: (B,) focal length in pixels. centre: (B, 2) principal point. xy: (B, V, 2) pixels.
        layer: (B,) occlusion layer. features: (B,) bool, False for featureless distractors.
        mouth_open: (B,) expression coefficient (teeth are shown above a threshold).
        origin: (B, 2) pixel offset of each head's image in the canvas it is drawn on (``head_soup``
            sets it from the tiles).
    """

    model: HeadModel
    assets: Assets
    params: HeadParams
    ypr: torch.Tensor
    rot: torch.Tensor
    distance: torch.Tensor
    cam: torch.Tensor
    normals: torch.Tensor
    scale: torch.Tensor
    centre: torch.Tensor
    xy: torch.Tensor
    layer: torch.Tensor
    features: torch.Tensor
    mouth_open: torch.Tensor
    origin: torch.Tensor | None = None

    @property
    def identity(self) -> Identity:
        return self.assets.identity

    def project(self, cam: torch.Tensor) -> torch.Tensor:
        """Project camera-frame points (B, N, 3) with each head's camera -> (B, N, 2)."""
        return (
            self.scale[:, None, None] * cam[..., :2] / cam[..., 2:].clamp(min=1e-3) + self.centre[:, None, :]
        )

    def mesh_labels(self) -> torch.Tensor:
        """(B, V, 3) mesh in pixels: x, y and z relative to the nose tip (positive towards the camera)."""
        z_nose = self.cam[:, self.model.nose_tip_index, 2]
        z = (z_nose[:, None] - self.cam[..., 2]) * (self.scale / z_nose)[:, None]
        return torch.cat([self.xy, z[..., None]], -1)

    def points(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scheme points from (K, V) vertex weights.

        Returns camera points (B, K, 3), pixels (B, K, 2) and unit normals (B, K, 3).
        """
        cam = torch.einsum("kv,bvc->bkc", weights, self.cam)
        nrm = torch.einsum("kv,bvc->bkc", weights, self.normals)
        return cam, self.project(cam), nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-6)

    def subset(self, index: torch.Tensor) -> PosedHeads:
        """The heads ``index`` (K,) (int64); their assets and parameters are not subset."""
        fields = (
            "ypr",
            "rot",
            "distance",
            "cam",
            "normals",
            "scale",
            "centre",
            "xy",
            "layer",
            "features",
            "mouth_open",
        )
        out = replace(self, **{f: getattr(self, f).index_select(0, index) for f in fields})
        out.origin = None if self.origin is None else self.origin.index_select(0, index)
        return out


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, V, 3) of outward-oriented meshes (B, V, 3).

    The B meshes are flattened into one (B * V, 3) table so that every gather and scatter is a
    row operation on dimension 0; face normals are accumulated corner by corner in face order.
    """
    b, v = verts.shape[:2]
    flat = verts.reshape(b * v, 3)
    offset = (torch.arange(b) * v)[:, None]
    corner = [(f[None] + offset).reshape(-1) for f in faces.T]  # 3 x (B * F,) rows of ``flat``
    p0, p1, p2 = (flat.index_select(0, c) for c in corner)
    fn = torch.linalg.cross(p1 - p0, p2 - p0)
    n = torch.zeros_like(flat)
    for c in corner:
        n.index_add_(0, c, fn)
    n = n.view_as(verts)
    return n * torch.rsqrt((n * n).sum(-1, keepdim=True).clamp(min=1e-18))


def fit_projection(
    cam_points: torch.Tensor, size: torch.Tensor, centre: torch.Tensor, by: str = "height"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal length and principal point putting the points' bounding box at ``centre`` with ``size``.

    Args:
        cam_points: (B, N, 3) camera-frame points defining the box.
        size: (B,) wanted box height (``by="height"``) or longest side (``by="max"``) in pixels.
        centre: (B, 2) wanted box centre in pixels.

    Returns:
        scale (B,), principal point (B, 2).
    """
    u = cam_points[..., :2] / cam_points[..., 2:]
    lo, hi = u.amin(1), u.amax(1)
    extent = (hi - lo)[:, 1] if by == "height" else (hi - lo).amax(1)
    s = size / extent.clamp(min=1e-6)
    c = centre - s[:, None] * (lo + hi) / 2
    return s, c


def pose_heads(
    model: HeadModel, assets: Assets, params: HeadParams, ypr: torch.Tensor, distance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deform, rotate and place B heads: rotations (B, 3, 3), camera vertices and normals (B, V, 3)."""
    head = deform(model, params, assets.heights)
    rot = head_to_camera(ypr.float())
    cam = torch.baddbmm(torch.zeros(1, 1, 3), head, rot.transpose(1, 2))
    cam[..., 2] += distance[:, None]
    normals = vertex_normals(head, model.faces) @ rot.transpose(1, 2)
    return rot, cam, normals


# ------------------------------------------------------------------------------------ accessories
@functools.cache
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


@functools.cache
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


@functools.cache
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
    """Paint eyes, brows, lips and nostrils onto skin albedo (Q, 3); returns albedo and a pupil mask (Q,)."""
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
        col = torch.where(inside[:, None], _SCLERA, albedo.index_select(0, idx))
        col = torch.where(iris[:, None], t[:, _T_IRIS : _T_IRIS + 3] * (1.0 - 0.45 * r2[:, None] ** 2), col)
        lash_col = (t[:, _T_BROWS : _T_BROWS + 3] * 0.5).clamp(min=0.06)
        col = torch.where((lash & ~iris)[:, None], lash_col, col)
        col = col * (~pup).float()[:, None]
        albedo = albedo.index_copy(0, idx, col)
        pupil = pupil.index_copy(0, idx, pup)
    # brows: tapered strokes with soft edges
    idx = _subset((y > 0.38) & (y < 0.72) & (ax > 0.1) & (ax < 0.92) & bare)
    if idx.numel():
        cx, t = chart.index_select(0, idx), surf.rows(idx)
        right = cx[:, 0] > 0
        d = polyline_distance(cx, torch.where(right[:, None, None], feats["brow_r"], feats["brow_l"]))
        half = t[:, _T_BROWW] * (1.0 - 0.45 * ((cx[:, 0].abs() - 0.18) / 0.62).clamp(0, 1))
        a = ((half - d) / 0.012).clamp(0, 1)[:, None] * 0.9
        albedo = albedo.index_copy(
            0, idx, torch.lerp(albedo.index_select(0, idx), t[:, _T_BROWS : _T_BROWS + 3], a)
        )
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
        col = torch.where(inner[:, None], _CAVITY, col)
        col = torch.where(teeth[:, None], _TEETH, col)
        albedo = albedo.index_copy(0, idx, col)
    # nostrils
    idx = _subset((y > -0.37) & (y < -0.26) & (ax < 0.16))
    if idx.numel():
        cx = chart.index_select(0, idx)
        r = ((cx[:, 0].abs() - 0.085) / 0.048) ** 2 + ((cx[:, 1] + 0.312) / 0.02) ** 2
        a = (1.0 - r).clamp(0, 0.5)[:, None] * 1.28
        albedo = albedo.index_copy(0, idx, albedo.index_select(0, idx) * (1 - a))
    return albedo, pupil


_SCLERA = torch.tensor([0.9, 0.88, 0.85])
_CAVITY = torch.tensor([0.25, 0.06, 0.06])
_TEETH = torch.tensor([0.86, 0.84, 0.78])


def _paint_animal(
    surf: _Surface, albedo: torch.Tensor, landmarks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eyes (dark, with a black pupil), nostrils and the mouth line of horse/sheep heads."""
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
        albedo = albedo.index_copy(0, idx, col * (~pup).float()[:, None])
        pupil = pupil.index_copy(0, idx, pup)
    ny, mx, my = float(landmarks[2, 1]), float(landmarks[4, 0]), float(landmarks[4, 1])
    idx = _subset((y < ny + 0.3) & (y > my - 0.25) & (x.abs() < mx + 0.45))
    if idx.numel():
        cx = chart.index_select(0, idx)
        r = ((cx[:, 0].abs() - (0.55 * mx + 0.05)) / 0.11) ** 2 + ((cx[:, 1] - ny - 0.05) / 0.07) ** 2
        dark = (1.0 - r).clamp(0, 0.5)[:, None] * 1.8
        mouth_line = torch.tensor([[-mx, my], [0.0, my - 0.05], [mx, my]])
        dm = polyline_distance(cx, mouth_line)
        dark = torch.maximum(dark, ((0.035 - dm) / 0.015).clamp(0, 1)[:, None] * 0.85)
        albedo = albedo.index_copy(0, idx, albedo.index_select(0, idx) * (1 - dark))
    return albedo, pupil


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
        The new albedo (P, 3) and the pupil mask (D,) of the subset.
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
        albedo = albedo.index_copy(
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
        albedo = albedo.index_copy(0, p_idx, col)
        pupil = pupil.index_copy(0, idx, pup)
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
