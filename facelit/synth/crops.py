"""Face-crop samples of the synthetic world (``render_crops`` / ``render_crop``); see
``facelit.synth.world`` for the contract."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .appearance import (
    EXPRESSION_DRAWS,
)
from .background import (
    BACKGROUND_DRAWS,
    background_noise_size,
    backgrounds,
    finish,
    gaussian_blur,
    upscale_canvas,
)
from .compose import (
    _CROP_CLUTTER_MAX,
    _OCCLUDER_DEPTH,
    _SHAPE_DRAWS,
    _box_of,
    _check_scheme,
    _draw_clutter,
    _Draws,
    _identity_assets,
    _keep_inside,
    _objects_table,
    _pose,
    _pose_and_fit,
    _shape_params,
    _stack_assets,
    _tiles,
    _uncanvas,
)
from .domains import get_domain
from .head import _scheme_weights, check_species, head_model
from .render import (
    Soup,
    head_soup,
    point_visibility,
    render_soup,
    sample_lights,
    shape_soup,
)
from .rng import generator

CROP_DRAWS = 16 + EXPRESSION_DRAWS + BACKGROUND_DRAWS + _CROP_CLUTTER_MAX * _SHAPE_DRAWS + 20


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
    _check_crop_args(domain, species, scheme, size, num_identities)
    s = int(size)
    if len(indices) == 0:
        return []
    gens = [generator(seed, int(i), "crop") for i in indices]
    u = torch.stack([torch.rand(CROP_DRAWS, generator=g) for g in gens])
    noise = torch.stack([torch.randn(background_noise_size(s, s), generator=g) for g in gens])
    return render_crops_from_draws(seed, u, noise, size, domain, species, scheme, num_identities, mesh)


def _check_crop_args(domain: str, species: str, scheme: str, size: int, num_identities: int) -> None:
    get_domain(domain)
    check_species(species)
    _check_scheme(species, scheme)
    if int(size) < 16:
        raise ValueError(f"render_crop: size must be >= 16, got {size}")
    if int(num_identities) < 1:
        raise ValueError(f"render_crop: num_identities must be >= 1, got {num_identities}")


def render_crops_from_draws(
    seed: int,
    u: torch.Tensor,
    noise: torch.Tensor,
    size: int = 128,
    domain: str = "source",
    species: str = "human",
    scheme: str = "ibug68",
    num_identities: int = 100,
    mesh: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Face-crop samples from explicit random draws (what ``render_crops`` draws per sample).

    Args:
        seed: world seed (identity assets are deterministic in (seed, identity)).
        u: (B, CROP_DRAWS) uniform draws in [0, 1), consumed in column order (identity, pose,
            expression, framing, lights, background, clutter, occluder, blur, finish).
        noise: (B, background_noise_size(size, size)) standard-normal background draws.
        size, domain, species, scheme, num_identities, mesh: as ``render_crop``.
    """
    _check_crop_args(domain, species, scheme, size, num_identities)
    dom = get_domain(domain)
    s, b = int(size), u.shape[0]
    if b == 0:
        return []
    model = head_model(species)
    d = _Draws(u)
    identity = (d.take(1)[:, 0] * num_identities).long().clamp(max=int(num_identities) - 1)
    assets = _stack_assets(
        [_identity_assets.shared(int(seed), k, species, tuple(dom.skin_tones)) for k in identity.tolist()]
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
    canvas = upscale_canvas(half, grain, s, s)

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
    images = finish(images, d.take(3), dom, in_place=True)
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
