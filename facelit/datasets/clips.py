"""Clip batches (face alignment in video: RED-Net): samples of T frames, padded and collated.

Clip batch, B clips of T frames (T = the longest clip of the batch), K landmarks; points in the
pixel-area frame of the crops::

    image              (B, T, 3, H, W) float32 in [0, 1]
    landmarks          (B, T, K, 2)    float32 pixels in the crop frame
    landmarks_visible  (B, T, K)       bool    False = occluded / self-occluded / not annotated
    frame_mask         (B, T)          bool    False = padding frame of a clip shorter than T
    occluded           (B, T)          bool    an occluder is over the face (synthetic; False for 300-VW)
    identity           (B,)            int64   one identity per clip (synthetic id; 300-VW clip index)
    category           (B,)            int64   300-VW test category 1-3; 0 for training / synthetic
    frame_index        (B, T)          int64   frame number in the source video (0-based; 0 on padding)
    clip               list[str]               clip names
    pose, boxes        (B, T, 3), (B, T, 4)    optional (synthetic: yaw/pitch/roll degrees; face box)

A clip sample holds the same keys without B (``clip`` a str). Padding frames are zeros (False for
bool keys), so every tensor of a padding frame is harmless, and ``frame_mask`` says which they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.batch import pad_stack
from facelit.geometry.schemes import IBUG68, LandmarkScheme, get_scheme, subset_from_ibug68

__all__ = ["CLIP_KEYS", "PER_FRAME_KEYS", "pad_clip", "collate_clips", "subset_visible", "StillsAsClips"]

CLIP_KEYS = (
    "image",
    "landmarks",
    "landmarks_visible",
    "frame_mask",
    "occluded",
    "identity",
    "category",
    "frame_index",
    "clip",
)
PER_FRAME_KEYS = (
    "image",
    "landmarks",
    "landmarks_visible",
    "frame_mask",
    "occluded",
    "frame_index",
    "pose",
    "boxes",
)
"""Keys whose value has a leading frame dimension T (padded along it)."""


def pad_clip(sample: dict[str, Any], length: int) -> dict[str, Any]:
    """A clip sample padded with zero frames to ``length`` frames (``frame_mask`` False there).

    Raises ``ValueError`` if the clip is longer than ``length``.
    """
    t = int(sample["frame_mask"].shape[0])
    if t > length:
        raise ValueError(f"clip {sample.get('clip', '?')!r} has {t} frames, more than the length {length}")
    out = dict(sample)
    for key in PER_FRAME_KEYS:
        if key in sample:
            out[key] = pad_stack([sample[key]], length)[0]
    return out


def collate_clips(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate clip samples into a clip batch, padding every clip to the longest (frame_mask)."""
    if not samples:
        raise ValueError("collate_clips needs at least one clip")
    t = max(int(s["frame_mask"].shape[0]) for s in samples)
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in PER_FRAME_KEYS:
            batch[key] = pad_stack(values, t)
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = list(values)
    return batch


def subset_visible(visible: torch.Tensor, scheme: LandmarkScheme) -> torch.Tensor:
    """(..., K) visibility of an iBUG-68 subset scheme's points from (..., 68) visibility: a point
    is visible when all the iBUG-68 points it averages are (``subset_from_ibug68`` for positions)."""
    sources = scheme.from_ibug68
    if sources is None or any(src is None for src in sources):
        raise ValueError(f"scheme {scheme.name!r} is not an iBUG-68 subset")
    return torch.stack([visible[..., list(src)].all(-1) for src in sources], -1)  # type: ignore[arg-type]


class StillsAsClips(Dataset):
    """Face-crop samples of a still-image dataset served as one-frame clips (single-frame
    pre-training on photos, e.g. 300W).

    A sample of ``crops`` (``image`` (3, S, S), ``landmarks`` (68, 2), ``landmarks_visible`` (68,))
    becomes a clip sample with T = 1, its points reduced to ``scheme`` (an iBUG-68 subset). Photos
    have no identity label, so the clip has no ``identity`` key (the batch contract omits unknown
    identities rather than using a sentinel); ``category`` is 0 and ``clip`` ``still-<index>``.
    """

    def __init__(self, crops: Dataset, scheme: str = IBUG68.name) -> None:
        self.crops, self.scheme = crops, get_scheme(scheme)
        if self.scheme.name != IBUG68.name:
            subset_from_ibug68(torch.zeros(IBUG68.num_points, 2), self.scheme)  # raises if not a subset

    def __len__(self) -> int:
        return len(self.crops)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        crop = self.crops[index]
        points, visible = crop["landmarks"], crop["landmarks_visible"].bool()
        if self.scheme.name != IBUG68.name:
            points = subset_from_ibug68(points, self.scheme)
            visible = subset_visible(visible, self.scheme)
        return {
            "image": crop["image"][None],
            "landmarks": points[None],
            "landmarks_visible": visible[None],
            "frame_mask": torch.ones(1, dtype=torch.bool),
            "occluded": torch.zeros(1, dtype=torch.bool),
            "frame_index": torch.zeros(1, dtype=torch.long),
            "category": torch.tensor(0),
            "clip": f"still-{index}",
        }
