"""Posed heads: camera placement, projection, lights and the per-identity assets they carry.

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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from facelit.geometry.pose import head_to_camera

from .appearance import Identity
from .head import HeadModel, HeadParams, deform

__all__ = [
    "MAT_HEAD",
    "MAT_HAIR",
    "MAT_BODY",
    "MAT_SHAPE",
    "LAYER_SPACING",
    "LOD_PIXELS",
    "sample_lights",
    "Piece",
    "Assets",
    "PosedHeads",
    "vertex_normals",
    "fit_projection",
    "pose_heads",
]

MAT_HEAD, MAT_HAIR, MAT_BODY, MAT_SHAPE = 0, 1, 2, 3
LAYER_SPACING = 1000.0
LOD_PIXELS = 100.0  # face boxes lower than this use the coarse mesh
_ATTR = 11  # normal 3, albedo 3, chart 2, front 1, hair 1, texture id 1


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
