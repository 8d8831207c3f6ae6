"""Face-crop and detection-scene samples of the synthetic world, deterministic in (seed, index).

Convention
----------
Samples follow ``facelit.batch``: images (3, H, W) float32 RGB in [0, 1]; points (x, y) in pixels
with the pixel-area frame (pixel i covers [i, i + 1)); boxes xyxy; angles (yaw, pitch, roll) in
degrees with the convention of ``facelit.geometry.pose`` (the renderer rotates heads with
``head_to_camera``, so labels and pixels agree by construction).

The face box is the bounding box of the projected iBUG-68 landmarks and three forehead points
(WIDER-like: hairline to chin, ears excluded). Derived schemes (five_point, aflw21, aflw19)
average landmark vertices in 3D, then project; AFLW-21 ears are ear-lobe vertices. A point is
visible when it is inside the image, its surface faces the camera and nothing (the head itself,
another face, an occluder) lies in front of it.

Every sample draws its random numbers from its own generator ``(seed, index)``; several samples
are rendered together (stacked as tiles of one canvas) by ``render_crops`` / ``render_scenes``,
which the datasets use for whole batches. A sample is the same whichever batch renders it (up to
float rounding, ~1e-5).

Scene attributes (WIDER-like):

- ``blur``: 0 clear, 1 normal (Gaussian sigma ~ 1.2 % of the face height), 2 heavy (~ 3.5 %).
- ``occlusion``: fraction of the 68 landmarks covered by other objects (occluders, closer faces):
  0 if < 2 %, 1 (partial) if < 35 %, 2 (heavy) otherwise. Faces with more than 90 % covered are
  drawn but not labelled.
- ``difficulty`` (easy, medium, hard): easy = height >= 40 px and blur < 2 and occlusion < 2;
  medium = height >= 20 px and occlusion < 2; hard = every face. So easy ⊆ medium ⊆ hard.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from .appearance import (
    EXPRESSION_DRAWS,
    IDENTITY_DRAWS,
    SKIN_TONES,
    combine,
    expression_from_uniform,
    identity_from_uniform,
    stack_identities,
)
from .background import (
    BACKGROUND_DRAWS,
    background_noise_size,
    backgrounds,
    finish,
    gaussian_blur,
    superellipse_fans,
    upscale,
)
from .domains import Domain, get_domain
from .head import HeadModel, _scheme_weights, check_species, head_model
from .raster import rasterize
from .render import (
    LAYER_SPACING,
    Assets,
    Piece,
    PosedHeads,
    Soup,
    build_assets,
    fit_projection,
    head_soup,
    point_visibility,
    pose_heads,
    render_soup,
    sample_lights,
    shape_soup,
)
from .rng import generator

__all__ = [
    "render_crop",
    "render_crops",
    "render_scene",
    "render_scenes",
    "EASY_MIN_HEIGHT",
    "MEDIUM_MIN_HEIGHT",
]

EASY_MIN_HEIGHT = 40.0
MEDIUM_MIN_HEIGHT = 20.0
_BLUR_FRACTION = (0.0, 0.012, 0.035)
_OCCLUSION_LEVELS = (0.02, 0.35)
_HIDDEN_DROP = 0.9
_SHAPE_DRAWS = 10
_CROP_CLUTTER_MAX = 10
_OCCLUDER_DEPTH = 2.0  # in front of every head layer of a crop


class _Draws:
    """Consumes columns of per-sample uniform draws (B, D)."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u, self.i = u, 0

    def take(self, k: int) -> torch.Tensor:
        if self.i + k > self.u.shape[-1]:
            raise RuntimeError(f"random draws exhausted ({self.u.shape[-1]} columns)")
        out = self.u[..., self.i : self.i + k]
        self.i += k
        return out


def _check_scheme(species: str, scheme: str) -> None:
    try:
        _scheme_weights(species, scheme)
    except KeyError as err:  # unknown to facelit.geometry.schemes
        raise ValueError(str(err)) from None


def _pose(u: torch.Tensor, domain: Domain) -> torch.Tensor:
    lo = torch.tensor([domain.yaw[0], domain.pitch[0], domain.roll[0]])
    hi = torch.tensor([domain.yaw[1], domain.pitch[1], domain.roll[1]])
    return lo + (hi - lo) * u


