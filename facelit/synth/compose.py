"""Shared steps of composing synthetic crops and scenes: per-sample draws, shapes and clutter,
canvases of stacked tiles, cached identity assets, posing and fitting heads, region blur.

See ``facelit.synth.world`` for the sample contracts.
"""

from __future__ import annotations

import math

import torch

from .appearance import (
    IDENTITY_DRAWS,
    SKIN_TONES,
    combine,
    expression_from_uniform,
    identity_from_uniform,
    palette,
    stack_identities,
)
from .background import (
    gaussian_blur,
    superellipse_fans,
)
from .cache import copy_tensors, tensor_cache
from .domains import Domain
from .head import HeadModel, _scheme_weights, head_model
from .raster import rasterize
from .render import (
    Assets,
    Piece,
    PosedHeads,
    build_assets,
    fit_projection,
    pose_heads,
)
from .rng import generator

_SHAPE_DRAWS = 10  # uniform draws per superellipse shape (``_shape_params``)
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
        skin = palette(SKIN_TONES).index_select(
            0, (u[:, 6] * len(SKIN_TONES)).long().clamp(max=len(SKIN_TONES) - 1)
        )
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
        c1.index_copy_(
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


@tensor_cache(1024)
def _identity_assets(seed: int, identity: int, species: str, skin_tones: tuple[int, ...]) -> Assets:
    """Assets of one identity, deterministic in (seed, identity) (cached: identities recur; the
    renderer reads them through ``_identity_assets.shared`` and ``_stack_assets``)."""
    model = head_model(species)
    u = torch.rand(1, IDENTITY_DRAWS, generator=generator(seed, identity, species, "identity"))
    return build_assets(model, identity_from_uniform(model, u, skin_tones))


def _stack_assets(items: list[Assets]) -> Assets:
    """The assets of several heads as one batch; shares no tensor with ``items`` (which may be the
    shared values of the ``_identity_assets`` cache)."""
    if len(items) == 1:
        return copy_tensors(items[0])
    pieces = []
    for parts in zip(*(a.pieces for a in items), strict=True):
        p0 = parts[0]
        pieces.append(
            Piece(
                torch.cat([p.verts for p in parts]),
                torch.cat([p.normals for p in parts]),
                torch.cat([p.rest for p in parts]),
                p0.faces.clone(),
                p0.material.clone(),
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


def _subset_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)
