"""Batch contracts shared by every datamodule and LightningModule.

Batches are plain dicts (they collate, move to devices and pickle for DDP without custom code);
the keys and shapes are fixed here, once. Conventions are those of DESIGN.md section 2: images
float32 RGB in [0, 1]; points (x, y) in pixels of the image tensor with the pixel-area frame
(pixel i covers [i, i + 1)); boxes xyxy in the same frame; angles in degrees ordered
(yaw, pitch, roll); masks are bool tensors, never -1 sentinels.

Face-crop batch (landmarks, head pose, identity, keypoint transfer); the keys it shares with the
detection batch mean the same thing (a crop holds one face, so no M dimension)::

    image      (B, 3, H, W) float32
    landmarks  (B, K, 2)    float32   K = scheme.num_points
    landmarks_visible  (B, K)  bool    point is visible / annotated
    pose       (B, 3)       float32   yaw, pitch, roll in degrees
    boxes      (B, 4)       float32   the face box xyxy (one face per crop)
    identity   (B,)         int64     -1 where unknown is NOT used: datasets without identities omit the key
    meta       list[dict]             optional: file names etc. (not collated into tensors)

Detection batch (RetinaFace and other detectors); M = faces of the most crowded image::

    image              (B, 3, H, W)  float32
    boxes              (B, M, 4)     float32 xyxy
    valid              (B, M)        bool   a real face (False = padding)
    landmarks          (B, M, 5, 2)  float32 five-point scheme
    landmarks_valid    (B, M)        bool   the face has annotated landmarks
    landmarks_visible  (B, M, 5)     bool
    mesh               (B, M, V, 3)  float32 x, y in pixels, z relative to the nose tip in pixels
    mesh_valid         (B, M)        bool   the face has mesh ground truth
    ignore             (B, M)        bool   face counts neither as positive nor negative (WIDER 'invalid')
    difficulty         (B, M, 3)     bool   face is kept in the (easy, medium, hard) evaluation settings
    meta               list[dict]            e.g. {"event": ..., "file": ..., "orig_size": (H, W), "scale": s}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "CROP_KEYS",
    "DETECTION_KEYS",
    "PER_FACE_KEYS",
    "pad_stack",
    "collate_crops",
    "collate_detections",
]

CROP_KEYS = ("image", "landmarks", "landmarks_visible", "pose", "boxes", "identity")
DETECTION_KEYS = (
    "image",
    "boxes",
    "valid",
    "landmarks",
    "landmarks_valid",
    "landmarks_visible",
    "mesh",
    "mesh_valid",
    "ignore",
    "difficulty",
)

# Per-face keys of a detection sample: value shape (N, ...) where N = faces in that image.
PER_FACE_KEYS = DETECTION_KEYS[1:]


def pad_stack(tensors: Sequence[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Stack (N_i, ...) tensors into (B, M, ...) with zero padding, M = max N_i (or ``length``).

    Bool tensors pad with False.
    """
    if not tensors:
        raise ValueError("pad_stack needs at least one tensor")
    m = max(t.shape[0] for t in tensors) if length is None else length
    first = tensors[0]
    out = first.new_zeros((len(tensors), m, *first.shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def collate_crops(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate face-crop samples (dicts of unbatched tensors) into a face-crop batch."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def collate_detections(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate detection samples into a padded detection batch.

    Each sample holds ``image`` (3, H, W) (all of one size) and per-face tensors of leading size N
    (``boxes`` (N, 4), ``landmarks`` (N, 5, 2), ...; ``valid`` may be omitted: it is all True).
    Images with zero faces are legal. M is at least 1 so that shapes never have a zero dimension
    that some kernels reject. Samples without any ``boxes`` (unannotated images for prediction)
    collate to ``image`` and ``meta`` only.
    """
    batch: dict[str, Any] = {"image": torch.stack([s["image"] for s in samples])}
    if not any("boxes" in s for s in samples):  # prediction on unannotated images
        batch["meta"] = [s.get("meta", {}) for s in samples]
        return batch
    m = max(1, max(s["boxes"].shape[0] for s in samples))
    for key in PER_FACE_KEYS:
        if key == "valid":
            values = [s.get("valid", torch.ones(s["boxes"].shape[0], dtype=torch.bool)) for s in samples]
        elif key in samples[0]:
            values = [s[key] for s in samples]
        else:
            continue
        batch[key] = pad_stack(values, m)
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch
