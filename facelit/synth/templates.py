"""Species templates of the synthetic heads: layout of the landmarks, head profile and sculpting.

Convention
----------
Templates live in the *chart*: the orthographic frontal view of the mean head, ``(x, y)`` with x
to the image right and y UP, in head units (1 unit ~ half the face width, ~7.5 cm for a human).
The head frame of ``facelit.geometry.pose`` (x right, y down, z towards the back of the head) maps
chart points to ``X = x`` and ``Y = y_centre - y``; the depth comes from the head surface.

The head surface is a lathe-like shape: at latitude ``phi`` (degrees, up positive) it is an ellipse
of half-width ``W(phi)``, front half-depth ``Df(phi)`` and back half-depth ``Db(phi)`` at height
``Y(phi)``, so the point at latitude ``phi`` and longitude ``psi`` (0 = straight ahead, positive
towards +x) is ``(W sin psi, Y, -D cos psi)``. Sculpted features are scalar *height fields*
(displacements along the outward normal) and *warp fields* (displacements in the chart), both given
per species as functions of the template chart position of every vertex; identities and
expressions are linear combinations of them (``facelit.synth.head``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SpeciesTemplate", "TEMPLATES", "HUMAN_HEIGHT_FIELDS", "HUMAN_WARP_FIELDS"]

# A field gets the template chart x, y (V,), the longitude psi and latitude phi (V,) in degrees,
# and returns (V,) heights or (V, 2) chart displacements.
FieldFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SpeciesTemplate:
    """Everything that defines one species' head (see the module docstring).

    Attributes:
        name: species name.
        profile: (n, 5) knots ``phi_deg, Y, W, Df, Db`` of the lathe surface, phi increasing.
        y_centre: chart y of the head origin (the rotation centre).
        landmarks: (K, 2) chart positions of the labelled landmarks (iBUG-68 for humans, the
            five ANIMAL5 points for animals).
        extra: named chart-or-sphere points that become vertices: ``name -> (x, y)`` chart points,
            or ``name -> ("sphere", phi_deg, psi_deg)`` for points on the sides (ears).
        box_points: (J, 2) chart points that, with the landmarks, define the face box.
        grid_step: chart spacing of the regular grid on the front of the head.
        dense_patches: ``(xmin, xmax, ymin, ymax, step)`` chart rectangles with a finer grid.
        sphere_patches: ``(phi_min, phi_max, psi_min, psi_max, step_deg)`` patches on the sides.
        holes: chart polygons (m, 2) with no grid point inside (the mouth slit).
        height_fields: ordered ``name -> fn`` heights (identity multiplier 1 = the template).
        warp_fields: ordered ``name -> fn`` chart displacements (coefficient 0 = the template).
        nose_tip: index into ``landmarks`` of the nose tip (the depth origin of mesh labels).
        hairline: default (front hairline chart y, back hairline head Y) of hair/wool/mane.
        leaves: double-sided flat ears: ``(anchor chart x, y, [(dx, dy, dz), ...])`` outline
            offsets in the head frame relative to the anchor surface point.
    """

    name: str
    profile: np.ndarray
    y_centre: float
    landmarks: np.ndarray
    extra: dict[str, tuple]
    box_points: np.ndarray
    grid_step: float
    dense_patches: tuple[tuple[float, float, float, float, float], ...]
    sphere_patches: tuple[tuple[float, float, float, float, float], ...]
    holes: tuple[np.ndarray, ...]
    height_fields: dict[str, FieldFn]
    warp_fields: dict[str, FieldFn]
    nose_tip: int
    hairline: tuple[float, float]
    leaves: tuple[tuple[float, float, tuple[tuple[float, float, float], ...]], ...] = field(default=())


# ----------------------------------------------------------------------------------------- helpers
def _gauss(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float, power: float = 1.0
) -> np.ndarray:
    r2 = ((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2
    return np.exp(-(r2**power))


def _sym(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Make a field defined for x < 0 symmetric (evaluated at -|x|)."""
    return lambda x, y: fn(-np.abs(x), y)


