"""Synthetic video clips: one identity per clip, smooth pose, expression, framing and lighting
trajectories, occluders that pass over the face, exact landmarks and visibility per frame.

Every frame is a face crop of the crop renderer (``crops.render_crops_from_draws``): a clip fixes
the draws that make the scene (identity, background, clutter, occluder shape, blur, noise level)
and moves the others smoothly over time. A trajectory is a uniform cubic B-spline through knots
``knot_spacing`` frames apart; the knots are a random walk in the [0, 1] draw space (reflected at
the ends, steps uniform in +-``step``) that the renderer maps linearly onto the domain's ranges, so
a clip of :data:`VIDEO_DOMAIN` turns its head by up to +-75 degrees of yaw. The B-spline stays in
the convex hull of its knots, so every frame is a legal draw.

An occluder passes over the face in a clip with probability ``domain.occluder_prob``: it is
present during one interval of frames (``occluded`` (T,) is True there) and sweeps across the
face box. The sensor noise changes every frame; the background (a static camera) does not.

Clip samples (``render_clips``), T = ``length`` frames, K = scheme points, S = ``size``::

    image              (T, 3, S, S) float32 in [0, 1]
    landmarks          (T, K, 2)    float32 pixels (pixel-area frame)
    landmarks_visible  (T, K)       bool
    pose               (T, 3)       float32 yaw, pitch, roll in degrees
    boxes              (T, 4)       float32 face box xyxy
    occluded           (T,)         bool    an occluder is over the face in this frame
    frame_mask         (T,)         bool    all True (synthetic clips are never padded)
    frame_index        (T,)         int64   0 .. T-1
    identity           ()           int64   in [0, num_identities)
    category           ()           int64   0 (300-VW test categories are 1-3)
    clip               str          ``synth-<seed>-<index>``

Deterministic in (seed, index): the clip's draws come from its own generator
``(seed, index, "video")``; several clips render together as one batch of crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.datasets.clips import subset_visible
from facelit.geometry.schemes import get_scheme, subset_from_ibug68

from .appearance import EXPRESSION_DRAWS
from .background import BACKGROUND_DRAWS, background_noise_size
from .compose import _CROP_CLUTTER_MAX, _SHAPE_DRAWS, _check_scheme
from .crops import CROP_DRAWS, render_crops_from_draws
from .domains import Domain, get_domain
from .rng import generator

__all__ = [
    "VIDEO_DOMAIN",
    "ClipMotion",
    "DEFAULT_MOTION",
    "smooth_paths",
    "render_clips",
    "render_clip",
    "SyntheticClipDataset",
]

VIDEO_DOMAIN = Domain(
    name="video",
    yaw=(-75.0, 75.0),
    pitch=(-30.0, 30.0),
    roll=(-30.0, 30.0),
    occluder_prob=0.5,
    blur_prob=0.1,
)
"""The ``source`` photographic style with video-like poses and an occluder in half of the clips."""


@dataclass(frozen=True)
class ClipMotion:
    """How fast the trajectories of a clip move.

    Attributes:
        knot_spacing: frames between B-spline knots (larger = slower, smoother motion).
        pose_step, expression_step, framing_step, light_step: largest knot-to-knot change of the
            pose, expression, framing (distance, size, position) and lighting draws, as a fraction of
            their range (pose_step 0.35 on VIDEO_DOMAIN: up to 52 degrees of yaw per knot).
        min_occlusion: shortest occluder passage, as a fraction of the clip length.
    """

    knot_spacing: int = 8
    pose_step: float = 0.35
    expression_step: float = 0.5
    framing_step: float = 0.15
    light_step: float = 0.25
    min_occlusion: float = 0.3

    def __post_init__(self) -> None:
        if self.knot_spacing < 1:
            raise ValueError(f"ClipMotion.knot_spacing must be >= 1, got {self.knot_spacing}")
        if not 0.0 < self.min_occlusion <= 1.0:
            raise ValueError(f"ClipMotion.min_occlusion must be in (0, 1], got {self.min_occlusion}")


DEFAULT_MOTION = ClipMotion()

# Columns of the crop renderer's draws (``render_crops_from_draws`` consumes them in this order).
_IDENTITY = 0
_POSE = slice(1, 4)
_EXPR = 4  # EXPRESSION_DRAWS columns; the last one gates the mouth opening (kept per clip)
_FRAMING = slice(_EXPR + EXPRESSION_DRAWS, _EXPR + EXPRESSION_DRAWS + 4)  # distance, size, shift x, y
_LIGHTS = slice(_FRAMING.stop, _FRAMING.stop + 5)
_OCCLUDER = _LIGHTS.stop + BACKGROUND_DRAWS + 1 + _CROP_CLUTTER_MAX * _SHAPE_DRAWS  # flag, x, y, shape
_FINISH = _OCCLUDER + 12 + 2  # noise level, noise tile offset y, x
_NOT_OCCLUDED = 1.0  # an occluder flag draw >= every occluder_prob: no occluder in this frame
_FRAME_CHUNK = 64  # frames rendered per call of the crop renderer


def _bspline_basis(tau: torch.Tensor) -> torch.Tensor:
    """Uniform cubic B-spline weights (N, 4) at local positions tau (N,) in [0, 1)."""
    t2, t3 = tau * tau, tau * tau * tau
    return torch.stack([(1 - tau) ** 3, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * tau + 1, t3], 1) / 6.0


def _reflect(x: torch.Tensor) -> torch.Tensor:
    """Fold values into [0, 1] by reflection at 0 and 1."""
    x = torch.remainder(x, 2.0)
    return torch.where(x > 1.0, 2.0 - x, x)


def smooth_paths(g: torch.Generator, n: int, length: int, knot_spacing: int, step: float) -> torch.Tensor:
    """n smooth trajectories in [0, 1] over ``length`` frames, drawn from ``g``.

    Knots ``knot_spacing`` frames apart follow a reflected random walk (start uniform in [0, 1],
    steps uniform in [-step, step]); frames are the uniform cubic B-spline of the knots.

    Returns:
        (length, n) values in [0, 1].
    """
    knots_needed = (max(length, 1) - 1) // knot_spacing + 4
    u = torch.rand(knots_needed, n, generator=g)
    walk = u[0:1] + torch.cumsum((2 * u[1:] - 1) * step, 0)
    knots = _reflect(torch.cat([u[0:1], walk]))
    pos = torch.arange(length, dtype=torch.float32) / knot_spacing
    seg = pos.floor().long()
    w = _bspline_basis(pos - seg)  # (T, 4)
    idx = seg[:, None] + torch.arange(4)  # (T, 4)
    return (w[:, :, None] * knots[idx]).sum(1).clamp(0.0, 1.0)


def _clip_draws(
    seed: int, index: int, length: int, size: int, domain: Domain, motion: ClipMotion
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame crop draws (T, CROP_DRAWS), the static background noise (N,) and occluded (T,)."""
    g = generator(seed, int(index), "video")
    base = torch.rand(CROP_DRAWS, generator=g)
    noise = torch.randn(background_noise_size(size, size), generator=g)
    u = base.expand(length, -1).clone()
    k = motion.knot_spacing
    u[:, _POSE] = smooth_paths(g, 3, length, k, motion.pose_step)
    u[:, _EXPR : _EXPR + EXPRESSION_DRAWS - 1] = smooth_paths(
        g, EXPRESSION_DRAWS - 1, length, k, motion.expression_step
    )
    u[:, _FRAMING] = smooth_paths(g, 4, length, k, motion.framing_step)
    u[:, _LIGHTS] = smooth_paths(g, 5, length, 2 * k, motion.light_step)
    u[:, _FINISH + 1 : _FINISH + 3] = torch.rand(length, 2, generator=g)  # sensor noise per frame
    occ = torch.rand(5, generator=g)
    occluded = torch.zeros(length, dtype=torch.bool)
    if float(occ[0]) < domain.occluder_prob:
        span = max(1, round(length * (motion.min_occlusion + (1 - motion.min_occlusion) * float(occ[1]))))
        start = int(float(occ[2]) * (length - span + 1))
        occluded[start : start + span] = True
        # the occluder sweeps across the face box, one way or the other
        sweep = torch.linspace(0.0, 1.0, span) if span > 1 else torch.full((1,), 0.5)
        u[start : start + span, _OCCLUDER + 1] = sweep if float(occ[3]) < 0.5 else 1.0 - sweep
    u[:, _OCCLUDER] = torch.where(occluded, torch.zeros(length), torch.full((length,), _NOT_OCCLUDED))
    return u, noise, occluded