def _shape_params(
    u: torch.Tensor, scale: torch.Tensor, size_lo: torch.Tensor, size_hi: torch.Tensor, skin_like: float = 0.0
) -> tuple[torch.Tensor, ...]:
    """Superellipse parameters from draws u (K, 10): centre (in [0, scale]), axes (log-uniform in
    [size_lo, size_hi]), angle, power, colour, second colour, texture."""
    centre = u[:, 0:2] * scale
    axes = torch.exp(
        torch.log(size_lo)[:, None] + (torch.log(size_hi) - torch.log(size_lo))[:, None] * u[:, 2:4]
    )
    angle = u[:, 4] * math.pi
    power = torch.tensor([0.9, 2.0, 2.0, 6.0, 12.0]).index_select(0, (u[:, 5] * 5).long().clamp(max=4))
    colour = u[:, 6:9] * 0.9 + 0.05
    if skin_like > 0:
        skin = SKIN_TONES.index_select(0, (u[:, 6] * len(SKIN_TONES)).long().clamp(max=len(SKIN_TONES) - 1))
        colour = torch.where((u[:, 7] < skin_like)[:, None], skin, colour)
    colour2 = colour.roll(1, 1) * 0.5 + 0.3 * (1 - colour)
    return centre, axes, angle, power, colour, colour2, u[:, 9]


def _objects_table(
    lights: torch.Tensor, tiles: torch.Tensor, colour2: torch.Tensor | None = None
) -> torch.Tensor:
    """(O, 11) per-object light (6), second stripe colour (3) and tile origin (2) for ``render_soup``."""
    c2 = torch.zeros(lights.shape[0], 3) if colour2 is None else colour2
    return torch.cat([lights, c2, tiles[:, :2]], 1)


def _tiles(b: int, height: int, width: int) -> torch.Tensor:
    y0 = torch.arange(b, dtype=torch.float32) * height
    return torch.stack([torch.zeros(b), y0, torch.full((b,), float(width)), y0 + height], 1)


def _draw_clutter(
    half: torch.Tensor,
    u: torch.Tensor,
    count: torch.Tensor,
    brightness: torch.Tensor,
    size_frac: tuple[float, float],
    skin_like: float,
) -> torch.Tensor:
    """Draw up to K flat shapes per image (u: (B, K, 10), ``count`` (B,) of them, later ones on top)
    over half-resolution backgrounds (B, 3, h, w); returns the new backgrounds."""
    b, _, hh, hw = half.shape
    k = u.shape[1]
    if k == 0 or not bool((count > 0).any()):
        return half
    flat = u.reshape(b * k, _SHAPE_DRAWS)
    short = float(min(hh, hw))
    lo = torch.full((b * k,), size_frac[0] * short)
    hi = torch.full((b * k,), size_frac[1] * short)
    centre, axes, angle, power, colour, colour2, tex = _shape_params(
        flat, torch.tensor([hw, hh], dtype=torch.float32), lo, hi, skin_like
    )
    present = (torch.arange(k)[None, :] < count[:, None]).reshape(-1)
    verts, tris = superellipse_fans(centre, axes * present[:, None], angle, power)
    segs = tris.shape[0] // (b * k)
    shape_of = torch.arange(b * k).repeat_interleave(segs)
    depth = (k - torch.arange(k, dtype=torch.float32)).repeat(b)  # later shapes are closer
    vdepth = depth[:, None].expand(-1, verts.shape[1]).reshape(-1)
    clip = _tiles(b, hh, hw).repeat_interleave(k * segs, 0)
    frag = rasterize(
        verts.reshape(-1, 2), vdepth, tris, torch.zeros(tris.shape[0], dtype=torch.bool), b * hh, hw, clip
    )
    if frag.pixel.numel() == 0:
        return half
    shape = shape_of.index_select(0, frag.tri)
    c1 = colour.index_select(0, shape)
    striped = (tex > 0.35).index_select(0, shape)
    idx = striped.nonzero().squeeze(1)
    if idx.numel():
        p = frag.pixel.index_select(0, idx)
        px, py = (p % hw).float(), (torch.div(p, hw, rounding_mode="floor") % hh).float()
        t = tex.index_select(0, shape.index_select(0, idx))
        m = (0.5 + 0.5 * torch.sin(px * (0.15 + t) * 6.0 + py * (0.7 - t) * 4.0))[:, None]
        c1 = c1.index_copy(
            0,
            idx,
            torch.lerp(c1.index_select(0, idx), colour2.index_select(0, shape.index_select(0, idx)), m),
        )
    light = brightness.repeat_interleave(k).index_select(0, shape)[:, None]
    canvas = _canvas(half)
    canvas.view(3, -1).index_copy_(1, frag.pixel, (c1 * light).clamp(0, 1).T)
    return _uncanvas(canvas, b)