def _front(psi: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Smooth gate: 1 on the front of the head, 0 from 90 degrees of longitude on."""
    c = np.cos(np.radians(psi)) * np.cos(np.radians(phi))
    return np.clip(c / 0.25, 0.0, 1.0)


def _smoothstep(e0: float, e1: float, t: np.ndarray) -> np.ndarray:
    u = np.clip((t - e0) / (e1 - e0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _dome_profile(y_top: float, w0: float, df0: float, db0: float, y0: float, n: int = 10) -> np.ndarray:
    """Knots of the upper half (phi in (0, 90]) of a squarish dome above the knot at phi = 0."""
    phi = np.linspace(90.0 / n, 90.0, n)
    s, c = np.sin(np.radians(phi)), np.cos(np.radians(phi))
    cq = c**0.6
    return np.stack([phi, y0 + (y_top - y0) * s, w0 * cq, df0 * cq, db0 * cq], 1)


# ------------------------------------------------------------------------------------------ human
def _human_landmarks() -> np.ndarray:
    pts = np.zeros((68, 2))
    alpha = np.pi + np.arange(17) * np.pi / 16
    ca, sa = np.cos(alpha), np.sin(alpha)
    pts[0:17, 0] = 0.97 * np.sign(ca) * np.abs(ca) ** 0.8
    pts[0:17, 1] = 0.15 + 1.43 * np.sign(sa) * np.abs(sa) ** 1.1
    pts[8, 0] = 0.0
    left_brow = [(-0.80, 0.47), (-0.66, 0.55), (-0.50, 0.58), (-0.34, 0.565), (-0.18, 0.525)]
    pts[17:22] = left_brow
    pts[22:27] = [(-x, y) for x, y in reversed(left_brow)]
    pts[27:31] = [(0.0, 0.32), (0.0, 0.16), (0.0, 0.0), (0.0, -0.16)]
    pts[31:36] = [(-0.20, -0.29), (-0.10, -0.325), (0.0, -0.345), (0.10, -0.325), (0.20, -0.29)]
    left_eye = [(-0.68, 0.27), (-0.56, 0.335), (-0.40, 0.335), (-0.26, 0.27), (-0.40, 0.215), (-0.56, 0.215)]
    pts[36:42] = left_eye
    # mirror: 42 <- 39, 43 <- 38, 44 <- 37, 45 <- 36, 46 <- 41, 47 <- 40
    pts[42:48] = [(-left_eye[i][0], left_eye[i][1]) for i in (3, 2, 1, 0, 5, 4)]
    pts[48:60] = [
        (-0.40, -0.66),
        (-0.25, -0.595),
        (-0.09, -0.555),
        (0.0, -0.57),
        (0.09, -0.555),
        (0.25, -0.595),
        (0.40, -0.66),
        (0.26, -0.77),
        (0.12, -0.815),
        (0.0, -0.825),
        (-0.12, -0.815),
        (-0.26, -0.77),
    ]
    pts[60:68] = [
        (-0.34, -0.662),
        (-0.14, -0.645),
        (0.0, -0.648),
        (0.14, -0.645),
        (0.34, -0.662),
        (0.14, -0.68),
        (0.0, -0.683),
        (-0.14, -0.68),
    ]
    return pts


_HUMAN_PROFILE_LOW = np.array(
    [
        # phi,   Y,     W,    Df,   Db
        [-90.0, 1.72, 0.02, 0.02, 0.02],
        [-84.0, 1.70, 0.44, 0.34, 0.48],
        [-72.0, 1.58, 0.46, 0.46, 0.55],
        [-60.0, 1.44, 0.46, 0.72, 0.62],
        [-47.0, 1.16, 0.72, 0.84, 0.75],
        [-32.0, 0.78, 0.93, 0.92, 0.92],
        [-16.0, 0.37, 1.02, 0.98, 1.10],
        [0.0, -0.05, 1.05, 1.00, 1.20],
    ]
)
HUMAN_PROFILE = np.concatenate([_HUMAN_PROFILE_LOW, _dome_profile(-1.55, 1.05, 1.00, 1.20, -0.05)], 0)
HUMAN_Y_CENTRE = 0.17
_H_LM = _human_landmarks()


def _nose(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nose ridge: rises from the bridge to the tip (chart y -0.16), drops to the base (y -0.36)."""
    up = np.clip((0.42 - y) / 0.58, 0.0, 1.0)
    above = 0.05 + 0.31 * up**1.4
    below = 0.36 * np.clip(1.0 - ((-0.16 - y) / 0.21) ** 2, 0.0, 1.0) ** 0.8
    h = np.where(y >= -0.16, above, below)
    h = np.where(y > 0.42, 0.05 * np.exp(-(((y - 0.42) / 0.12) ** 2)), h)
    width = 0.075 + 0.05 * np.clip((0.3 - y) / 0.46, 0.0, 1.0)
    return h * np.exp(-((x / width) ** 2))


def _ears(x: np.ndarray, y: np.ndarray, psi: np.ndarray, phi: np.ndarray) -> np.ndarray:
    r2 = ((np.abs(psi) - 97.0) / 8.0) ** 2 + ((phi + 9.0) / 15.0) ** 2
    return 0.2 * np.exp(-(r2**2))


def _mouth_slit_y(x: np.ndarray) -> np.ndarray:
    """Chart y of the line between the inner lips (closed mouth)."""
    xs = np.abs(x)
    return -0.6655 + (-0.662 + 0.6655) * np.clip(xs / 0.34, 0.0, 1.0) ** 2


def _mouth_open(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Chart displacement when the mouth opens by one unit: the lower lip and jaw move down."""
    below = (y < _mouth_slit_y(x)) & (y > -1.9)
    depth = np.clip((_mouth_slit_y(x) - y) / 0.55, 0.0, 1.0)
    s = _smoothstep(0.0, 1.0, depth)
    lip = np.clip(1.0 - (x / 0.36) ** 2, 0.0, 1.0) ** 0.7
    jaw = 0.85 * np.exp(-((x / 0.75) ** 2))
    m = np.where(below, (1.0 - s) * lip + s * jaw, 0.0)
    return np.stack([np.zeros_like(m), -m], 1)


def _gated(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> FieldFn:
    return lambda x, y, psi, phi: fn(x, y) * _front(psi, phi)


def _gated_warp(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> FieldFn:
    return lambda x, y, psi, phi: fn(x, y) * _front(psi, phi)[:, None]


def _eye_centre(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, -0.47, 0.47)


HUMAN_HEIGHT_FIELDS: dict[str, FieldFn] = {
    "nose": _gated(_nose),
    "alae": _gated(_sym(lambda x, y: 0.07 * _gauss(x, y, -0.165, -0.275, 0.065, 0.055))),
    "brow_ridge": _gated(lambda x, y: 0.05 * _gauss(x, y, 0.0, 0.47, 0.6, 0.09, 1.5)),
    "eye_sockets": _gated(_sym(lambda x, y: -0.10 * _gauss(x, y, -0.47, 0.29, 0.2, 0.13))),
    "eyeballs": _gated(_sym(lambda x, y: 0.055 * _gauss(x, y, -0.47, 0.275, 0.12, 0.07))),
    "cheekbones": _gated(_sym(lambda x, y: 0.06 * _gauss(x, y, -0.62, -0.08, 0.22, 0.18))),
    "cheeks": _gated(_sym(lambda x, y: 0.04 * _gauss(x, y, -0.55, -0.55, 0.22, 0.22))),
    "upper_lip": _gated(lambda x, y: 0.05 * _gauss(x, y, 0.0, -0.60, 0.30, 0.065, 1.5)),
    "lower_lip": _gated(lambda x, y: 0.05 * _gauss(x, y, 0.0, -0.76, 0.26, 0.06, 1.5)),
    "chin": _gated(lambda x, y: 0.06 * _gauss(x, y, 0.0, -1.12, 0.26, 0.15)),
    "labiomental": _gated(lambda x, y: -0.025 * _gauss(x, y, 0.0, -0.92, 0.25, 0.05)),
    "ears": _ears,
}


def _eye_size(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cx = _eye_centre(x)
    g = _gauss(x, y, cx, 0.275, 0.2, 0.13, 2.0)
    return np.stack([(x - cx) * g, (y - 0.275) * g], 1)


HUMAN_WARP_FIELDS: dict[str, FieldFn] = {
    "eye_spacing": _gated_warp(
        lambda x, y: np.stack([np.sign(x) * _gauss(np.abs(x), y, 0.47, 0.35, 0.3, 0.3, 2.0), 0 * x], 1)
    ),
    "eye_size": _gated_warp(_eye_size),
    "mouth_width": _gated_warp(
        lambda x, y: np.stack([x * _gauss(x, y, 0.0, -0.70, 0.5, 0.16, 2.0), 0 * x], 1)
    ),
    "nose_length": _gated_warp(lambda x, y: np.stack([0 * x, -_gauss(x, y, 0.0, -0.24, 0.3, 0.16, 2.0)], 1)),
    "mouth_height": _gated_warp(
        lambda x, y: np.stack([0 * x, -_gauss(x, y, 0.0, -0.70, 0.55, 0.22, 2.0)], 1)
    ),
    "brow_raise": _gated_warp(lambda x, y: np.stack([0 * x, _gauss(x, y, 0.0, 0.545, 0.75, 0.09, 1.5)], 1)),
    "mouth_open": _gated_warp(_mouth_open),
    "smile": _gated_warp(
        lambda x, y: (
            np.stack([np.sign(x) * 0.6, np.ones_like(x)], 1)
            * _gauss(np.abs(x), y, 0.40, -0.66, 0.14, 0.11)[:, None]
        )
    ),
}

_MOUTH_HOLE = np.array(
    [
        (-0.33, -0.6625),
        (-0.14, -0.649),
        (0.0, -0.652),
        (0.14, -0.649),
        (0.33, -0.6625),
        (0.14, -0.676),
        (0.0, -0.679),
        (-0.14, -0.676),
    ]
)

HUMAN = SpeciesTemplate(
    name="human",
    profile=HUMAN_PROFILE,
    y_centre=HUMAN_Y_CENTRE,
    landmarks=_H_LM,
    extra={"left_ear": ("sphere", -22.0, -98.0), "right_ear": ("sphere", -22.0, 98.0)},
    box_points=np.array([(-0.62, 0.98), (0.0, 1.05), (0.62, 0.98)]),
    grid_step=0.075,
    dense_patches=(
        (-0.26, 0.26, -0.40, 0.42, 0.035),
        (-0.75, 0.75, 0.14, 0.42, 0.05),
        (-0.45, 0.45, -0.88, -0.52, 0.045),
    ),
    sphere_patches=((-34.0, 18.0, -116.0, -80.0, 4.0), (-34.0, 18.0, 80.0, 116.0, 4.0)),
    holes=(_MOUTH_HOLE,),
    height_fields=HUMAN_HEIGHT_FIELDS,
    warp_fields=HUMAN_WARP_FIELDS,
    nose_tip=30,
    hairline=(0.95, 0.55),
)


# ---------------------------------------------------------------------------------------- animals
def _animal(
    name: str,
    profile: np.ndarray,
    y_centre: float,
    eye: tuple[float, float],
    nose_y: float,
    mouth: tuple[float, float],
    muzzle: tuple[float, float, float, float],
    hairline: tuple[float, float],
    leaves: tuple,
    grid_step: float,
) -> SpeciesTemplate:
    ex, ey = eye
    mx, my = mouth
    lm = np.array([(-ex, ey), (ex, ey), (0.0, nose_y), (-mx, my), (mx, my)])
    mcx, mcy, msx, msy = muzzle
    heights: dict[str, FieldFn] = {
        "muzzle": _gated(lambda x, y: 0.30 * _gauss(x, y, mcx, mcy, msx, msy, 1.5)),
        "nostrils": _gated(
            _sym(lambda x, y: 0.06 * _gauss(x, y, -0.55 * mx - 0.05, nose_y + 0.05, 0.12, 0.1))
        ),
        "brow": _gated(lambda x, y: 0.08 * _gauss(x, y, 0.0, ey + 0.15, 0.8, 0.2)),
        "eyeballs": _gated(_sym(lambda x, y: 0.10 * _gauss(x, y, -ex, ey, 0.14, 0.11))),
        "jowls": _gated(_sym(lambda x, y: 0.08 * _gauss(x, y, -0.6 * ex, (ey + my) / 2, 0.3, 0.4))),
    }
    warps: dict[str, FieldFn] = {
        "eye_spacing": _gated_warp(
            lambda x, y: np.stack([np.sign(x) * _gauss(np.abs(x), y, ex, ey, 0.3, 0.3, 2), 0 * x], 1)
        ),
        "muzzle_length": _gated_warp(lambda x, y: np.stack([0 * x, -_smoothstep(ey, nose_y, y)], 1)),
        "mouth_width": _gated_warp(lambda x, y: np.stack([x * _gauss(x, y, 0.0, my, 0.5, 0.3, 2), 0 * x], 1)),
    }
    return SpeciesTemplate(
        name=name,
        profile=profile,
        y_centre=y_centre,
        landmarks=lm,
        extra={"left_ear": ("leaf", 0), "right_ear": ("leaf", 1)},
        box_points=np.array([(-ex - 0.1, ey + 0.45), (0.0, ey + 0.55), (ex + 0.1, ey + 0.45)]),
        grid_step=grid_step,
        dense_patches=((-0.7, 0.7, nose_y - 0.5, nose_y + 0.35, grid_step * 0.6),),
        sphere_patches=(),
        holes=(),
        height_fields=heights,
        warp_fields=warps,
        nose_tip=2,
        hairline=hairline,
        leaves=leaves,
    )


_HORSE_PROFILE = np.array(
    [
        [-90.0, 2.55, 0.02, 0.02, 0.02],
        [-80.0, 2.50, 0.40, 0.40, 0.50],
        [-65.0, 2.25, 0.52, 0.62, 0.75],
        [-50.0, 1.80, 0.50, 0.70, 0.95],
        [-32.0, 1.10, 0.55, 0.72, 1.10],
        [-15.0, 0.45, 0.80, 0.75, 1.20],
        [0.0, -0.05, 1.00, 0.80, 1.20],
    ]
)
HORSE = _animal(
    "horse",
    np.concatenate([_HORSE_PROFILE, _dome_profile(-1.15, 1.00, 0.80, 1.20, -0.05)], 0),
    y_centre=0.5,
    eye=(0.88, 0.85),
    nose_y=-1.45,
    mouth=(0.26, -1.85),
    muzzle=(0.0, -1.6, 0.5, 0.35),
    hairline=(1.45, -0.6),
    leaves=(
        (
            -0.45,
            1.45,
            (
                (-0.22, 0.0, 0.05),
                (-0.10, -0.55, 0.05),
                (0.05, -0.80, 0.12),
                (0.12, -0.45, 0.08),
                (0.22, 0.0, 0.05),
            ),
        ),
        (
            0.45,
            1.45,
            (
                (-0.22, 0.0, 0.05),
                (-0.12, -0.45, 0.08),
                (-0.05, -0.80, 0.12),
                (0.10, -0.55, 0.05),
                (0.22, 0.0, 0.05),
            ),
        ),
    ),
    grid_step=0.1,
)

_SHEEP_PROFILE = np.array(
    [
        [-90.0, 2.25, 0.02, 0.02, 0.02],
        [-80.0, 2.20, 0.36, 0.42, 0.50],
        [-65.0, 1.95, 0.45, 0.62, 0.72],
        [-45.0, 1.40, 0.55, 0.75, 0.95],
        [-22.0, 0.60, 0.80, 0.85, 1.10],
        [0.0, -0.05, 1.00, 0.90, 1.15],
    ]
)
SHEEP = _animal(
    "sheep",
    np.concatenate([_SHEEP_PROFILE, _dome_profile(-1.25, 1.00, 0.90, 1.15, -0.05)], 0),
    y_centre=0.2,
    eye=(0.80, 0.50),
    nose_y=-1.4,
    mouth=(0.22, -1.72),
    muzzle=(0.0, -1.5, 0.42, 0.32),
    hairline=(0.85, -0.2),
    leaves=(
        (
            -0.85,
            0.80,
            (
                (0.0, -0.12, 0.1),
                (-0.45, -0.15, 0.12),
                (-0.80, 0.05, 0.15),
                (-0.45, 0.12, 0.12),
                (0.0, 0.12, 0.1),
            ),
        ),
        (
            0.85,
            0.80,
            (
                (0.0, -0.12, 0.1),
                (0.45, -0.15, 0.12),
                (0.80, 0.05, 0.15),
                (0.45, 0.12, 0.12),
                (0.0, 0.12, 0.1),
            ),
        ),
    ),
    grid_step=0.09,
)

TEMPLATES: dict[str, SpeciesTemplate] = {t.name: t for t in (HUMAN, HORSE, SHEEP)}
