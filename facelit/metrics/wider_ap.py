"""``WiderFaceAP``: the official WIDER FACE AP (``facelit.metrics.wider_core``) as a torchmetrics
Metric, correct under DDP, for training-time validation on any detection data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facelit.metrics.wider_core import IOU_THRESHOLD, SETTINGS, wider_face_average_precision

__all__ = ["WiderFaceAP"]


class WiderFaceAP(Metric):
    """WIDER FACE easy / medium / hard AP for training-time validation, on any detection data.

    Same core as ``evaluate`` (``wider_face_average_precision``). States are per-image lists
    concatenated across processes (``dist_reduce_fx="cat"``) together with per-image counts, so
    the images keep their boundaries after a DDP gather.

    ``update(preds, targets)``:
        preds: B tensors (P_i, 5) ``x1, y1, x2, y2, score`` (xyxy, pixels).
        targets: B dicts with ``"boxes"`` (N_i, 4) xyxy and ``"difficulty"`` (N_i, 3) bool (kept in
            easy, medium, hard); an optional ``"valid"`` (N_i,) bool selects the real faces of a
            padded row.

    ``compute()`` -> ``{"ap_easy", "ap_medium", "ap_hard"}`` float32 scalar tensors (NaN for a
    setting that keeps no face).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    pred_boxes: list[torch.Tensor]
    pred_counts: list[torch.Tensor]
    gt_boxes: list[torch.Tensor]
    gt_keep: list[torch.Tensor]
    gt_counts: list[torch.Tensor]

    def __init__(self, iou_threshold: float = IOU_THRESHOLD, **kwargs) -> None:
        super().__init__(**kwargs)
        self.iou_threshold = iou_threshold
        for name in ("pred_boxes", "pred_counts", "gt_boxes", "gt_keep", "gt_counts"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} prediction tensors for {len(targets)} targets")
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            if p.ndim != 2 or p.shape[1] != 5:
                raise ValueError(f"preds[{i}]: expected (P, 5) x1, y1, x2, y2, score, got {tuple(p.shape)}")
            for key in ("boxes", "difficulty"):
                if key not in t:
                    raise ValueError(f"targets[{i}] has no {key!r}")
            boxes, difficulty = t["boxes"], t["difficulty"]
            if "valid" in t:
                boxes, difficulty = boxes[t["valid"]], difficulty[t["valid"]]
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"targets[{i}]['boxes']: expected (N, 4) xyxy, got {tuple(boxes.shape)}")
            if difficulty.shape != (boxes.shape[0], len(SETTINGS)) or difficulty.dtype != torch.bool:
                raise ValueError(
                    f"targets[{i}]['difficulty']: expected (N, 3) bool, got {tuple(difficulty.shape)} "
                    f"{difficulty.dtype}"
                )
            self.pred_boxes.append(p.detach().to(self.device, torch.float32))
            self.pred_counts.append(torch.tensor([p.shape[0]], dtype=torch.int64, device=self.device))
            self.gt_boxes.append(boxes.detach().to(self.device, torch.float32))
            # uint8 rather than bool: all_gather supports it on every backend
            self.gt_keep.append(difficulty.to(self.device, torch.uint8))
            self.gt_counts.append(torch.tensor([boxes.shape[0]], dtype=torch.int64, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        def cat(state: list[torch.Tensor] | torch.Tensor, shape: tuple[int, ...], dtype) -> np.ndarray:
            if isinstance(state, list) and not state:
                return np.zeros(shape, dtype=dtype)
            return dim_zero_cat(state).cpu().numpy().astype(dtype).reshape(shape)

        pred = cat(self.pred_boxes, (-1, 5), np.float64)
        gt = cat(self.gt_boxes, (-1, 4), np.float64)
        pred[:, 2:4] -= pred[:, 0:2]  # xyxy -> x, y, w, h as a written file would hold
        gt[:, 2:4] -= gt[:, 0:2]
        aps = wider_face_average_precision(
            pred,
            cat(self.pred_counts, (-1,), np.int64),
            gt,
            cat(self.gt_counts, (-1,), np.int64),
            cat(self.gt_keep, (-1, len(SETTINGS)), bool),
            iou_threshold=self.iou_threshold,
        )
        return {
            f"ap_{name}": torch.tensor(ap, dtype=torch.float32, device=self.device)
            for name, ap in zip(SETTINGS, aps, strict=True)
        }
