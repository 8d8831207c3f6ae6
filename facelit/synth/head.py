"""Parametric 3D heads (human, horse, sheep) as triangle meshes with landmark vertices.

Convention
----------
Head frame of ``facelit.geometry.pose``: x to the image right of a frontal face (the subject's
left), y down, z from the face towards the back of the head; the origin is the rotation centre
(middle of the head). Units: 1 ~ half the face width (~7.5 cm for a human). Triangles are oriented
outwards (right-hand rule). The template *chart* (frontal orthographic view of the mean head, x
right, y up) is described in ``facelit.synth.templates``.

The mesh is the spherical Delaunay triangulation (convex hull of unit directions) of the
landmarks, a few extra named points and a grid that is denser on the face, so every landmark is a
vertex: projecting the mesh projects the landmarks exactly. ``deform`` maps per-head parameters
(batched) to vertices: chart warps (eye spacing, mouth width, smile, mouth opening, ...), the
lathe profile scales (width, height, depth, jaw), height fields (nose, brows, cheeks, lips, chin,
ears, ...) and the hair volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facelit.geometry.schemes import ANIMAL5, IBUG68, LandmarkScheme, get_scheme

from .cache import tensor_cache
from .templates import TEMPLATES, SpeciesTemplate

__all__ = [
    "HeadModel",
    "HeadParams",
    "head_model",
    "deform",
    "identity_heights",
    "hair_weight",
    "SPECIES",
    "check_species",
]

SPECIES = tuple(TEMPLATES)
_PHI_STEP = 0.25  # degrees, profile table resolution
_NORMAL_Y = 0.7  # vertical weight of the displacement direction


def check_species(species: str) -> SpeciesTemplate:
    """The template of ``species``; ``ValueError`` listing the known names otherwise."""
    try:
        return TEMPLATES[species]
    except KeyError:
        raise ValueError(f"unknown species {species!r}; known: {list(SPECIES)}") from None


@dataclass
class HeadParams:
    """Batched shape parameters of B heads (all float32).

    Attributes:
        height: (B, Kh) multipliers of the template height fields (1 = template).
        warp: (B, Kw) coefficients of the chart warp fields (0 = template).
        scale: (B, 3) width, height and depth scales of the head profile (1 = template).
        jaw: (B,) relative change of the lower-face width (0 = template).
        hair: (B, 3) front hairline chart y, back hairline head Y, hair volume (head units).
        ears: (B,) scale of leaf ears (animals; 1 = template).
    """

    height: torch.Tensor
    warp: torch.Tensor
    scale: torch.Tensor
    jaw: torch.Tensor
    hair: torch.Tensor
    ears: torch.Tensor

    @property
    def batch(self) -> int:
        return self.height.shape[0]


@dataclass
class HeadModel:
    """One species' head mesh and its deformation bases.

    Public attributes:
        species: ``"human"``, ``"horse"`` or ``"sheep"``.
        vertices: (V, 3) float32 mean shape in the head frame.
        faces: (F, 3) int64 outward-oriented triangles.
        landmark_index: (K,) int64 vertices of the landmarks (iBUG-68 for humans, ANIMAL5 otherwise).
        extra_points: name -> (3,) mean position of extra named points (``left_ear``, ``right_ear``).
        extra_index: name -> vertex index of those points.
        nose_tip_index: vertex of the nose tip (the depth origin of mesh labels).
        scheme: the landmark scheme of ``landmark_index``.

    Internal (used by the renderer): ``chart`` (V, 2) template chart positions; ``phi``, ``psi``
    (V,) template sphere angles (degrees); ``front`` (V,) cosine of the angle to straight ahead;
    ``single_sided`` (F,) False for leaf ears; ``height_basis`` (Kh, V); ``warp_basis`` (Kw, V, 2);
    ``warped`` (V,) bool; profile tables; ``box_index`` vertices defining the face box;
    ``hair_mask`` (V,) 0 where hair never grows (ears); ``coarse_faces`` / ``coarse_single``: a
    coarser triangulation of a subset of the vertices (landmarks included) for small renderings.
    """

    species: str
    vertices: torch.Tensor
    faces: torch.Tensor
    landmark_index: torch.Tensor
    extra_points: dict[str, torch.Tensor]
    extra_index: dict[str, int]
    nose_tip_index: int
    scheme: LandmarkScheme
    template: SpeciesTemplate
    chart: torch.Tensor
    phi: torch.Tensor
    psi: torch.Tensor
    front: torch.Tensor
    single_sided: torch.Tensor
    height_basis: torch.Tensor
    height_names: tuple[str, ...]
    warp_basis: torch.Tensor
    warp_names: tuple[str, ...]
    warped: torch.Tensor
    box_index: torch.Tensor
    leaf_anchor: torch.Tensor
    leaf_offset: torch.Tensor
    leaf_index: torch.Tensor
    tables: dict[str, torch.Tensor]
    hair_mask: torch.Tensor
    coarse_faces: torch.Tensor
    coarse_single: torch.Tensor

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    def scheme_weights(self, scheme: LandmarkScheme) -> torch.Tensor:
        """(K, V) averaging weights that give ``scheme`` points from mesh vertices (3D, then project)."""
        return _scheme_weights(self.species, scheme.name)

    def zero_params(self, batch: int = 1) -> HeadParams:
        """Parameters of the template head."""
        return HeadParams(
            height=torch.ones(batch, len(self.height_names)),
            warp=torch.zeros(batch, len(self.warp_names)),
            scale=torch.ones(batch, 3),
            jaw=torch.zeros(batch),
            hair=torch.tensor(self.template.hairline + (0.0,)).expand(batch, 3).clone(),
            ears=torch.ones(batch),
        )


# ------------------------------------------------------------------------------- profile tables
def _profile_tables(profile: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.interpolate import PchipInterpolator

    phi = np.arange(-90.0, 90.0 + _PHI_STEP / 2, _PHI_STEP)
    out = {"phi": phi}
    for j, name in enumerate(("Y", "W", "Df", "Db"), start=1):
        out[name] = PchipInterpolator(profile[:, 0], profile[:, j])(phi)
    if np.any(np.diff(out["Y"]) >= 0):
        raise ValueError("head profile Y must decrease with latitude")
    return out


def _np_chart_to_sphere(
    tab: dict[str, np.ndarray], y_centre: float, xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    big_y = y_centre - xy[:, 1]
    phi = np.interp(-big_y, -tab["Y"], tab["phi"])
    w = np.interp(phi, tab["phi"], tab["W"])
    psi = np.degrees(np.arcsin(np.clip(xy[:, 0] / np.maximum(w, 1e-6), -1.0, 1.0)))
    return phi, psi


def _np_surface(tab: dict[str, np.ndarray], phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    w = np.interp(phi, tab["phi"], tab["W"])
    big_y = np.interp(phi, tab["phi"], tab["Y"])
    cpsi = np.cos(np.radians(psi))
    d = np.where(cpsi > 0, np.interp(phi, tab["phi"], tab["Df"]), np.interp(phi, tab["phi"], tab["Db"]))
    return np.stack([w * np.sin(np.radians(psi)), big_y, -d * cpsi], 1)


def _directions(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    p, s = np.radians(phi), np.radians(psi)
    return np.stack([np.sin(s) * np.cos(p), -np.sin(p), -np.cos(s) * np.cos(p)], 1)


def _fibonacci(n: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.degrees(np.arcsin(z))
    psi = np.degrees((np.pi * (1 + 5**0.5) * k) % (2 * np.pi)) - 180.0
    return phi, psi


def _points_in_poly_np(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    a, b = poly, np.roll(poly, -1, 0)
    px, py = pts[:, :1], pts[:, 1:]
    straddle = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    dy = np.where(b[:, 1] == a[:, 1], 1.0, b[:, 1] - a[:, 1])
    xc = a[None, :, 0] + (py - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / dy[None]
    return ((straddle & (px < xc)).sum(1) % 2) == 1


# --------------------------------------------------------------------------------- mesh builder
def _hull_faces(dirs: np.ndarray, species: str) -> np.ndarray:
    """Outward-oriented triangles of the convex hull of unit directions (spherical Delaunay)."""
    from scipy.spatial import ConvexHull

    tri = ConvexHull(dirs).simplices.copy()
    if len(np.unique(tri)) != len(dirs):
        raise RuntimeError(
            f"{species}: {len(dirs) - len(np.unique(tri))} points were lost by the triangulation"
        )
    a, b, c = dirs[tri[:, 0]], dirs[tri[:, 1]], dirs[tri[:, 2]]
    flip = (np.cross(b - a, c - a) * (a + b + c)).sum(1) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def _coarse_radius(x: np.ndarray, y: np.ndarray, front: np.ndarray, step: float) -> np.ndarray:
    """Thinning radius of the coarse level: finest on the nose, fine on the face, coarse elsewhere."""
    nose = (np.abs(x) < 0.25) & (y > -0.42) & (y < 0.45) & (front > 0.5)
    return np.where(nose, 0.055, np.where(front > 0.45, 1.45 * step, 2.6 * step))


def _mirror_index(points: np.ndarray) -> np.ndarray:
    """Index of each point's mirror image across x = 0 in a symmetric point set."""
    from scipy.spatial import cKDTree

    mirrored = points * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(points).query(mirrored)
    if dist.max() > 1e-6:
        raise RuntimeError(f"head points are not mirror-symmetric (error {dist.max():.3g})")
    return idx


