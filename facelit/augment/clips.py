"""Geometric augmentation of clips: one flip / rotation / scale / shift per clip, the same for all
of its frames (the landmark recipe of :mod:`facelit.augment.landmarks`, applied frame by frame
with the clip's parameters, so the motion between frames is untouched).

No photometric jitter: drawn per frame it would flicker, which a temporal model would learn to
smooth away; the synthetic clips already change lighting smoothly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facelit.geometry.schemes import LandmarkScheme

from .landmarks import BatchedLandmarkAugment, LandmarkAugmentParams, apply_landmark_augment

__all__ = ["ClipAugment"]

_FRAME_KEYS = ("image", "landmarks", "landmarks_visible", "pose", "boxes")


class ClipAugment(nn.Module):
    """Augment a clip batch (``image`` (B, T, C, H, W), ``landmarks`` (B, T, K, 2), optional
    ``landmarks_visible`` (B, T, K), ``pose`` (B, T, 3), ``boxes`` (B, T, 4)) or one clip sample
    (the same without B) on its device.

    Args:
        scheme, flip_p, rotation, scales, translation: as :class:`BatchedLandmarkAugment`.
    """

    def __init__(
        self,
        scheme: LandmarkScheme | str,
        flip_p: float = 0.5,
        rotation: float = 30.0,
        scales: tuple[float, float] = (0.75, 1.25),
        translation: float = 0.1,
    ) -> None:
        super().__init__()
        self.frames = BatchedLandmarkAugment(scheme, flip_p, rotation, scales, translation, photometric=False)

    def forward(self, clips: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        image = clips.get("image")
        if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5):
            raise ValueError(
                f"'image' must be (B, T, C, H, W) or (T, C, H, W), got {getattr(image, 'shape', image)!r}"
            )
        single = image.dim() == 4
        batch = {k: (v[None] if single and k in _FRAME_KEYS else v) for k, v in clips.items()}
        b, t, _, h, w = batch["image"].shape
        per_clip = self.frames.sample_params(b, (h, w), image.device, generator)
        params = LandmarkAugmentParams(
            *(
                p.repeat_interleave(t, 0)
                for p in (per_clip.angle, per_clip.scale, per_clip.shift, per_clip.flipped)
            )
        )
        flat = {k: batch[k].flatten(0, 1) for k in _FRAME_KEYS if k in batch}
        self.frames._check(flat)
        moved = apply_landmark_augment(flat, params, self.frames.flip_perm, (h, w), self.frames.hide_outside)
        out = dict(batch)
        for key in flat:
            out[key] = moved[key].unflatten(0, (b, t))
        if "frame_mask" in out and "landmarks_visible" in out:
            out["landmarks_visible"] = out["landmarks_visible"] & out["frame_mask"][..., None]
        return {k: (v[0] if single and k in _FRAME_KEYS else v) for k, v in out.items()}