def _canvas(images: torch.Tensor) -> torch.Tensor:
    b, _, h, w = images.shape
    return images.permute(1, 0, 2, 3).reshape(3, b * h, w).contiguous()


def _uncanvas(canvas: torch.Tensor, b: int) -> torch.Tensor:
    _, bh, w = canvas.shape
    return canvas.view(3, b, bh // b, w).permute(1, 0, 2, 3)


def _box_of(points: torch.Tensor) -> torch.Tensor:
    return torch.cat([points.amin(-2), points.amax(-2)], -1)


@functools.lru_cache(maxsize=1024)
def _identity_assets(seed: int, identity: int, species: str, skin_tones: tuple[int, ...]) -> Assets:
    """Assets of one identity, deterministic in (seed, identity) (cached: identities recur)."""
    model = head_model(species)
    u = torch.rand(1, IDENTITY_DRAWS, generator=generator(seed, identity, species, "identity"))
    return build_assets(model, identity_from_uniform(model, u, skin_tones))


def _stack_assets(items: list[Assets]) -> Assets:
    if len(items) == 1:
        return items[0]
    pieces = []
    for parts in zip(*(a.pieces for a in items), strict=True):
        p0 = parts[0]
        pieces.append(
            Piece(
                torch.cat([p.verts for p in parts]),
                torch.cat([p.normals for p in parts]),
                torch.cat([p.rest for p in parts]),
                p0.faces,
                p0.material,
                torch.cat([p.keep for p in parts]),
                p0.frame,
            )
        )
    return Assets(
        stack_identities([a.identity for a in items]),
        torch.cat([a.heights for a in items]),
        torch.cat([a.hair for a in items]),
        torch.cat([a.albedo for a in items]),
        pieces,
    )


def _pose_and_fit(
    model: HeadModel,
    assets: Assets,
    expr_u: torch.Tensor,
    ypr: torch.Tensor,
    distance: torch.Tensor,
    sizes: torch.Tensor,
    centres: torch.Tensor,
    layer: torch.Tensor,
    features: torch.Tensor,
    by: str,
    expression: float,
) -> PosedHeads:
    params = combine(assets.identity, expression_from_uniform(model, expr_u, expression))
    rot, cam, normals = pose_heads(model, assets, params, ypr, distance)
    scale, centre = fit_projection(cam[:, model.box_index], sizes, centres, by=by)
    mouth = (
        params.warp[:, model.warp_names.index("mouth_open")]
        if "mouth_open" in model.warp_names
        else torch.zeros(ypr.shape[0])
    )
    heads = PosedHeads(
        model=model,
        assets=assets,
        params=params,
        ypr=ypr,
        rot=rot,
        distance=distance,
        cam=cam,
        normals=normals,
        scale=scale,
        centre=centre,
        xy=torch.zeros(0),
        layer=layer,
        features=features,
        mouth_open=mouth,
    )
    heads.xy = heads.project(cam)
    return heads


def _keep_inside(heads: PosedHeads, index: torch.Tensor, width: float, height: float, margin: float) -> None:
    """Shift each head's principal point so that its points ``index`` lie in the image (in place)."""
    pts = heads.xy[:, index]
    lo, hi = pts.amin(1), pts.amax(1)
    lim = torch.tensor([width - margin, height - margin])
    shift = (margin - lo).clamp(min=0) - (hi - lim).clamp(min=0)
    heads.centre = heads.centre + shift
    heads.xy = heads.xy + shift[:, None]


def _blur_regions(
    images: torch.Tensor,
    regions: list[tuple[int, list[float], float]],
    obj_map: torch.Tensor | None,
    obj_ids: list[int],
) -> None:
    """Blur rectangular regions (image b, box, sigma) of images (B, 3, H, W) in place; with an object
    map (B, H, W), only the pixels of the region's object (and uncovered neighbours) change."""
    _, _, h, w = images.shape
    for (b, box, sigma), oid in zip(regions, obj_ids, strict=True):
        x0, y0, x1, y1 = box
        m = 0.35 * max(x1 - x0, y1 - y0) + 3 * sigma
        c0, r0, c1, r1 = (
            max(0, int(x0 - m)),
            max(0, int(y0 - m)),
            min(w, int(x1 + m) + 1),
            min(h, int(y1 + m) + 1),
        )
        if c1 - c0 < 2 or r1 - r0 < 2:
            continue
        window = images[b, :, r0:r1, c0:c1]
        blurred = gaussian_blur(window, sigma)
        if obj_map is None:
            images[b, :, r0:r1, c0:c1] = blurred
        else:
            images[b, :, r0:r1, c0:c1] = torch.where(obj_map[b, r0:r1, c0:c1] == oid, blurred, window)


# ------------------------------------------------------------------------------------------ crops
_CROP_DRAWS = 16 + EXPRESSION_DRAWS + BACKGROUND_DRAWS + _CROP_CLUTTER_MAX * _SHAPE_DRAWS + 20


def render_crops(
    seed: int,
    indices: Sequence[int],
    size: int = 128,
    domain: str = "source",
    species: str = "human",
    scheme: str = "ibug68",
    num_identities: int = 100,
    mesh: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Face-crop samples ``render_crop(seed, i, ...)`` for every i of ``indices``, rendered together."""
    dom = get_domain(domain)
    check_species(species)
    _check_scheme(species, scheme)
    if int(size) < 16:
        raise ValueError(f"render_crop: size must be >= 16, got {size}")
    if int(num_identities) < 1:
        raise ValueError(f"render_crop: num_identities must be >= 1, got {num_identities}")
    s, b = int(size), len(indices)
    if b == 0:
        return []
    model = head_model(species)
    gens = [generator(seed, int(i), "crop") for i in indices]
    u = torch.stack([torch.rand(_CROP_DRAWS, generator=g) for g in gens])
    noise = torch.stack([torch.randn(background_noise_size(s, s), generator=g) for g in gens])
    d = _Draws(u)
    identity = (d.take(1)[:, 0] * num_identities).long().clamp(max=int(num_identities) - 1)
    assets = _stack_assets(
        [_identity_assets(int(seed), k, species, tuple(dom.skin_tones)) for k in identity.tolist()]
    )
    ypr = _pose(d.take(3), dom)
    expr_u = d.take(EXPRESSION_DRAWS)
    distance = 5.0 + 7.0 * d.take(1)[:, 0]
    frac = 0.5 + 0.12 * d.take(1)[:, 0]
    jitter = (d.take(2) - 0.5) * (0.1 * s)
    heads = _pose_and_fit(
        model,
        assets,
        expr_u,
        ypr,
        distance,
        frac * s,
        s / 2 + jitter,
        torch.ones(b),
        torch.ones(b, dtype=torch.bool),
        "max",
        dom.expression,
    )
    label_index = torch.cat(
        [model.box_index, torch.tensor(list(model.extra_index.values()), dtype=torch.long)]
    )
    _keep_inside(heads, label_index, s, s, 2.0)
    lights = sample_lights(d.take(5), dom.ambient, dom.diffuse)
    half, grain = backgrounds(d.take(BACKGROUND_DRAWS), noise, s, s, dom)
    n_clutter = (
        (dom.clutter[0] + d.take(1)[:, 0] * (dom.clutter[1] - dom.clutter[0] + 1))
        .long()
        .clamp(max=_CROP_CLUTTER_MAX)
    )
    clutter_u = d.take(_CROP_CLUTTER_MAX * _SHAPE_DRAWS).reshape(b, _CROP_CLUTTER_MAX, _SHAPE_DRAWS)
    half = _draw_clutter(half, clutter_u, n_clutter, lights[:, 3] + 0.6 * lights[:, 4], (0.05, 0.35), 0.0)
    bg = upscale(half, grain, s, s)

    # occluders: a shape over part of the face, in front of it
    occ_u = d.take(12)
    occluded = occ_u[:, 0] < dom.occluder_prob
    box = _box_of(heads.xy[:, model.box_index])
    bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    centre = torch.stack([box[:, 0] + bw * occ_u[:, 1], box[:, 1] + bh * (0.3 + 0.8 * occ_u[:, 2])], 1)
    axes = (
        torch.stack([bw * (0.2 + 0.25 * occ_u[:, 3]), bh * (0.15 + 0.2 * occ_u[:, 4])], 1) * occluded[:, None]
    )
    _, _, angle, power, colour, colour2, tex = _shape_params(
        occ_u[:, 2:12], torch.ones(2), torch.ones(b), torch.ones(b)
    )
    tiles = _tiles(b, s, s)
    soup = Soup.cat(
        [
            head_soup(heads, tiles, 0),
            shape_soup(centre, axes, angle, power, colour, torch.full((b,), _OCCLUDER_DEPTH), tex, tiles, b),
        ]
    )
    canvas = _canvas(bg)
    objects = _objects_table(
        torch.cat([lights, lights]), torch.cat([tiles, tiles]), torch.cat([torch.zeros(b, 3), colour2])
    )
    frag, obj_map = render_soup(soup, canvas, objects, heads)
    weights = _scheme_weights(species, scheme)
    cam_k, xy_k, nrm_k = heads.points(weights)
    visible, _ = point_visibility(
        cam_k, xy_k, nrm_k, heads.layer, heads.scale, frag, obj_map, torch.arange(b), tiles
    )
    images = _uncanvas(canvas, b)
    blur_u = d.take(2)
    blurred = (blur_u[:, 0] < dom.blur_prob).nonzero().squeeze(1).tolist()
    if blurred:
        sigma = (dom.blur_sigma[0] + (dom.blur_sigma[1] - dom.blur_sigma[0]) * blur_u[:, 1]) * bh / 100.0
        for i in blurred:
            images[i] = gaussian_blur(images[i], float(sigma[i]))
    images = finish(images, d.take(3), dom)
    mesh_labels = heads.mesh_labels() if mesh else None
    out = []
    for i in range(b):
        sample = {
            "image": images[i].contiguous(),
            "landmarks": xy_k[i],
            "landmarks_visible": visible[i],
            "pose": ypr[i],
            "boxes": box[i],
            "identity": identity[i],
        }
        if mesh_labels is not None:
            sample["mesh"] = mesh_labels[i]
        out.append(sample)
    return out


def render_crop(
    seed: int,
    index: int,
    size: int = 128,
    domain: str = "source",
    species: str = "human",
    scheme: str = "ibug68",
    num_identities: int = 100,
    mesh: bool = False,
) -> dict[str, torch.Tensor]:
    """One face-crop sample (``facelit.batch`` face-crop keys).

    Returns:
        image (3, S, S) float32; landmarks (K, 2) in ``scheme``; visible (K,) bool; pose (3,) yaw,
        pitch, roll; box (4,) xyxy face box; identity () int64 in [0, num_identities); mesh (V, 3)
        (x, y pixels, z relative to the nose tip in pixels, positive towards the camera) when ``mesh``.
    """
    return render_crops(seed, [index], size, domain, species, scheme, num_identities, mesh)[0]


# ----------------------------------------------------------------------------------------- scenes
_FACE_DRAWS = IDENTITY_DRAWS + 3 + EXPRESSION_DRAWS + 1 + 12 + 3 + 3  # last 3: distractor placement
_DISTRACTORS_MAX = 2


def _scene_layout(
    u: torch.Tensor,
    tries: list,
    height: int,
    width: int,
    max_faces: int,
    min_face: float,
    max_face_frac: float,
) -> torch.Tensor:
    """(N, 3) face box heights and centres (h, cx, cy), largest first, overlapping little.

    Scene kinds: empty (7 %), portrait (1-3 large faces), group (3-12 medium), crowd (10-24 small).
    """
    short = min(height, width)
    r = u.tolist()
    if r[0] < 0.07 or max_faces == 0:
        return torch.zeros(0, 3)
    cap = max(min_face, max_face_frac * short)
    if r[1] < 0.25:
        n, lo, hi = 1 + int(r[2] * 3), 0.15 * short, cap
    elif r[1] < 0.65:
        n, lo, hi = 3 + int(r[2] * 10), min_face, 0.3 * short
    else:
        n, lo, hi = 10 + int(r[2] * 15), min_face, 0.12 * short
    n = min(n, max_faces)
    lo, hi = max(min_face, min(lo, cap)), max(min_face, min(hi, cap))
    sizes = sorted(
        (math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * t) for t in tries[0][:n]), reverse=True
    )
    placed: list[tuple[float, float, float]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for h, cand in zip(sizes, tries[1][: len(sizes)], strict=True):
        h = min(h, 0.9 * short)
        w = 0.95 * h
        for cu, cv in cand:
            cx = 0.6 * w + 2 + cu * max(0.0, width - 1.2 * w - 4)
            cy = 0.6 * h + 2 + cv * max(0.0, height - 1.2 * h - 4)
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            if all(
                (min(box[2], q[2]) - max(box[0], q[0])) <= 0
                or (min(box[3], q[3]) - max(box[1], q[1])) <= 0
                or (min(box[2], q[2]) - max(box[0], q[0])) * (min(box[3], q[3]) - max(box[1], q[1]))
                <= 0.3 * w * h
                for q in boxes
            ):
                placed.append((h, cx, cy))
                boxes.append(box)
                break
    return torch.tensor(placed, dtype=torch.float32).reshape(-1, 3)


def render_scenes(
    seed: int,
    indices: Sequence[int],
    height: int = 640,
    width: int = 640,
    domain: str = "source",
    max_faces: int = 24,
    min_face: float = 6.0,
    max_face_frac: float = 0.8,
) -> list[dict[str, torch.Tensor]]:
    """Detection samples ``render_scene(seed, i, ...)`` for every i of ``indices``, rendered together."""
    dom = get_domain(domain)
    if height < 32 or width < 32:
        raise ValueError(f"render_scene: image must be at least 32 x 32, got {height} x {width}")
    if max_faces < 0 or min_face <= 0 or not 0 < max_face_frac <= 1:
        raise ValueError(
            f"render_scene: bad max_faces={max_faces}, min_face={min_face}, max_face_frac={max_face_frac}"
        )
    b = len(indices)
    if b == 0:
        return []
    model = head_model("human")
    short = min(height, width)
    k_clutter = int(math.ceil(dom.clutter[1] * height * width / (128 * 128) / 4))
    n_slots = max_faces + _DISTRACTORS_MAX
    scene_draws = 5 + 5 + BACKGROUND_DRAWS + 1 + k_clutter * _SHAPE_DRAWS + 3 + 2
    u_scene, u_face, layouts, noise = [], [], [], []
    for i in indices:
        g = generator(seed, int(i), "scene")
        us = torch.rand(scene_draws, generator=g)
        uf = torch.rand(n_slots, _FACE_DRAWS, generator=g)
        sizes_u = torch.rand(n_slots, generator=g).tolist()
        place_u = torch.rand(n_slots, 20, 2, generator=g).tolist()
        noise.append(torch.randn(background_noise_size(height, width), generator=g))
        layouts.append(
            _scene_layout(us[:5], [sizes_u, place_u], height, width, max_faces, min_face, max_face_frac)
        )
        u_scene.append(us)
        u_face.append(uf)
    d = _Draws(torch.stack(u_scene))
    d.take(5)  # layout
    lights = sample_lights(d.take(5), dom.ambient, dom.diffuse)
    half, grain = backgrounds(d.take(BACKGROUND_DRAWS), torch.stack(noise), height, width, dom)
    n_clutter = (dom.clutter[0] + d.take(1)[:, 0] * (dom.clutter[1] - dom.clutter[0] + 1)) * (
        height * width / 128**2 / 4
    )
    clutter_u = d.take(k_clutter * _SHAPE_DRAWS).reshape(b, k_clutter, _SHAPE_DRAWS)
    half = _draw_clutter(
        half,
        clutter_u,
        n_clutter.long().clamp(max=k_clutter),
        lights[:, 3] + 0.6 * lights[:, 4],
        (0.03, 0.25),
        0.25,
    )
    bg = upscale(half, grain, height, width)
    finish_u = d.take(3)
    distract_u = d.take(2)

    # faces of all scenes in one batch: labelled faces first in each scene, then distractors
    rows, scene_of, layer, features, sizes, centres = [], [], [], [], [], []
    for si, (lay, uf) in enumerate(zip(layouts, u_face, strict=True)):
        n = lay.shape[0]
        du = distract_u[si].tolist()
        nd = min(int(du[0] * (_DISTRACTORS_MAX + 1)), _DISTRACTORS_MAX) if du[1] < dom.distractor_rate else 0
        dist_u = uf[max_faces : max_faces + nd, -3:]
        dsize = torch.exp(
            math.log(max(min_face, 0.03 * short))
            + math.log(max(1.0, 0.25 * short / max(min_face, 0.03 * short))) * dist_u[:, 0]
        )
        dcentre = dist_u[:, 1:] * torch.tensor([width, height], dtype=torch.float32)
        rows.append(torch.cat([uf[:n], uf[max_faces : max_faces + nd]]))
        scene_of += [si] * (n + nd)
        layer.append(torch.arange(1, n + nd + 1, dtype=torch.float32))
        features.append(torch.arange(n + nd) < n)
        sizes.append(torch.cat([lay[:, 0], dsize]))
        centres.append(torch.cat([lay[:, 1:], dcentre]))
    total = sum(r.shape[0] for r in rows)
    tiles = _tiles(b, height, width)
    canvas = _canvas(bg)
    parts, objects = [], [torch.zeros(0, 11)]
    heads = None
    if total:
        fu = _Draws(torch.cat(rows))
        scene_t = torch.tensor(scene_of)
        assets = build_assets(model, identity_from_uniform(model, fu.take(IDENTITY_DRAWS), dom.skin_tones))
        ypr = _pose(fu.take(3), dom)
        expr_u = fu.take(EXPRESSION_DRAWS)
        distance = 5.0 + 7.0 * fu.take(1)[:, 0]
        heads = _pose_and_fit(
            model,
            assets,
            expr_u,
            ypr,
            distance,
            torch.cat(sizes),
            torch.cat(centres),
            torch.cat(layer),
            torch.cat(features),
            "height",
            dom.expression,
        )
        labelled = heads.features
        _keep_inside(heads, model.box_index, width, height, 1.0)
        head_tiles = tiles.index_select(0, scene_t)
        parts.append(head_soup(heads, head_tiles, 0))
        objects.append(_objects_table(lights.index_select(0, scene_t), head_tiles))
        occ_u = fu.take(12)
        occ = _subset_mask(labelled & (occ_u[:, 0] < dom.occluder_prob))
        if occ.numel():
            box = _box_of(heads.xy.index_select(0, occ)[:, model.box_index])
            bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
            ou = occ_u.index_select(0, occ)
            centre = torch.stack([box[:, 0] + bw * ou[:, 1], box[:, 1] + bh * (0.3 + 0.8 * ou[:, 2])], 1)
            axes = torch.stack([bw * (0.2 + 0.3 * ou[:, 3]), bh * (0.15 + 0.25 * ou[:, 4])], 1)
            n_occ = occ.numel()
            _, _, angle, power, colour, colour2, tex = _shape_params(
                ou[:, 2:12], torch.ones(2), torch.ones(n_occ), torch.ones(n_occ)
            )
            depth = (
                heads.layer.index_select(0, occ) * LAYER_SPACING + heads.distance.index_select(0, occ) - 4.0
            )
            t_occ = head_tiles.index_select(0, occ)
            parts.append(shape_soup(centre, axes, angle, power, colour, depth, tex, t_occ, total))
            objects.append(
                _objects_table(lights.index_select(0, scene_t.index_select(0, occ)), t_occ, colour2)
            )
        blur_u = fu.take(3)
    if parts:
        frag, obj_map = render_soup(Soup.cat(parts), canvas, torch.cat(objects), heads)
    images = _uncanvas(canvas, b)

    outputs: list[dict[str, torch.Tensor]] = [dict() for _ in range(b)]
    if total:
        lab = _subset_mask(heads.features)
        sub = heads.subset(lab)
        lab_scene = scene_t.index_select(0, lab)
        lab_tiles = tiles.index_select(0, lab_scene)
        cam5, xy5, nrm5 = sub.points(_scheme_weights("human", "five_point"))
        vis5, _ = point_visibility(cam5, xy5, nrm5, sub.layer, sub.scale, frag, obj_map, lab, lab_tiles)
        cam68, xy68, nrm68 = sub.points(_scheme_weights("human", "ibug68"))
        _, hidden = point_visibility(cam68, xy68, nrm68, sub.layer, sub.scale, frag, obj_map, lab, lab_tiles)
        frac = hidden.float().mean(1)
        occlusion = (frac >= _OCCLUSION_LEVELS[0]).long() + (frac >= _OCCLUSION_LEVELS[1]).long()
        # faces hidden almost entirely behind others are not labelled
        kept = frac <= _HIDDEN_DROP
        boxes = _box_of(sub.xy[:, model.box_index])
        bh = boxes[:, 3] - boxes[:, 1]
        bu = blur_u.index_select(0, lab)
        level = torch.where(bu[:, 0] < dom.blur_prob, 1 + (bu[:, 1] < 0.5).long(), torch.zeros_like(lab))
        sigma = torch.tensor(_BLUR_FRACTION).index_select(0, level) * bh * (0.8 + 0.45 * bu[:, 2])
        blurred = (sigma > 0.3).nonzero().squeeze(1).tolist()
        if blurred:
            omap = obj_map.view(b, height, width)
            _blur_regions(
                images,
                [(int(lab_scene[i]), boxes[i].tolist(), float(sigma[i])) for i in blurred],
                omap,
                [int(lab[i]) for i in blurred],
            )
        easy = (bh >= EASY_MIN_HEIGHT) & (level < 2) & (occlusion < 2)
        medium = (bh >= MEDIUM_MIN_HEIGHT) & (occlusion < 2)
        difficulty = torch.stack([easy, medium | easy, torch.ones_like(easy)], 1)
        mesh = sub.mesh_labels()
        values = dict(
            boxes=boxes,
            landmarks=xy5,
            landmarks_valid=torch.ones_like(kept),
            landmarks_visible=vis5,
            mesh=mesh,
            mesh_valid=torch.ones_like(kept),
            ignore=torch.zeros_like(kept),
            difficulty=difficulty,
            blur=level,
            occlusion=occlusion,
            pose=sub.ypr,
        )
        for si in range(b):
            sel = ((lab_scene == si) & kept).nonzero().squeeze(1)
            outputs[si] = {k: val.index_select(0, sel) for k, val in values.items()}
    images = finish(images, finish_u, dom)
    v = model.num_vertices
    empty = dict(
        boxes=torch.zeros(0, 4),
        landmarks=torch.zeros(0, 5, 2),
        landmarks_valid=torch.zeros(0, dtype=torch.bool),
        landmarks_visible=torch.zeros(0, 5, dtype=torch.bool),
        mesh=torch.zeros(0, v, 3),
        mesh_valid=torch.zeros(0, dtype=torch.bool),
        ignore=torch.zeros(0, dtype=torch.bool),
        difficulty=torch.zeros(0, 3, dtype=torch.bool),
        blur=torch.zeros(0, dtype=torch.long),
        occlusion=torch.zeros(0, dtype=torch.long),
        pose=torch.zeros(0, 3),
    )
    return [{"image": images[si].contiguous(), **(outputs[si] if outputs[si] else empty)} for si in range(b)]


def _subset_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)


def render_scene(
    seed: int,
    index: int,
    height: int = 640,
    width: int = 640,
    domain: str = "source",
    max_faces: int = 24,
    min_face: float = 6.0,
    max_face_frac: float = 0.8,
) -> dict[str, torch.Tensor]:
    """One detection sample (``facelit.batch`` detection keys, unpadded: N faces, N may be 0).

    Returns:
        image (3, H, W); boxes (N, 4); landmarks (N, 5, 2) five-point; landmarks_valid (N,);
        landmarks_visible (N, 5); mesh (N, V, 3) (x, y pixels, z relative to the nose tip in pixels,
        positive towards the camera); mesh_valid (N,); ignore (N,) all False; difficulty (N, 3)
        (easy, medium, hard); blur (N,) and occlusion (N,) int64 levels 0/1/2; pose (N, 3).
    """
    return render_scenes(seed, [index], height, width, domain, max_faces, min_face, max_face_frac)[0]