def _thin(points: np.ndarray, n_fixed: int, radius: np.ndarray) -> np.ndarray:
    """Greedy Poisson-disk subset (sorted indices) of a mirror-symmetric point set, itself symmetric:
    the first ``n_fixed`` points are always kept; points are taken with their mirror images."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    mirror = _mirror_index(points)
    taken = np.zeros(len(points), bool)
    blocked = np.zeros(len(points), bool)
    for i in range(len(points)):
        if taken[i] or (i >= n_fixed and blocked[i]):
            continue
        for k in {i, int(mirror[i])}:
            taken[k] = True
            blocked[tree.query_ball_point(points[k], radius[k])] = True
    return np.nonzero(taken)[0]


def _grid(half_width: float, ymin: float, ymax: float, step: float) -> np.ndarray:
    """Chart grid symmetric about x = 0, odd rows staggered by half a step (better triangles)."""
    ys = np.arange(ymin, ymax + step / 2, step)
    n = int(np.floor(half_width / step)) + 1
    rows = []
    for r, y in enumerate(ys):
        xs = (np.arange(-n, n + 1) + (0.5 if r % 2 else 0.0)) * step
        xs = xs[np.abs(xs) <= half_width + 1e-9]
        rows.append(np.stack([xs, np.full_like(xs, y)], 1))
    return np.concatenate(rows, 0)


def _build(species: str) -> HeadModel:
    from scipy.spatial import cKDTree

    t = check_species(species)
    tab = _profile_tables(t.profile)
    yc = t.y_centre

    fixed_chart = [t.landmarks, t.box_points]
    leaf_anchor_chart = np.array([(ax, ay) for ax, ay, _ in t.leaves]).reshape(-1, 2)
    fixed_chart.append(leaf_anchor_chart)
    chart_pts = np.concatenate(fixed_chart, 0)
    f_phi, f_psi = _np_chart_to_sphere(tab, yc, chart_pts)
    sphere_extra = {k: v for k, v in t.extra.items() if v[0] == "sphere"}
    f_phi = np.concatenate([f_phi, [v[1] for v in sphere_extra.values()]])
    f_psi = np.concatenate([f_psi, [v[2] for v in sphere_extra.values()]])
    n_fixed = len(f_phi)

    def chart_ok(xy: np.ndarray, margin: float) -> np.ndarray:
        phi, psi = _np_chart_to_sphere(tab, yc, xy)
        w = np.interp(phi, tab["phi"], tab["W"])
        ok = (np.abs(xy[:, 0]) < margin * w) & (phi > -86) & (phi < 86)
        ok &= (xy[:, 1] < yc - tab["Y"][-1] - 0.05) & (xy[:, 1] > yc - tab["Y"][0] + 0.05)
        for hole in t.holes:
            centre = hole.mean(0)
            grown = centre + (hole - centre) * 1.25 + np.array([0.0, 0.0])
            ok &= ~_points_in_poly_np(xy, grown)
        return ok

    candidates: list[tuple[np.ndarray, np.ndarray, float]] = []  # (phi, psi, min spacing)
    for xmin, xmax, ymin, ymax, step in t.dense_patches:
        if abs(xmin + xmax) > 1e-9:
            raise ValueError(f"{species}: dense patches must be symmetric about x = 0, got {xmin}, {xmax}")
        g = _grid(xmax, ymin, ymax, step)
        g = g[chart_ok(g, 0.95)]
        candidates.append((*_np_chart_to_sphere(tab, yc, g), 0.55 * step))
    y_lo, y_hi = yc - tab["Y"][0], yc - tab["Y"][-1]
    g = _grid(1.2 * tab["W"].max(), y_lo, y_hi, t.grid_step)
    g = g[chart_ok(g, 0.93)]
    candidates.append((*_np_chart_to_sphere(tab, yc, g), 0.6 * t.grid_step))
    for pmin, pmax, smin, smax, step in t.sphere_patches:
        pp, ss = np.meshgrid(np.arange(pmin, pmax + 1e-6, step), np.arange(smin, smax + 1e-6, step))
        candidates.append((pp.ravel(), ss.ravel(), 0.03))
    fphi, fpsi = _fibonacci(900)
    half = (fpsi < -1.0) & (fpsi > -179.0)  # mirror one half: the point set is symmetric about x = 0
    candidates.append(
        (np.concatenate([fphi[half], fphi[half]]), np.concatenate([fpsi[half], -fpsi[half]]), 0.16)
    )

    phi_all, psi_all = f_phi.copy(), f_psi.copy()
    for c_phi, c_psi, spacing in candidates:
        kept = _np_surface(tab, phi_all, psi_all)
        cand = _np_surface(tab, c_phi, c_psi)
        dist, _ = cKDTree(kept).query(cand)
        sel = dist > spacing
        # self-thinning within the candidate set (grids are regular; Fibonacci is uniform)
        phi_all = np.concatenate([phi_all, c_phi[sel]])
        psi_all = np.concatenate([psi_all, c_psi[sel]])
    dirs = _directions(phi_all, psi_all)
    tri = _hull_faces(dirs, species)
    coarse = _thin(
        _np_surface(tab, phi_all, psi_all),
        n_fixed,
        _coarse_radius(
            np.interp(phi_all, tab["phi"], tab["W"]) * np.sin(np.radians(psi_all)),
            yc - np.interp(phi_all, tab["phi"], tab["Y"]),
            np.cos(np.radians(psi_all)) * np.cos(np.radians(phi_all)),
            t.grid_step,
        ),
    )
    coarse_tri = coarse[_hull_faces(dirs[coarse], species)]

    n_head = len(dirs)
    chart = np.stack(
        [
            np.interp(phi_all, tab["phi"], tab["W"]) * np.sin(np.radians(psi_all)),
            yc - np.interp(phi_all, tab["phi"], tab["Y"]),
        ],
        1,
    )
    # leaf ears (animals): anchor = the fixed anchor vertex, outline vertices appended
    leaf_anchor, leaf_offset, leaf_tris, leaf_idx = [], [], [], []
    nxt = n_head
    anchor0 = len(t.landmarks) + len(t.box_points)
    for li, (_, _, outline) in enumerate(t.leaves):
        anchor = anchor0 + li
        ids = list(range(nxt, nxt + len(outline)))
        for off in outline:
            leaf_anchor.append(anchor)
            leaf_offset.append(off)
        for k in range(len(ids) - 1):
            leaf_tris.append((anchor, ids[k], ids[k + 1]))
        leaf_idx.append(ids[len(ids) // 2])  # ear tip
        nxt += len(outline)
    n_total = nxt
    leaf_tris = np.array(leaf_tris, dtype=np.int64).reshape(-1, 3)
    faces = np.concatenate([tri, leaf_tris], 0)
    single = np.concatenate([np.ones(len(tri), bool), np.zeros(len(leaf_tris), bool)])
    coarse_faces = np.concatenate([coarse_tri, leaf_tris], 0)
    coarse_single = np.concatenate([np.ones(len(coarse_tri), bool), np.zeros(len(leaf_tris), bool)])
    phi_v = np.concatenate([phi_all, np.zeros(n_total - n_head)])
    psi_v = np.concatenate([psi_all, np.zeros(n_total - n_head)])
    chart_v = np.concatenate([chart, np.zeros((n_total - n_head, 2))], 0)
    if leaf_anchor:
        chart_v[n_head:] = chart_v[leaf_anchor]
        phi_v[n_head:] = phi_v[leaf_anchor]
        psi_v[n_head:] = psi_v[leaf_anchor]

    hx, hy = chart_v[:, 0], chart_v[:, 1]
    heights = np.stack([fn(hx, hy, psi_v, phi_v) for fn in t.height_fields.values()], 0)
    warps = np.stack([fn(hx, hy, psi_v, phi_v) for fn in t.warp_fields.values()], 0)
    heights[:, n_head:] = 0.0
    warps[:, n_head:] = 0.0
    warped = np.abs(warps).sum((0, 2)) > 1e-6
    front = (np.cos(np.radians(psi_v)) * np.cos(np.radians(phi_v))).astype(np.float32)

    n_lm = len(t.landmarks)
    landmark_index = np.arange(n_lm)
    box_index = np.arange(n_lm + len(t.box_points))
    extra_index: dict[str, int] = {}
    sphere_names = list(sphere_extra)
    for k, v in t.extra.items():
        if v[0] == "sphere":
            extra_index[k] = n_fixed - len(sphere_names) + sphere_names.index(k)
        else:
            extra_index[k] = leaf_idx[v[1]]

    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    hair_mask = np.ones(n_total, dtype=np.float32)
    if "ears" in t.height_fields:
        hair_mask *= 1 - np.clip(heights[list(t.height_fields).index("ears")] * 15, 0, 1)
    hair_mask[n_head:] = 0.0
    model = HeadModel(
        species=species,
        vertices=torch.zeros(n_total, 3),
        faces=torch.as_tensor(faces, dtype=torch.long),
        landmark_index=torch.as_tensor(landmark_index, dtype=torch.long),
        extra_points={},
        extra_index=extra_index,
        nose_tip_index=int(landmark_index[t.nose_tip]),
        scheme=IBUG68 if species == "human" else ANIMAL5,
        template=t,
        chart=f32(chart_v),
        phi=f32(phi_v),
        psi=f32(psi_v),
        front=f32(front),
        single_sided=torch.as_tensor(single),
        height_basis=f32(heights),
        height_names=tuple(t.height_fields),
        warp_basis=f32(warps),
        warp_names=tuple(t.warp_fields),
        warped=torch.as_tensor(warped),
        box_index=torch.as_tensor(box_index, dtype=torch.long),
        leaf_anchor=torch.as_tensor(np.array(leaf_anchor, dtype=np.int64)),
        leaf_offset=f32(np.array(leaf_offset, dtype=np.float32).reshape(-1, 3)),
        leaf_index=torch.arange(n_head, n_total),
        tables={
            **{k: f32(v) for k, v in tab.items()},
            "stack": f32(np.stack([tab["Y"], tab["W"], tab["Df"], tab["Db"]], 0)),
        },
        hair_mask=f32(hair_mask),
        coarse_faces=torch.as_tensor(coarse_faces, dtype=torch.long),
        coarse_single=torch.as_tensor(coarse_single),
    )
    verts = deform(model, model.zero_params(1))
    model.vertices = verts[0]
    model.extra_points = {k: model.vertices[i].clone() for k, i in extra_index.items()}
    for tensor in (model.vertices, model.faces, model.landmark_index):
        tensor.requires_grad_(False)
    return model


@tensor_cache()
def head_model(species: str = "human") -> HeadModel:
    """The (cached) head model of ``species`` in {"human", "horse", "sheep"}.

    Treat the returned tensors as read-only: they are shared by every caller.
    """
    check_species(species)
    return _build(species)


# ----------------------------------------------------------------------------------- deformation
def _take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` of a 1D table for an index of any shape, through ``index_select`` (the same
    values as advanced indexing, several times faster on the CPU)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def _interp_uniform(table: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of profile tables (..., n) sampled every ``_PHI_STEP`` degrees from -90."""
    pos = ((phi + 90.0) * (1.0 / _PHI_STEP)).clamp(0, table.shape[-1] - 1.001)
    i0 = pos.long()
    w = pos - i0
    flat = i0.reshape(-1)
    shape = (*table.shape[:-1], *i0.shape)
    # table[..., i0] and table[..., i0 + 1], gathered with index_select (same values, ~5x faster)
    lo = table.index_select(-1, flat).view(shape)
    return torch.lerp(lo, table.index_select(-1, flat + 1).view(shape), w)


