"""Domains of the synthetic world: label distributions (poses) and image style.

``source`` has wide poses (yaw in [-90, 90]) and a warm photographic style; ``target`` has a
narrower pose range (yaw in [-60, 60]) and a different style (cool colour cast, desaturated,
stripy high-contrast backgrounds, harder light), for domain adaptation. ``clean`` has mild poses
and no occluder, blur or noise: rendered features sit exactly where the labels say, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Domain", "DOMAINS", "get_domain"]


@dataclass(frozen=True)
class Domain:
    """Label distribution and style of one domain (all ranges are (low, high), uniform).

    Attributes:
        name: registry name.
        yaw, pitch, roll: pose ranges in degrees (``facelit.geometry.pose`` convention).
        expression: scale of expression parameters (0 = neutral faces).
        skin_tones: indices into the skin palette ``appearance.SKIN_TONES`` that may be drawn.
        colour_gain: per-channel RGB gain applied to the final image.
        saturation: 1 = unchanged, 0 = grey.
        contrast: 1 = unchanged (around mid-grey 0.5).
        ambient, diffuse: lighting ranges (ambient term, directional intensity).
        background: relative weights of background textures ``(smooth noise, stripes, checks)``.
        clutter: range of the number of background shapes (per 128 x 128 pixels).
        noise_std: range of the additive Gaussian noise std.
        blur_prob: probability that a face (scene) or a crop is blurred; ``blur_sigma`` its sigma
            range in pixels at a 100-pixel face (scaled with the face size in scenes).
        occluder_prob: probability of an occluder over a face.
        distractor_rate: face-coloured featureless heads per scene (scenes only).
    """

    name: str
    yaw: tuple[float, float] = (-90.0, 90.0)
    pitch: tuple[float, float] = (-35.0, 35.0)
    roll: tuple[float, float] = (-30.0, 30.0)
    expression: float = 1.0
    skin_tones: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    colour_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    saturation: float = 1.0
    contrast: float = 1.0
    ambient: tuple[float, float] = (0.35, 0.55)
    diffuse: tuple[float, float] = (0.45, 0.75)
    background: tuple[float, float, float] = (0.6, 0.25, 0.15)
    clutter: tuple[int, int] = (2, 6)
    noise_std: tuple[float, float] = (0.0, 0.03)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.8, 3.0)
    occluder_prob: float = 0.25
    distractor_rate: float = 0.5
    extra: dict[str, float] = field(default_factory=dict)


DOMAINS: dict[str, Domain] = {
    "source": Domain(name="source"),
    "target": Domain(
        name="target",
        yaw=(-60.0, 60.0),
        pitch=(-25.0, 25.0),
        roll=(-20.0, 20.0),
        skin_tones=(0, 1, 2, 3, 4, 5, 6, 7),
        colour_gain=(0.82, 0.95, 1.18),
        saturation=0.55,
        contrast=1.25,
        ambient=(0.2, 0.35),
        diffuse=(0.7, 1.0),
        background=(0.15, 0.6, 0.25),
        clutter=(4, 9),
        noise_std=(0.01, 0.05),
        blur_prob=0.3,
        occluder_prob=0.3,
    ),
    "clean": Domain(
        name="clean",
        yaw=(-30.0, 30.0),
        pitch=(-15.0, 15.0),
        roll=(-10.0, 10.0),
        expression=0.5,
        ambient=(0.45, 0.55),
        diffuse=(0.45, 0.55),
        background=(1.0, 0.0, 0.0),
        clutter=(0, 2),
        noise_std=(0.0, 0.0),
        blur_prob=0.0,
        occluder_prob=0.0,
        distractor_rate=0.0,
    ),
}


def get_domain(domain: str | Domain) -> Domain:
    """A ``Domain`` by name (or itself); ``ValueError`` listing the known names otherwise."""
    if isinstance(domain, Domain):
        return domain
    try:
        return DOMAINS[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; known: {list(DOMAINS)}") from None