def _renderer_scheme(species_scheme: str) -> str:
    """The scheme the crop renderer draws for ``species_scheme`` (iBUG-68 for subsets it lacks)."""
    try:
        _check_scheme("human", species_scheme)
        return species_scheme
    except ValueError:
        pass
    try:
        sources = get_scheme(species_scheme).from_ibug68
    except KeyError as err:
        raise ValueError(str(err)) from None
    if sources is None or any(src is None for src in sources):
        raise ValueError(f"scheme {species_scheme!r} is not an iBUG-68 subset: no synthetic human clips")
    return "ibug68"


def render_clips(
    seed: int,
    indices: Sequence[int],
    length: int = 16,
    size: int = 128,
    domain: str | Domain = VIDEO_DOMAIN,
    scheme: str = "ibug68",
    num_identities: int = 100,
    motion: ClipMotion = DEFAULT_MOTION,
) -> list[dict[str, Any]]:
    """Clip samples ``render_clip(seed, i, ...)`` for every i of ``indices``, rendered together.

    Args:
        seed: world seed. indices: clip indices.
        length: frames per clip T (>= 1). size: crop side S.
        domain: pose ranges and style (``VIDEO_DOMAIN`` or a registered name); its
            ``occluder_prob`` is the share of clips with an occluder passage.
        scheme: landmark scheme; schemes the renderer lacks (``rednet7``) are iBUG-68 subsets.
        num_identities: identities drawn from.
        motion: trajectory speeds.
    """
    if int(length) < 1:
        raise ValueError(f"render_clips: length must be >= 1, got {length}")
    dom = get_domain(domain)
    drawn = _renderer_scheme(scheme)
    target = get_scheme(scheme)
    t, s = int(length), int(size)
    draws = [_clip_draws(seed, int(i), t, s, dom, motion) for i in indices]
    if not draws:
        return []
    u = torch.cat([d[0] for d in draws])
    noise = torch.stack([d[1] for d in draws]).repeat_interleave(t, 0)
    frames: list[dict[str, torch.Tensor]] = []
    for k in range(0, u.shape[0], _FRAME_CHUNK):
        frames.extend(
            render_crops_from_draws(
                seed,
                u[k : k + _FRAME_CHUNK],
                noise[k : k + _FRAME_CHUNK],
                s,
                dom,
                "human",
                drawn,
                num_identities,
            )
        )
    out = []
    for c, i in enumerate(indices):
        clip = frames[c * t : (c + 1) * t]
        points = torch.stack([f["landmarks"] for f in clip])
        visible = torch.stack([f["landmarks_visible"] for f in clip])
        if drawn != target.name:
            points = subset_from_ibug68(points, target)
            visible = subset_visible(visible, target)
        out.append(
            {
                "image": torch.stack([f["image"] for f in clip]),
                "landmarks": points,
                "landmarks_visible": visible,
                "pose": torch.stack([f["pose"] for f in clip]),
                "boxes": torch.stack([f["boxes"] for f in clip]),
                "occluded": draws[c][2],
                "frame_mask": torch.ones(t, dtype=torch.bool),
                "frame_index": torch.arange(t),
                "identity": clip[0]["identity"],
                "category": torch.tensor(0),
                "clip": f"synth-{int(seed)}-{int(i)}",
            }
        )
    return out


