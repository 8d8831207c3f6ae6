"""Face-crop samples for head-pose datasets (a face box and an angle label, no landmarks)."""

from __future__ import annotations

from typing import Any

import torch

from facelit.datasets.crops import make_crop_sample, square_box

__all__ = ["pose_crop_sample"]


def pose_crop_sample(
    image: torch.Tensor, face: torch.Tensor, pose: torch.Tensor, size: int, margin: float, name: str
) -> dict[str, Any]:
    """Crop the square around ``face`` (side ``max(w, h) * (1 + 2 margin)``) into an (S, S) sample.

    Args:
        image: (3, H, W) float RGB in [0, 1].
        face: (4,) xyxy face box in image pixels.
        pose: (3,) yaw, pitch, roll in degrees.
        size: crop side S.
        margin: fraction of the longer box side added on each side.
        name: file name kept in ``meta["file"]``.

    Returns:
        a face-crop sample of :mod:`facelit.batch` with zero landmarks (K = 0).
    """
    return make_crop_sample(
        image,
        torch.zeros(0, 2),
        torch.zeros(0, dtype=torch.bool),
        square_box(face, margin),
        size,
        pose=pose,
        face_box=face,
        meta={"file": name},
    )
