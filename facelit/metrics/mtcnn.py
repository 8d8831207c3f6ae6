"""Cascade-level figures of an MTCNN on annotated images: WIDER-protocol AP of the final
detections, and per stage the recall of the surviving boxes and the candidates kept per image.

Recall of a stage: the fraction of (non-ignored) faces that some box surviving that stage overlaps
with IoU >= ``iou`` (0.5); a face lost by P-Net cannot come back, so recall never rises along the
cascade, while the candidates kept fall by orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from facelit.geometry.boxes import box_iou
from facelit.metrics.widerface import WiderFaceAP
from facelit.nets.mtcnn_cascade import CascadeSettings, detect_faces

__all__ = ["RECALL_IOU", "evaluate_cascade"]

RECALL_IOU = 0.5


@torch.no_grad()
def evaluate_cascade(
    nets: tuple[nn.Module, nn.Module | None, nn.Module | None],
    samples: Iterable[dict[str, Any]],
    settings: CascadeSettings | None = None,
    iou: float = RECALL_IOU,
) -> dict[str, float]:
    """Run the cascade over detection ``samples`` (``image`` (3, H, W), ``boxes`` (N, 4), optional
    ``ignore`` (N,) and ``difficulty`` (N, 3)) and summarise it.

    Returns:
        ``ap_easy``, ``ap_medium``, ``ap_hard`` of the last stage given; per stage ``s`` run:
        ``recall_s`` and ``candidates_s`` (mean boxes kept per image).
    """
    metric = WiderFaceAP()
    found: dict[str, float] = {}
    kept: dict[str, float] = {}
    faces, images = 0, 0
    for sample in samples:
        final, stages = detect_faces(sample["image"][None], *nets, settings=settings, return_stages=True)
        boxes = sample["boxes"].float().reshape(-1, 4)
        valid = ~sample["ignore"].bool() if "ignore" in sample else torch.ones(len(boxes), dtype=torch.bool)
        difficulty = sample.get("difficulty", torch.ones(len(boxes), 3, dtype=torch.bool))
        metric.update(
            [torch.cat([final[0]["boxes"], final[0]["scores"][:, None]], 1)],
            [{"boxes": boxes[valid], "difficulty": difficulty[valid].bool()}],
        )
        faces += int(valid.sum())
        images += 1
        for name, per_image in stages.items():
            pred = per_image[0]["boxes"]
            hit = box_iou(boxes[valid], pred).amax(1) >= iou if len(pred) and valid.any() else torch.zeros(0)
            found[name] = found.get(name, 0.0) + float(hit.sum())
            kept[name] = kept.get(name, 0.0) + len(pred)
    out = {k: float(v) for k, v in metric.compute().items()}
    for name in found:
        out[f"recall_{name}"] = found[name] / max(1, faces)
        out[f"candidates_{name}"] = kept[name] / max(1, images)
    return out