def render_clip(
    seed: int,
    index: int,
    length: int = 16,
    size: int = 128,
    domain: str | Domain = VIDEO_DOMAIN,
    scheme: str = "ibug68",
    num_identities: int = 100,
    motion: ClipMotion = DEFAULT_MOTION,
) -> dict[str, Any]:
    """One clip sample (keys and shapes in the module docstring)."""
    return render_clips(seed, [index], length, size, domain, scheme, num_identities, motion)[0]


class SyntheticClipDataset(Dataset):
    """Synthetic clips ``render_clip(seed, i, ...)``, i in [0, length); ``__getitems__`` renders a
    whole batch of clips together (what the DataLoader and ``CachedDataset`` use).

    Args:
        seed, domain, scheme, num_identities, motion: as :func:`render_clips`.
        length: number of clips. clip_length: frames per clip T. size: crop side S.
    """

    def __init__(
        self,
        seed: int = 0,
        length: int = 200,
        clip_length: int = 16,
        size: int = 128,
        domain: str | Domain = VIDEO_DOMAIN,
        scheme: str = "ibug68",
        num_identities: int = 100,
        motion: ClipMotion = DEFAULT_MOTION,
    ) -> None:
        if int(length) < 0 or int(clip_length) < 1:
            raise ValueError(f"need length >= 0 and clip_length >= 1, got {length}, {clip_length}")
        get_domain(domain)
        _renderer_scheme(scheme)
        self.seed, self.length, self.clip_length, self.size = (
            int(seed),
            int(length),
            int(clip_length),
            int(size),
        )
        self.domain, self.scheme, self.num_identities, self.motion = (
            domain,
            scheme,
            int(num_identities),
            motion,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        bad = [i for i in indices if not 0 <= int(i) < self.length]
        if bad:
            raise IndexError(f"clip index {bad[0]} out of range for a dataset of {self.length} clips")
        return render_clips(
            self.seed,
            [int(i) for i in indices],
            self.clip_length,
            self.size,
            self.domain,
            self.scheme,
            self.num_identities,
            self.motion,
        )
