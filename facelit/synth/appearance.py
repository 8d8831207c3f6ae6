"""Random identities (shape, colours, hair) and expressions of synthetic heads.

An identity is drawn from a generator seeded by ``(seed, identity)`` so that every image of that
identity shows the same person (or animal); expressions, poses and lighting come from the sample's
own generator. Colours are RGB in [0, 1] (albedo, before lighting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .head import HeadModel, HeadParams

__all__ = [
    "SKIN_TONES",
    "HAIR_COLOURS",
    "IRIS_COLOURS",
    "palette",
    "Identity",
    "IDENTITY_DRAWS",
    "identity_from_uniform",
    "EXPRESSION_DRAWS",
    "expression_from_uniform",
    "stack_identities",
    "combine",
]

# Palettes as plain numbers (no tensor is built at import time); rows are RGB in [0, 1].
SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.36, 0.23, 0.16),
    (0.48, 0.31, 0.21),
    (0.60, 0.41, 0.29),
    (0.71, 0.51, 0.38),
    (0.80, 0.61, 0.48),
    (0.87, 0.69, 0.57),
    (0.93, 0.78, 0.66),
    (0.96, 0.84, 0.75),
)
HAIR_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.05, 0.04, 0.04),
    (0.16, 0.10, 0.06),
    (0.33, 0.21, 0.12),
    (0.75, 0.61, 0.37),
    (0.52, 0.21, 0.09),
    (0.60, 0.60, 0.60),
    (0.85, 0.84, 0.80),
)
_HAIR_P = (0.3, 0.25, 0.17, 0.1, 0.06, 0.07, 0.05)
IRIS_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.30, 0.17, 0.08),
    (0.14, 0.08, 0.05),
    (0.25, 0.42, 0.62),
    (0.30, 0.45, 0.30),
)
_FUR = {
    "horse": (
        (0.42, 0.22, 0.10),
        (0.56, 0.29, 0.13),
        (0.10, 0.08, 0.07),
        (0.74, 0.72, 0.69),
        (0.80, 0.64, 0.40),
    ),
    "sheep": ((0.86, 0.82, 0.74), (0.80, 0.75, 0.64), (0.14, 0.12, 0.11), (0.55, 0.45, 0.38)),
}
_MANE = {
    "horse": ((0.06, 0.05, 0.04), (0.30, 0.15, 0.07), (0.85, 0.80, 0.65)),
    "sheep": ((0.93, 0.90, 0.82), (0.85, 0.80, 0.68), (0.78, 0.74, 0.66)),
}


def palette(rows: tuple[tuple[float, ...], ...] | tuple[float, ...]) -> torch.Tensor:
    """A palette (``SKIN_TONES``, ``HAIR_COLOURS``, ...) as a fresh float32 tensor, (N, 3) or (N,)."""
    return torch.tensor(rows, dtype=torch.float32)


@dataclass
class Identity:
    """B identities of one species (all tensors have leading dimension B).

    Attributes:
        species: species name.
        params: ``HeadParams`` without expression.
        skin: (B, 3) skin (fur) albedo. hair: (B, 3) hair (mane, wool) albedo.
        iris, lips, brows: (B, 3) feature colours. clothes: (B, 2, 3) two garment colours.
        hair_length: (B,) long-hair sheet length in head units (0 = none).
        beard: (B,) beard density in [0, 1]. blush: (B,) cheek redness. brow_width: (B,) chart units.
        blaze: (B,) white facial stripe (animals) in [0, 1].
    """

    species: str
    params: HeadParams
    skin: torch.Tensor
    hair: torch.Tensor
    iris: torch.Tensor
    lips: torch.Tensor
    brows: torch.Tensor
    clothes: torch.Tensor
    hair_length: torch.Tensor
    beard: torch.Tensor
    blush: torch.Tensor
    brow_width: torch.Tensor
    blaze: torch.Tensor

    @property
    def batch(self) -> int:
        return self.skin.shape[0]


class _Columns:
    """Consumes columns of a (B, D) tensor of uniform draws."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u, self.i = u, 0

    def take(self, k: int = 1) -> torch.Tensor:
        if self.i + k > self.u.shape[1]:
            raise RuntimeError(f"identity draws exhausted ({self.u.shape[1]} columns)")
        out = self.u[:, self.i : self.i + k]
        self.i += k
        return out

    def one(self) -> torch.Tensor:
        return self.take(1)[:, 0]

    def range(self, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * self.one()


def _pick(cols: _Columns, table: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    u = cols.one()
    if probs is None:
        idx = (u * table.shape[0]).long().clamp(max=table.shape[0] - 1)
    else:
        cdf = probs.cumsum(0) / probs.sum()
        idx = torch.searchsorted(cdf, u.contiguous()).clamp(max=table.shape[0] - 1)
    jitter = 1.0 + 0.06 * (cols.take(3) - 0.5)
    return (table.index_select(0, idx) * jitter).clamp(0, 1)


IDENTITY_DRAWS = 64
"""Number of uniform draws per identity consumed by ``identity_from_uniform``."""


def identity_from_uniform(
    model: HeadModel, u: torch.Tensor, skin_tones: tuple[int, ...] = tuple(range(8))
) -> Identity:
    """B identities of ``model.species`` from uniform draws ``u`` (B, IDENTITY_DRAWS) (vectorised)."""
    if u.dim() != 2 or u.shape[1] < IDENTITY_DRAWS:
        raise ValueError(
            f"identity_from_uniform: expected (B, >={IDENTITY_DRAWS}) draws, got {tuple(u.shape)}"
        )
    cols = _Columns(u)
    b = u.shape[0]
    kh = len(model.height_names)
    normal = torch.special.ndtri(cols.take(kh).clamp(1e-4, 1 - 1e-4))
    height = (1.0 + 0.22 * normal).clamp(0.5, 1.6)
    warp = torch.zeros(b, len(model.warp_names))
    identity_warps = {
        "eye_spacing": (-0.06, 0.06),
        "eye_size": (-0.12, 0.2),
        "mouth_width": (-0.12, 0.15),
        "nose_length": (-0.05, 0.08),
        "mouth_height": (-0.04, 0.06),
        "brow_raise": (-0.03, 0.04),
        "muzzle_length": (-0.15, 0.2),
    }
    for name, (lo, hi) in identity_warps.items():
        value = cols.range(lo, hi)
        if name in model.warp_names:
            warp[:, model.warp_names.index(name)] = value
    scale = torch.stack([cols.range(0.9, 1.1), cols.range(0.93, 1.07), cols.range(0.92, 1.08)], 1)
    jaw = cols.range(-0.15, 0.15)
    front, back = model.template.hairline
    bald = cols.one() < (0.08 if model.species == "human" else 0.0)
    hair = torch.stack(
        [
            front + cols.range(-0.12, 0.1) + bald * 0.7,
            back + cols.range(-0.25, 0.15) - bald * 0.3,
            torch.where(bald, torch.zeros(b), cols.range(0.03, 0.22)),
        ],
        1,
    )
    params = HeadParams(height=height, warp=warp, scale=scale, jaw=jaw, hair=hair, ears=cols.range(0.8, 1.25))
    long_hair = (cols.one() < 0.45) & ~bald
    hair_len = cols.range(0.6, 2.4)
    bearded = cols.one() < 0.18
    beard_density = cols.range(0.4, 1.0)
    blaze = (cols.one() < 0.4).float()
    if model.species == "human":
        skin = _pick(cols, palette(SKIN_TONES).index_select(0, torch.tensor(skin_tones)))
        hair_c = _pick(cols, palette(HAIR_COLOURS), palette(_HAIR_P))
        lips = (skin * torch.tensor([0.85, 0.55, 0.55]) + torch.tensor([0.12, 0.0, 0.02])).clamp(0, 1)
        brows = (hair_c * 0.6 + 0.02).clamp(0, 0.45)
        hair_length = torch.where(long_hair, hair_len, torch.zeros(b))
        beard = torch.where(bearded, beard_density, torch.zeros(b))
        blaze = torch.zeros(b)
        iris = _pick(cols, palette(IRIS_COLOURS))
    else:
        skin = _pick(cols, palette(_FUR[model.species]))
        hair_c = _pick(cols, palette(_MANE[model.species]))
        lips = skin * 0.5
        brows = skin * 0.8
        hair_length = torch.zeros(b)
        beard = torch.zeros(b)
        iris = _pick(cols, palette(IRIS_COLOURS)[:2] * 0.5)
    clothes = (cols.take(6) * 0.8 + 0.1).view(b, 2, 3)
    return Identity(
        species=model.species,
        params=params,
        skin=skin,
        hair=hair_c,
        iris=iris,
        lips=lips,
        brows=brows,
        clothes=clothes,
        hair_length=hair_length,
        beard=beard,
        blush=cols.range(0.0, 0.12),
        brow_width=cols.range(0.035, 0.06),
        blaze=blaze,
    )


EXPRESSION_DRAWS = 4


def expression_from_uniform(model: HeadModel, u: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, Kw) expression warps (human mouth opening, smile, brow raise) from draws u (B, 4).

    The warps are multiplied by ``scale`` (0 = neutral); animals have no expression."""
    warp = torch.zeros(u.shape[0], len(model.warp_names))
    if scale <= 0 or model.species != "human":
        return warp
    names = model.warp_names
    warp[:, names.index("mouth_open")] = 0.16 * u[:, 0] * (u[:, 3] < 0.5) * scale
    warp[:, names.index("smile")] = (-0.3 + 1.3 * u[:, 1]) * scale
    warp[:, names.index("brow_raise")] = (-0.03 + 0.11 * u[:, 2]) * scale
    return warp


def stack_identities(items: list[Identity]) -> Identity:
    """Concatenate identities of one species along the batch."""
    if len(items) == 1:
        return items[0]
    p = [it.params for it in items]
    params = HeadParams(
        *(torch.cat([getattr(q, f) for q in p]) for f in ("height", "warp", "scale", "jaw", "hair", "ears"))
    )
    fields = (
        "skin",
        "hair",
        "iris",
        "lips",
        "brows",
        "clothes",
        "hair_length",
        "beard",
        "blush",
        "brow_width",
        "blaze",
    )
    return Identity(items[0].species, params, *(torch.cat([getattr(it, f) for it in items]) for f in fields))


def combine(identity: Identity, expression: torch.Tensor) -> HeadParams:
    """Identity shape plus expression warps."""
    p = identity.params
    return HeadParams(
        height=p.height, warp=p.warp + expression, scale=p.scale, jaw=p.jaw, hair=p.hair, ears=p.ears
    )