def _chart_to_sphere(model: HeadModel, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tab = model.tables
    neg_y = xy[..., 1] - model.template.y_centre  # = -Y, increasing with latitude
    neg = -tab["Y"]
    pos = torch.searchsorted(neg, neg_y.contiguous()).clamp(1, neg.numel() - 1)
    below = pos - 1
    lo, hi = _take(neg, below), _take(neg, pos)
    w = ((neg_y - lo) / (hi - lo)).clamp(0, 1)
    phi = torch.lerp(_take(tab["phi"], below), _take(tab["phi"], pos), w)
    width = _interp_uniform(tab["W"], phi)
    psi = torch.rad2deg(torch.asin((xy[..., 0] / width.clamp(min=1e-4)).clamp(-0.999, 0.999)))
    return phi, psi


def _jaw_profile(phi: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(((phi + 45.0) / 18.0) ** 2))


def hair_weight(model: HeadModel, hair: torch.Tensor) -> torch.Tensor:
    """(B, V) soft hair (wool, mane) coverage of every vertex for hair parameters (B, 3)."""
    x, y = model.chart[:, 0], model.chart[:, 1]
    front_line = hair[:, :1] + 0.18 * x**2  # (B, V)
    s_front = torch.sigmoid((y - front_line) / 0.025)
    big_y = model.template.y_centre - y
    s_back = torch.sigmoid((hair[:, 1:2] - big_y) / 0.04)
    mix = ((model.front - 0.15) / 0.45).clamp(0, 1)
    return (mix * s_front + (1 - mix) * s_back) * model.hair_mask


def identity_heights(model: HeadModel, params: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Height field (B, V) of the identities (features and hair volume) and their hair coverage (B, V)."""
    hair = hair_weight(model, params.hair)
    return params.height @ model.height_basis + params.hair[:, 2:3] * hair, hair


def deform(model: HeadModel, params: HeadParams, heights: torch.Tensor | None = None) -> torch.Tensor:
    """Vertices (B, V, 3) of B heads in the head frame.

    Args:
        model: the species model.
        params: ``HeadParams`` of batch B.
        heights: (B, V) from ``identity_heights`` when precomputed (it depends on the identity only).
    """
    if heights is None:
        heights, _ = identity_heights(model, params)
    chart = model.chart + (params.warp @ model.warp_basis.flatten(1)).view(-1, model.num_vertices, 2)
    phi_w, psi_w = _chart_to_sphere(model, chart)
    phi = torch.where(model.warped, phi_w, model.phi)
    psi = torch.where(model.warped, psi_w, model.psi)
    prof = _interp_uniform(model.tables["stack"], phi)  # (4, B, V): Y, W, Df, Db
    width = prof[1] * params.scale[:, 0:1] * (1 + params.jaw[:, None] * _jaw_profile(phi))
    psi_r, phi_r = torch.deg2rad(psi), torch.deg2rad(phi)
    cpsi, spsi = torch.cos(psi_r), torch.sin(psi_r)
    depth = torch.where(cpsi > 0, prof[2], prof[3]) * params.scale[:, 2:3]
    cphi, sphi = torch.cos(phi_r), torch.sin(phi_r)
    base = torch.stack([width * spsi, prof[0] * params.scale[:, 1:2], -depth * cpsi], -1)
    normal = torch.stack([spsi * cphi, -sphi * _NORMAL_Y, -cpsi * cphi], -1)
    normal = normal * torch.rsqrt((normal * normal).sum(-1, keepdim=True).clamp(min=1e-12))
    verts = torch.addcmul(base, heights[..., None], normal)
    if model.leaf_anchor.numel():
        verts[:, model.leaf_index] = (
            verts[:, model.leaf_anchor] + model.leaf_offset * params.ears[:, None, None]
        )
    return verts


# ------------------------------------------------------------------------------- landmark schemes
@tensor_cache()
def _scheme_weights(species: str, scheme_name: str) -> torch.Tensor:
    model = head_model(species)
    scheme = (
        get_scheme(scheme_name)
        if scheme_name in ("ibug68", "five_point", "aflw21", "aflw19", "animal5")
        else None
    )
    known = ("animal5",) if species != "human" else ("ibug68", "five_point", "aflw21", "aflw19")
    if scheme is None or scheme_name not in known:
        raise ValueError(
            f"scheme {scheme_name!r} is not available for species {species!r}; known: {list(known)}"
        )
    v = model.vertices.shape[0]
    lm = model.landmark_index
    if scheme.name in (model.scheme.name,):
        w = torch.zeros(scheme.num_points, v)
        w[torch.arange(scheme.num_points), lm] = 1.0
        return w
    w = torch.zeros(scheme.num_points, v)
    for i, src in enumerate(scheme.from_ibug68):
        if src is None:
            w[i, model.extra_index[scheme.point_names[i]]] = 1.0
        else:
            w[i, lm[list(src)]] = 1.0 / len(src)
    return w
