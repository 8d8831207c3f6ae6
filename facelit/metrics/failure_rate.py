"""Keypoint failure rate (Rashid et al. 2017): a keypoint fails when its error exceeds a fraction
(10 %) of the face-crop side.

Convention
----------
Prediction and ground truth are (x, y) pixels of the same image. ``face_size`` is the side of the
face crop in those pixels (the whole image for pre-cropped faces; ``max(H, W)`` for non-square
crops). Only visible ground-truth keypoints count. Two summaries are reported:

* ``fr_avg``: failures / visible keypoints, pooled over all keypoints ("average over visible
  keypoints");
* ``fr_<name>``: the failure rate of each keypoint over the samples where it is visible
  (NaN when it is never visible); ``fr_mean_kp`` is their mean (the per-keypoint table average).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["FAILURE_THRESHOLD", "keypoint_failures", "KeypointFailureRate"]

FAILURE_THRESHOLD = 0.1


def keypoint_failures(
    pred: torch.Tensor,
    target: torch.Tensor,
    face_size: torch.Tensor | float,
    threshold: float = FAILURE_THRESHOLD,
) -> torch.Tensor:
    """(B, K) bool: error of each keypoint > ``threshold * face_size``.

    Args:
        pred, target: (B, K, 2) pixels.
        face_size: (B,) face-crop sides in pixels, or one float for all.
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"expected (B, K, 2) prediction and target, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    size = torch.as_tensor(face_size, dtype=pred.dtype, device=pred.device).expand(pred.shape[0])
    if bool((size <= 0).any()):
        raise ValueError(f"face sizes must be positive, got {size.tolist()}")
    error = torch.linalg.vector_norm(pred - target, dim=-1)
    return error > threshold * size[:, None]


class KeypointFailureRate(Metric):
    """Accumulates keypoint failures over batches (DDP-safe sums).

    Args:
        point_names: K keypoint names (keys ``fr_<name>``).
        threshold: failure threshold as a fraction of the face-crop side.
    """

    full_state_update = False

    def __init__(self, point_names: Sequence[str], threshold: float = FAILURE_THRESHOLD) -> None:
        super().__init__()
        if not 0 < threshold:
            raise ValueError(f"threshold must be positive, got {threshold}")
        self.point_names = tuple(point_names)
        self.threshold = float(threshold)
        k = len(self.point_names)
        self.add_state("failures", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("visible", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor, face_size: torch.Tensor | float
    ) -> None:
        """``pred``/``target`` (B, K, 2) pixels, ``visible`` (B, K) bool, ``face_size`` (B,) or float."""
        if visible.shape != pred.shape[:2] or visible.dtype != torch.bool:
            raise ValueError(
                f"visible must be a {tuple(pred.shape[:2])} bool tensor, got "
                f"{tuple(visible.shape)} {visible.dtype}"
            )
        fails = keypoint_failures(pred.detach().float(), target.float(), face_size, self.threshold) & visible
        self.failures = self.failures + fails.sum(0).to(self.failures)
        self.visible = self.visible + visible.sum(0).to(self.visible)

    def compute(self) -> dict[str, torch.Tensor]:
        per_point = self.failures / self.visible  # NaN where never visible
        out = {
            "fr_avg": self.failures.sum() / self.visible.sum().clamp(min=1),
            "fr_mean_kp": per_point.nanmean(),
        }
        out.update({f"fr_{name}": per_point[i] for i, name in enumerate(self.point_names)})
        return {k: v.float() for k, v in out.items()}
