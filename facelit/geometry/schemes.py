"""Named landmark schemes: point names, left/right flip permutations and subsets of iBUG-68.

Convention
----------
"left"/"right" in point names are **image sides of a frontal face** (the viewer's left), so the
iBUG-68 points 36-41 (the subject's right eye, seen on the image left) are the "left eye" here,
and the 5-point scheme's first point is the eye centre on the image left, as in the RetinaFace
release. A horizontal flip maps point ``i`` to ``flip_perm[i]``: after flipping an image with
``x' = W - x``, the new landmark array is ``flipped[:, scheme.flip_perm]``.

Each derived scheme states, per point, which iBUG-68 indices it averages (``from_ibug68``). Points
that iBUG-68 does not contain (the AFLW-21 ear lobes) are ``None`` there; the synthetic head
provides them as extra named 3D points (``facelit.synth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "LandmarkScheme",
    "IBUG68",
    "FIVE_POINT",
    "AFLW21",
    "AFLW19",
    "ANIMAL5",
    "REDNET7",
    "SCHEMES",
    "get_scheme",
    "subset_from_ibug68",
]


@dataclass(frozen=True)
class LandmarkScheme:
    """A named set of K landmarks.

    Attributes:
        name: registry name, e.g. ``"ibug68"``.
        point_names: K point names.
        flip_perm: K indices; ``flip_perm[i]`` is the point that ``i`` becomes after a horizontal flip.
        from_ibug68: per point, the iBUG-68 indices whose mean defines it, or ``None`` when the point
            is not part of iBUG-68 (e.g. ears). ``None`` for the whole field on iBUG-68 itself.
    """

    name: str
    point_names: tuple[str, ...]
    flip_perm: tuple[int, ...]
    from_ibug68: tuple[tuple[int, ...] | None, ...] | None = None

    def __post_init__(self) -> None:
        k = len(self.point_names)
        if sorted(self.flip_perm) != list(range(k)):
            raise ValueError(f"{self.name}: flip_perm is not a permutation of range({k})")
        if any(self.flip_perm[j] != i for i, j in enumerate(self.flip_perm)):
            raise ValueError(f"{self.name}: flip_perm must be an involution")
        if self.from_ibug68 is not None and len(self.from_ibug68) != k:
            raise ValueError(f"{self.name}: from_ibug68 has {len(self.from_ibug68)} entries, expected {k}")

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    def index(self, point_name: str) -> int:
        """Index of a point by name; raises ``KeyError`` naming the scheme."""
        try:
            return self.point_names.index(point_name)
        except ValueError:
            raise KeyError(f"scheme {self.name!r} has no point {point_name!r}") from None

    def flip_tensor(self, device: torch.device | None = None) -> torch.Tensor:
        """The flip permutation as a (K,) long tensor."""
        return torch.tensor(self.flip_perm, dtype=torch.long, device=device)


def _pairs_to_perm(k: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(k))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _ibug68() -> LandmarkScheme:
    names = (
        [f"jaw_{i}" for i in range(17)]
        + [f"left_brow_{i}" for i in range(5)]
        + [f"right_brow_{i}" for i in range(5)]
        + [f"nose_bridge_{i}" for i in range(4)]
        + [f"nose_lower_{i}" for i in range(5)]
        + [f"left_eye_{i}" for i in range(6)]
        + [f"right_eye_{i}" for i in range(6)]
        + [f"mouth_outer_{i}" for i in range(12)]
        + [f"mouth_inner_{i}" for i in range(8)]
    )
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    return LandmarkScheme("ibug68", tuple(names), _pairs_to_perm(68, pairs), None)


IBUG68 = _ibug68()

LEFT_EYE_68 = tuple(range(36, 42))
RIGHT_EYE_68 = tuple(range(42, 48))

FIVE_POINT = LandmarkScheme(
    "five_point",
    ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"),
    (1, 0, 2, 4, 3),
    (LEFT_EYE_68, RIGHT_EYE_68, (30,), (48,), (54,)),
)

AFLW21 = LandmarkScheme(
    "aflw21",
    (
        "left_brow_left",
        "left_brow_center",
        "left_brow_right",
        "right_brow_left",
        "right_brow_center",
        "right_brow_right",
        "left_eye_left",
        "left_eye_center",
        "left_eye_right",
        "right_eye_left",
        "right_eye_center",
        "right_eye_right",
        "left_ear",
        "nose_left",
        "nose_center",
        "nose_right",
        "right_ear",
        "mouth_left",
        "mouth_center",
        "mouth_right",
        "chin_center",
    ),
    _pairs_to_perm(21, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15), (17, 19)]),
    (
        (17,), (19,), (21,), (22,), (24,), (26,),
        (36,), LEFT_EYE_68, (39,), (42,), RIGHT_EYE_68, (45,),
        None, (31,), (30,), (35,), None,
        (48,), (51, 57), (54,), (8,),
    ),
)

_AFLW19_FROM_21 = tuple(i for i in range(21) if i not in (12, 16))

AFLW19 = LandmarkScheme(
    "aflw19",
    tuple(AFLW21.point_names[i] for i in _AFLW19_FROM_21),
    _pairs_to_perm(19, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)]),
    tuple(AFLW21.from_ibug68[i] for i in _AFLW19_FROM_21),  # type: ignore[index]
)

ANIMAL5 = LandmarkScheme(
    "animal5",
    ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"),
    (1, 0, 2, 4, 3),
    None,
)

# The 7 points of the RED-Net demo (Peng et al., ECCV 2016): eye corners, nose tip, mouth corners.
REDNET7 = LandmarkScheme(
    "rednet7",
    ("left_eye_left", "left_eye_right", "right_eye_left", "right_eye_right", "nose_tip", "mouth_left",
     "mouth_right"),
    _pairs_to_perm(7, [(0, 3), (1, 2), (5, 6)]),
    ((36,), (39,), (42,), (45,), (30,), (48,), (54,)),
)

SCHEMES: dict[str, LandmarkScheme] = {
    s.name: s for s in (IBUG68, FIVE_POINT, AFLW21, AFLW19, ANIMAL5, REDNET7)
}


def get_scheme(name: str) -> LandmarkScheme:
    """Look a scheme up by name; the error lists the known names."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None


def subset_from_ibug68(points: torch.Tensor, scheme: LandmarkScheme) -> torch.Tensor:
    """Derive ``scheme`` points from iBUG-68 points by averaging the listed indices.

    Args:
        points: (..., 68, D) iBUG-68 points (D = 2 or 3).
        scheme: a scheme whose ``from_ibug68`` has no ``None`` entry.

    Returns:
        (..., K, D) points of ``scheme``.
    """
    if points.shape[-2] != 68:
        raise ValueError(f"expected (..., 68, D) iBUG-68 points, got shape {tuple(points.shape)}")
    if scheme.from_ibug68 is None:
        if scheme.name == IBUG68.name:
            return points
        raise ValueError(f"scheme {scheme.name!r} is not defined from iBUG-68")
    missing = [scheme.point_names[i] for i, src in enumerate(scheme.from_ibug68) if src is None]
    if missing:
        raise ValueError(f"scheme {scheme.name!r} points {missing} are not part of iBUG-68")
    weights = torch.zeros(scheme.num_points, 68, dtype=points.dtype, device=points.device)
    for i, src in enumerate(scheme.from_ibug68):
        weights[i, list(src)] = 1.0 / len(src)  # type: ignore[arg-type]
    return torch.einsum("kn,...nd->...kd", weights, points)
