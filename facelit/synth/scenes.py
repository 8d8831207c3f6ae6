"""Detection-scene samples of the synthetic world (``render_scenes`` / ``render_scene``); see
``facelit.synth.world`` for the contract and the easy/medium/hard attributes.

A batch of scenes is rendered in five steps: per-scene draws and face layouts (``_draw_scenes``),
backgrounds with clutter (``_scene_backgrounds``), the face slots of every scene posed as one batch
of heads (``_face_slots``, ``_pose_and_fit``) with their occluders (``_occluder_soup``), one
rasterisation, then the labels of the labelled faces (``_face_labels``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .appearance import EXPRESSION_DRAWS, IDENTITY_DRAWS, identity_from_uniform
from .background import BACKGROUND_DRAWS, background_noise_size, backgrounds, finish, upscale_canvas
from .compose import (
    _SHAPE_DRAWS,
    _blur_regions,
    _box_of,
    _draw_clutter,
    _Draws,
    _keep_inside,
    _objects_table,
    _pose,
    _pose_and_fit,
    _shape_params,
    _subset_mask,
    _tiles,
    _uncanvas,
)
from .domains import Domain, get_domain
from .head import HeadModel, _scheme_weights, head_model
from .posing import LAYER_SPACING, PosedHeads
from .raster import Fragments
from .render import build_assets, head_soup, point_visibility, render_soup, sample_lights, shape_soup
from .rng import generator
from .soup import Soup

__all__ = ["EASY_MIN_HEIGHT", "MEDIUM_MIN_HEIGHT", "render_scene", "render_scenes"]

EASY_MIN_HEIGHT = 40.0
MEDIUM_MIN_HEIGHT = 20.0
_BLUR_FRACTION = (0.0, 0.012, 0.035)
_OCCLUSION_LEVELS = (0.02, 0.35)
_HIDDEN_DROP = 0.9
_FACE_DRAWS = IDENTITY_DRAWS + 3 + EXPRESSION_DRAWS + 1 + 12 + 3 + 3  # last 3: distractor placement
_DISTRACTORS_MAX = 2
_LAYOUT_DRAWS = 5
_LIGHT_DRAWS = 5
_PLACEMENT_TRIES = 20
_CLUTTER_TILE = 128 * 128  # clutter shapes per image scale with its area in these tiles, over 4


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


@dataclass
class _SceneDraws:
    """Random numbers of B scenes: scene draws (B, D), face slot draws B x (slots, _FACE_DRAWS),
    face layouts B x (N, 3) (``_scene_layout``) and background noise (B, n)."""

    scene: torch.Tensor
    faces: list[torch.Tensor]
    layouts: list[torch.Tensor]
    noise: torch.Tensor


def _draw_scenes(
    seed: int,
    indices: Sequence[int],
    height: int,
    width: int,
    max_faces: int,
    min_face: float,
    max_face_frac: float,
    k_clutter: int,
) -> _SceneDraws:
    """Each scene's draws from its own generator ``(seed, index, "scene")``."""
    n_slots = max_faces + _DISTRACTORS_MAX
    scene_draws = _LAYOUT_DRAWS + _LIGHT_DRAWS + BACKGROUND_DRAWS + 1 + k_clutter * _SHAPE_DRAWS + 3 + 2
    u_scene, u_face, layouts, noise = [], [], [], []
    for i in indices:
        g = generator(seed, int(i), "scene")
        us = torch.rand(scene_draws, generator=g)
        uf = torch.rand(n_slots, _FACE_DRAWS, generator=g)
        sizes_u = torch.rand(n_slots, generator=g).tolist()
        place_u = torch.rand(n_slots, _PLACEMENT_TRIES, 2, generator=g).tolist()
        noise.append(torch.randn(background_noise_size(height, width), generator=g))
        layouts.append(
            _scene_layout(
                us[:_LAYOUT_DRAWS], [sizes_u, place_u], height, width, max_faces, min_face, max_face_frac
            )
        )
        u_scene.append(us)
        u_face.append(uf)
    return _SceneDraws(torch.stack(u_scene), u_face, layouts, torch.stack(noise))


