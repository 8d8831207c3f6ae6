"""Square multi-level anchors for single-shot face detectors (RetinaFace).

Convention
----------
Anchors are ``xyxy`` boxes in pixels of the network input, in the pixel-area frame of DESIGN.md
(pixel ``i`` covers ``[i, i + 1)``). The feature cell ``(row i, column j)`` of a level with stride
``s`` covers the pixels ``[j * s, (j + 1) * s) x [i * s, (i + 1) * s)``, so its anchors are centred
at ``((j + 0.5) * s, (i + 0.5) * s)``, the centre of that pixel area (as in the RetinaFace release,
whose normalised centres are ``(j + 0.5) * step / W``). A level has ``ceil(H / s) x ceil(W / s)``
cells, the size a stack of padded stride-2 3x3 convolutions produces for any input size.

Order: level, then row, then column, then size. The detection heads flatten their outputs in the
same order: a (B, n_sizes * k, h, w) head map is permuted to (B, h, w, n_sizes * k) and reshaped to
(B, h * w * n_sizes, k); levels are concatenated from the finest stride to the coarsest.

Each anchor also carries its *scale*: the side length of the square, used to normalise mesh
regression targets (``facelit.geometry.coding.encode_mesh``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "AnchorConfig",
    "AnchorSet",
    "ANCHOR_PRESETS",
    "get_anchor_config",
    "feature_map_size",
    "generate_anchors",
]


class AnchorSet(NamedTuple):
    """Anchors of one input size.

    Attributes:
        boxes: (A, 4) xyxy in pixels.
        scales: (A,) side length of each (square) anchor in pixels.
    """

    boxes: Tensor
    scales: Tensor


@dataclass(frozen=True)
class AnchorConfig:
    """Strides and anchor sizes per pyramid level.

    Attributes:
        strides: stride of each level in pixels, finest first, e.g. (8, 16, 32).
        sizes: per level, the side lengths of its square anchors in pixels.
    """

    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        _validate(self.strides, self.sizes)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def sizes_per_level(self) -> tuple[int, ...]:
        """Number of anchors per feature cell, per level."""
        return tuple(len(s) for s in self.sizes)

    def num_anchors(self, image_size: tuple[int, int]) -> int:
        """Total number of anchors for an input of ``image_size`` (H, W)."""
        return sum(
            math.prod(feature_map_size(image_size, s)) * n
            for s, n in zip(self.strides, self.sizes_per_level, strict=True)
        )


def _validate(strides: Sequence[int], sizes: Sequence[Sequence[float]]) -> None:
    if len(strides) == 0:
        raise ValueError("at least one anchor level is needed")
    if len(strides) != len(sizes):
        raise ValueError(f"{len(strides)} strides but {len(sizes)} size lists; they must match per level")
    if any(int(s) != s or s <= 0 for s in strides):
        raise ValueError(f"strides must be positive integers, got {tuple(strides)}")
    if any(len(level) == 0 or any(v <= 0 for v in level) for level in sizes):
        raise ValueError(f"every level needs at least one positive anchor size, got {sizes}")


def _paper_sizes() -> tuple[tuple[float, ...], ...]:
    # RetinaFace paper: P2..P6, base size 16 * 2^(level - 2), three scales in steps of 2^(1/3).
    return tuple(tuple(16.0 * 2.0**level * 2.0 ** (k / 3.0) for k in range(3)) for level in range(5))


ANCHOR_PRESETS: dict[str, AnchorConfig] = {
    # Deng et al. 2020, sec. 4.2: P2-P6, strides 4..64, 3 scales per level, aspect ratio 1.
    "paper": AnchorConfig(strides=(4, 8, 16, 32, 64), sizes=_paper_sizes()),
    # The widely deployed 3-level configuration (mnet0.25 / resnet50 release configs).
    "mnet": AnchorConfig(strides=(8, 16, 32), sizes=((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))),
}


def get_anchor_config(name: str) -> AnchorConfig:
    """Look an anchor preset up by name; the error lists the known names."""
    try:
        return ANCHOR_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown anchor preset {name!r}; known: {sorted(ANCHOR_PRESETS)}") from None


def feature_map_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(h, w) = (ceil(H / stride), ceil(W / stride)) for an input of ``image_size`` (H, W)."""
    h, w = image_size
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {tuple(image_size)}")
    return -(-int(h) // stride), -(-int(w) // stride)


def generate_anchors(
    image_size: tuple[int, int],
    strides: Sequence[int],
    sizes_per_level: Sequence[Sequence[float]],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> AnchorSet:
    """Square anchors for every cell of every level (pure function, no caching).

    Args:
        image_size: (H, W) of the network input in pixels.
        strides: L level strides, e.g. (8, 16, 32).
        sizes_per_level: L sequences of anchor side lengths in pixels.
        device, dtype: of the returned tensors.

    Returns:
        ``AnchorSet(boxes (A, 4) xyxy, scales (A,))`` ordered level, row, column, size, with
        ``A = sum_l ceil(H / s_l) * ceil(W / s_l) * len(sizes_per_level[l])``.
    """
    _validate(strides, sizes_per_level)
    boxes, scales = [], []
    for stride, sizes in zip(strides, sizes_per_level, strict=True):
        h, w = feature_map_size(image_size, stride)
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
        size = torch.tensor(list(sizes), device=device, dtype=dtype)
        n = size.numel()
        cy = ys.view(h, 1, 1).expand(h, w, n)
        cx = xs.view(1, w, 1).expand(h, w, n)
        half = (size * 0.5).view(1, 1, n).expand(h, w, n)
        boxes.append(torch.stack((cx - half, cy - half, cx + half, cy + half), dim=-1).reshape(-1, 4))
        scales.append(size.view(1, 1, n).expand(h, w, n).reshape(-1))
    return AnchorSet(torch.cat(boxes), torch.cat(scales))
