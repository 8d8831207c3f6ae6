"""MTCNN multi-task loss with online hard sample mining (Zhang et al. 2016, sections III.B-C).

L = w_det L_det + w_box L_box + w_landmark L_landmark with

- L_det: cross-entropy of face vs background over positives and negatives, of which only the
  ``keep_ratio`` (paper: 70 %) largest per batch are back-propagated (online hard sample mining);
- L_box: squared error of the box-corner offsets, (face - window) / window side, over positives
  and part faces (sum over the 4 values, mean over samples);
- L_landmark: squared error of the 10 landmark coordinates, as fractions of the window, over
  landmark faces (sum over the 10 values, mean over samples).

Weights (det, box, landmark): (1, 0.5, 0.5) for P-Net and R-Net, (1, 0.5, 1) for O-Net
(``STAGE_WEIGHTS``). A term with no sample in the batch contributes 0 (with a graph, for DDP).

Batch: the MTCNN crop samples of ``facelit.datasets.mtcnn_samples`` (``kind``, ``boxes``,
``landmarks``, ``landmarks_valid``, crop side S = ``image.shape[-1]``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelit.datasets.mtcnn_samples import LANDMARK, NEGATIVE, PART, POSITIVE

__all__ = ["STAGE_WEIGHTS", "OHEM_KEEP_RATIO", "ohem_cross_entropy", "encode_targets", "MTCNNLoss"]

STAGE_WEIGHTS = {"pnet": (1.0, 0.5, 0.5), "rnet": (1.0, 0.5, 0.5), "onet": (1.0, 0.5, 1.0)}
OHEM_KEEP_RATIO = 0.7


def ohem_cross_entropy(logits: Tensor, labels: Tensor, keep_ratio: float = OHEM_KEEP_RATIO) -> Tensor:
    """Mean of the ``ceil(keep_ratio * n)`` largest per-sample cross-entropies.

    Args:
        logits: (n, C); labels: (n,) int64; keep_ratio in (0, 1] (1 = plain mean).

    Returns:
        scalar (0 with a graph when n = 0).
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    losses = F.cross_entropy(logits, labels, reduction="none")
    if losses.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, math.ceil(keep_ratio * losses.numel()))
    return losses.topk(k).values.mean()


def encode_targets(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Box offsets (B, 4) and landmark fractions (B, 10; x1..x5 then y1..y5) of a crop batch."""
    size = float(batch["image"].shape[-1])
    window = torch.tensor([0.0, 0.0, size, size], device=batch["boxes"].device)
    offsets = (batch["boxes"] - window) / size
    points = batch["landmarks"] / size  # (B, 5, 2)
    return offsets, points.transpose(1, 2).reshape(-1, 10)


def _flat(x: Tensor) -> Tensor:
    """P-Net maps on one 12x12 window (B, k, 1, 1) -> (B, k)."""
    return x.flatten(1) if x.ndim == 4 else x


class MTCNNLoss(nn.Module):
    """The weighted three-task loss (see the module docstring).

    Args:
        weights: (det, box, landmark) weights.
        keep_ratio: fraction of the classification losses kept by OHEM (1.0 disables OHEM).
    """

    def __init__(
        self, weights: tuple[float, float, float] = STAGE_WEIGHTS["pnet"], keep_ratio: float = OHEM_KEEP_RATIO
    ) -> None:
        super().__init__()
        if len(weights) != 3 or min(weights) < 0:
            raise ValueError(
                f"weights must be three non-negative numbers (det, box, landmark), got {weights}"
            )
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        self.weights = tuple(float(w) for w in weights)
        self.keep_ratio = keep_ratio

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """Loss parts: ``total``, ``det``, ``box``, ``landmark`` (scalars)."""
        kind = batch["kind"]
        logits, boxes = _flat(outputs["logits"]), _flat(outputs["boxes"])
        offsets, points = encode_targets(batch)
        det_mask = (kind == POSITIVE) | (kind == NEGATIVE)
        det = ohem_cross_entropy(logits[det_mask], (kind[det_mask] == POSITIVE).long(), self.keep_ratio)
        box_mask = (kind == POSITIVE) | (kind == PART)
        box = self._l2(boxes[box_mask], offsets[box_mask])
        landmark = boxes.sum() * 0.0
        if "landmarks" in outputs:
            lm_mask = (kind == LANDMARK) & batch["landmarks_valid"]
            landmark = self._l2(_flat(outputs["landmarks"])[lm_mask], points[lm_mask])
        w_det, w_box, w_lm = self.weights
        total = w_det * det + w_box * box + w_lm * landmark
        return {"total": total, "det": det.detach(), "box": box.detach(), "landmark": landmark.detach()}

    @staticmethod
    def _l2(pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape[0] == 0:
            return pred.sum() * 0.0
        return (pred - target).pow(2).sum(dim=1).mean()