def _scene_backgrounds(
    d: _Draws, noise: torch.Tensor, height: int, width: int, dom: Domain, k_clutter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lights (B, 6) and cluttered backgrounds as one canvas (3, B * H, W) (``upscale_canvas``),
    consuming the scene draws after the layout."""
    b = noise.shape[0]
    lights = sample_lights(d.take(_LIGHT_DRAWS), dom.ambient, dom.diffuse)
    half, grain = backgrounds(d.take(BACKGROUND_DRAWS), noise, height, width, dom)
    n_clutter = (dom.clutter[0] + d.take(1)[:, 0] * (dom.clutter[1] - dom.clutter[0] + 1)) * (
        height * width / _CLUTTER_TILE / 4
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
    return lights, upscale_canvas(half, grain, height, width)


@dataclass
class _FaceSlots:
    """The heads of all scenes as one batch (labelled faces first in each scene, then distractors).

    Attributes:
        draws: (F, _FACE_DRAWS). scene: (F,) scene of each head. layer: (F,) 1, 2, ... per scene.
        labelled: (F,) bool. sizes: (F,) box heights. centres: (F, 2) box centres.
    """

    draws: torch.Tensor
    scene: torch.Tensor
    layer: torch.Tensor
    labelled: torch.Tensor
    sizes: torch.Tensor
    centres: torch.Tensor


def _face_slots(
    draws: _SceneDraws,
    distract_u: torch.Tensor,
    height: int,
    width: int,
    max_faces: int,
    min_face: float,
    dom: Domain,
) -> _FaceSlots | None:
    """The faces of every scene (its layout) plus distractor heads (unlabelled); ``None`` if none."""
    short = min(height, width)
    rows, scene_of, layer, labelled, sizes, centres = [], [], [], [], [], []
    for si, (lay, uf) in enumerate(zip(draws.layouts, draws.faces, strict=True)):
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
        labelled.append(torch.arange(n + nd) < n)
        sizes.append(torch.cat([lay[:, 0], dsize]))
        centres.append(torch.cat([lay[:, 1:], dcentre]))
    if not sum(r.shape[0] for r in rows):
        return None
    return _FaceSlots(
        torch.cat(rows),
        torch.tensor(scene_of),
        torch.cat(layer),
        torch.cat(labelled),
        torch.cat(sizes),
        torch.cat(centres),
    )


def _occluder_soup(
    heads: PosedHeads,
    occ_u: torch.Tensor,
    head_tiles: torch.Tensor,
    lights: torch.Tensor,
    scene: torch.Tensor,
    dom: Domain,
) -> tuple[Soup, torch.Tensor] | None:
    """Shapes in front of part of some labelled faces (occ_u: (F, 12) draws): their soup and object
    table, or ``None`` when no face is occluded."""
    model = heads.model
    occ = _subset_mask(heads.features & (occ_u[:, 0] < dom.occluder_prob))
    if not occ.numel():
        return None
    box = _box_of(heads.xy.index_select(0, occ)[:, model.box_index])
    bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    ou = occ_u.index_select(0, occ)
    centre = torch.stack([box[:, 0] + bw * ou[:, 1], box[:, 1] + bh * (0.3 + 0.8 * ou[:, 2])], 1)
    axes = torch.stack([bw * (0.2 + 0.3 * ou[:, 3]), bh * (0.15 + 0.25 * ou[:, 4])], 1)
    n_occ = occ.numel()
    _, _, angle, power, colour, colour2, tex = _shape_params(
        ou[:, 2:12], torch.ones(2), torch.ones(n_occ), torch.ones(n_occ)
    )
    depth = heads.layer.index_select(0, occ) * LAYER_SPACING + heads.distance.index_select(0, occ) - 4.0
    t_occ = head_tiles.index_select(0, occ)
    soup = shape_soup(centre, axes, angle, power, colour, depth, tex, t_occ, heads.xy.shape[0])
    return soup, _objects_table(lights.index_select(0, scene.index_select(0, occ)), t_occ, colour2)


def _face_labels(
    heads: PosedHeads,
    scene: torch.Tensor,
    tiles: torch.Tensor,
    frag: Fragments,
    obj_map: torch.Tensor,
    blur_u: torch.Tensor,
    images: torch.Tensor,
    dom: Domain,
) -> list[dict[str, torch.Tensor]]:
    """Labels of the labelled faces per scene (``render_scene`` keys but the image); blurs the blurred
    faces of ``images`` (B, 3, H, W) in place. Faces hidden almost entirely are not labelled."""
    model = heads.model
    b, _, height, width = images.shape
    lab = _subset_mask(heads.features)
    sub = heads.subset(lab)
    lab_scene = scene.index_select(0, lab)
    lab_tiles = tiles.index_select(0, lab_scene)
    cam5, xy5, nrm5 = sub.points(_scheme_weights("human", "five_point"))
    vis5, _ = point_visibility(cam5, xy5, nrm5, sub.layer, sub.scale, frag, obj_map, lab, lab_tiles)
    cam68, xy68, nrm68 = sub.points(_scheme_weights("human", "ibug68"))
    _, hidden = point_visibility(cam68, xy68, nrm68, sub.layer, sub.scale, frag, obj_map, lab, lab_tiles)
    frac = hidden.float().mean(1)
    occlusion = (frac >= _OCCLUSION_LEVELS[0]).long() + (frac >= _OCCLUSION_LEVELS[1]).long()
    kept = frac <= _HIDDEN_DROP
    boxes = _box_of(sub.xy[:, model.box_index])
    bh = boxes[:, 3] - boxes[:, 1]
    bu = blur_u.index_select(0, lab)
    level = torch.where(bu[:, 0] < dom.blur_prob, 1 + (bu[:, 1] < 0.5).long(), torch.zeros_like(lab))
    sigma = torch.tensor(_BLUR_FRACTION).index_select(0, level) * bh * (0.8 + 0.45 * bu[:, 2])
    blurred = (sigma > 0.3).nonzero().squeeze(1).tolist()
    if blurred:
        _blur_regions(
            images,
            [(int(lab_scene[i]), boxes[i].tolist(), float(sigma[i])) for i in blurred],
            obj_map.view(b, height, width),
            [int(lab[i]) for i in blurred],
        )
    easy = (bh >= EASY_MIN_HEIGHT) & (level < 2) & (occlusion < 2)
    medium = (bh >= MEDIUM_MIN_HEIGHT) & (occlusion < 2)
    values = dict(
        boxes=boxes,
        landmarks=xy5,
        landmarks_valid=torch.ones_like(kept),
        landmarks_visible=vis5,
        mesh=sub.mesh_labels(),
        mesh_valid=torch.ones_like(kept),
        ignore=torch.zeros_like(kept),
        difficulty=torch.stack([easy, medium | easy, torch.ones_like(easy)], 1),
        blur=level,
        occlusion=occlusion,
        pose=sub.ypr,
    )
    outputs = []
    for si in range(b):
        sel = ((lab_scene == si) & kept).nonzero().squeeze(1)
        outputs.append({k: val.index_select(0, sel) for k, val in values.items()})
    return outputs


def _no_faces(model: HeadModel) -> dict[str, torch.Tensor]:
    """The labels of a scene without faces (``render_scene`` keys but the image)."""
    return dict(
        boxes=torch.zeros(0, 4),
        landmarks=torch.zeros(0, 5, 2),
        landmarks_valid=torch.zeros(0, dtype=torch.bool),
        landmarks_visible=torch.zeros(0, 5, dtype=torch.bool),
        mesh=torch.zeros(0, model.num_vertices, 3),
        mesh_valid=torch.zeros(0, dtype=torch.bool),
        ignore=torch.zeros(0, dtype=torch.bool),
        difficulty=torch.zeros(0, 3, dtype=torch.bool),
        blur=torch.zeros(0, dtype=torch.long),
        occlusion=torch.zeros(0, dtype=torch.long),
        pose=torch.zeros(0, 3),
    )


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
    k_clutter = int(math.ceil(dom.clutter[1] * height * width / _CLUTTER_TILE / 4))
    draws = _draw_scenes(seed, indices, height, width, max_faces, min_face, max_face_frac, k_clutter)
    d = _Draws(draws.scene)
    d.take(_LAYOUT_DRAWS)  # used by the layouts
    lights, canvas = _scene_backgrounds(d, draws.noise, height, width, dom, k_clutter)
    finish_u = d.take(3)
    slots = _face_slots(draws, d.take(2), height, width, max_faces, min_face, dom)
    tiles = _tiles(b, height, width)
    outputs = [_no_faces(model) for _ in range(b)]
    if slots is not None:
        fu = _Draws(slots.draws)
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
            slots.sizes,
            slots.centres,
            slots.layer,
            slots.labelled,
            "height",
            dom.expression,
        )
        _keep_inside(heads, model.box_index, width, height, 1.0)
        head_tiles = tiles.index_select(0, slots.scene)
        parts = [head_soup(heads, head_tiles, 0)]
        objects = [torch.zeros(0, 11), _objects_table(lights.index_select(0, slots.scene), head_tiles)]
        occluders = _occluder_soup(heads, fu.take(12), head_tiles, lights, slots.scene, dom)
        if occluders is not None:
            parts.append(occluders[0])
            objects.append(occluders[1])
        blur_u = fu.take(3)
        frag, obj_map = render_soup(Soup.cat(parts), canvas, torch.cat(objects), heads)
        images = _uncanvas(canvas, b)
        outputs = _face_labels(heads, slots.scene, tiles, frag, obj_map, blur_u, images, dom)
    else:
        images = _uncanvas(canvas, b)
    images = finish(images, finish_u, dom, in_place=True)
    return [{"image": images[si].contiguous(), **outputs[si]} for si in range(b)]


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
