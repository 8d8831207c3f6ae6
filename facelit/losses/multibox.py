"""RetinaFace multi-task loss: OHEM softmax classification, smooth-L1 boxes and landmarks, and the
dense mesh loss, normalised by the number of positive anchors.

Convention
----------
Targets are the padded detection batch of ``facelit/batch.py`` (boxes xyxy and points (x, y) in
pixels, pixel-area frame). Predictions are the dense ``RetinaFace.forward`` outputs in anchor order;
regression targets are the anchor-relative codes of ``facelit.geometry.coding``.

    L = w_cls L_cls + w_box L_box + w_pts L_pts + w_mesh L_mesh   (``LOSS_WEIGHTS``: 1, 0.25, 0.1, 0.01)

- ``L_cls``: softmax cross-entropy over positives and hard negatives. Per image, the negatives are
  ranked by their loss and the ``max(ratio * positives, min_negatives)`` hardest are kept (ratio 3);
  the ``min_negatives`` floor keeps face-free images informative. Ignored anchors never count.
- ``L_box``: smooth-L1 on the box deltas of positives.
- ``L_pts``: smooth-L1 on the landmark deltas of positives whose face has ``landmarks_valid``. By
  default every annotated point counts, also those WIDER marks occluded (flag 1): both public
  releases (the authors' mxnet code and Pytorch_Retinaface) train on them. ``use_visibility=True``
  restricts the term to ``landmarks_visible`` points.
- ``L_mesh``: L1 on the anchor-normalised vertices + ``mesh_edge_weight`` x L1 on triangle edge
  lengths, over positives whose face has ``mesh_valid``; needs ``mesh_fn`` (``RetinaFace.mesh_at``).

``L_cls`` and ``L_box`` are divided by the number of positive anchors of the batch, ``L_pts`` and
``L_mesh`` by the number of positives that carry landmarks / mesh (each at least 1).

Cascade (``cascade=True``; the outputs then have ``cls_2``/``box_2``/``landmarks_2``): stage 1 is
matched on the anchors at ``CASCADE_THRESHOLDS[0]`` (positive IoU >= 0.7, negative < 0.3), stage 2
against the detached stage-1 decoded boxes at ``CASCADE_THRESHOLDS[1]`` (>= 0.5, < 0.4), adding
``cls_2``, ``box_2`` and ``landmarks_2`` terms with the same weights. Without a cascade the one
stage uses ``DEFAULT_THRESHOLDS`` (>= 0.5, < 0.3). Low-quality forcing (``low_quality_min_iou``,
0.2) applies to both stages (``facelit.geometry.matching``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelit.geometry.anchors import AnchorSet
from facelit.geometry.coding import decode_boxes, encode_boxes, encode_landmarks, encode_mesh
from facelit.geometry.matching import (
    CASCADE_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    LOW_QUALITY_MIN_IOU,
    MatchResult,
    match_anchors,
)
from facelit.losses.mesh import mesh_edge_loss, mesh_edges, mesh_vertex_loss

__all__ = ["LOSS_WEIGHTS", "NEG_POS_RATIO", "MultiBoxLoss", "stage_thresholds", "select_hard_negatives"]

# The paper's loss weights (eq. 1: lambda_1 = 0.25 box, lambda_2 = 0.1 landmarks; the mesh term's 0.01
# is this project's choice); named once, the defaults of MultiBoxLoss and RetinaFaceModule.
LOSS_WEIGHTS: dict[str, float] = {"cls": 1.0, "box": 0.25, "landmarks": 0.1, "mesh": 0.01}
NEG_POS_RATIO = 3.0  # OHEM hard negatives per positive

Thresholds = tuple[float, float]


def stage_thresholds(
    cascade: bool, match_thresholds: Thresholds | None = None, cascade_thresholds: Thresholds | None = None
) -> tuple[Thresholds, Thresholds]:
    """((stage-1 positive, negative), (stage-2 positive, negative)) IoU thresholds.

    ``None`` takes the recipe: ``DEFAULT_THRESHOLDS`` without a cascade, ``CASCADE_THRESHOLDS[0]``
    for stage 1 with one, ``CASCADE_THRESHOLDS[1]`` for stage 2.
    """
    stage1 = (
        match_thresholds
        if match_thresholds is not None
        else (CASCADE_THRESHOLDS[0] if cascade else DEFAULT_THRESHOLDS)
    )
    stage2 = cascade_thresholds if cascade_thresholds is not None else CASCADE_THRESHOLDS[1]
    for name, pair in (("match_thresholds", stage1), ("cascade_thresholds", stage2)):
        if len(pair) != 2 or not 0.0 <= pair[1] <= pair[0] <= 1.0:
            raise ValueError(
                f"{name} must be (positive, negative) with 0 <= negative <= positive <= 1, got {pair}"
            )
    return (float(stage1[0]), float(stage1[1])), (float(stage2[0]), float(stage2[1]))


MeshFn = Callable[[Sequence[Tensor], Tensor, Tensor], Tensor]


def select_hard_negatives(neg_loss: Tensor, negative: Tensor, num_keep: Tensor) -> Tensor:
    """Per row, the ``num_keep`` negatives with the largest loss (vectorised sort/rank).

    Args:
        neg_loss: (B, A) loss of each anchor if labelled background.
        negative: (B, A) bool, eligible anchors.
        num_keep: (B,) int64, how many to keep per row (clamped to the eligible count).

    Returns:
        (B, A) bool mask of the selected hard negatives.
    """
    score = neg_loss.detach().masked_fill(~negative, float("-inf"))
    order = score.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_keep.clamp(max=negative.sum(1))[:, None]) & negative


class MultiBoxLoss(nn.Module):
    """RetinaFace loss (see the module docstring).

    Args:
        mesh_faces: (F, 3) triangles of the mesh for the edge term; None = vertex term only.
        cls_weight, box_weight, landmark_weight, mesh_weight: term weights.
        neg_pos_ratio: hard negatives per positive (>= 0).
        min_negatives: hard negatives kept per image even without positives.
        cascade: the outputs carry a second (cascade) stage; sets the recipe's thresholds.
        match_thresholds: stage-1 (positive >=, negative <) IoU; None = the recipe
            (``stage_thresholds``: (0.5, 0.3), or (0.7, 0.3) with a cascade).
        cascade_thresholds: stage-2 (positive >=, negative <); None = (0.5, 0.4).
        low_quality_min_iou: a face forces its best anchor(s) at this IoU or more; 0 disables.
        use_visibility: restrict the landmark term to visible points (default False: every
            annotated point counts, as in both public releases).
        mesh_edge_weight: weight of the edge-length term inside ``L_mesh``.
        smooth_l1_beta: transition point of the smooth-L1 terms.
        match_chunk_size: faces per matching chunk (None = automatic).
    """

    def __init__(
        self,
        mesh_faces: Tensor | None = None,
        cls_weight: float = LOSS_WEIGHTS["cls"],
        box_weight: float = LOSS_WEIGHTS["box"],
        landmark_weight: float = LOSS_WEIGHTS["landmarks"],
        mesh_weight: float = LOSS_WEIGHTS["mesh"],
        neg_pos_ratio: float = NEG_POS_RATIO,
        min_negatives: int = 16,
        cascade: bool = False,
        match_thresholds: Thresholds | None = None,
        cascade_thresholds: Thresholds | None = None,
        low_quality_min_iou: float = LOW_QUALITY_MIN_IOU,
        use_visibility: bool = False,
        mesh_edge_weight: float = 1.0,
        smooth_l1_beta: float = 1.0,
        match_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if neg_pos_ratio < 0 or min_negatives < 0:
            raise ValueError(
                f"neg_pos_ratio and min_negatives must be >= 0, got {neg_pos_ratio}, {min_negatives}"
            )
        self.weights = {
            "cls": cls_weight,
            "box": box_weight,
            "landmarks": landmark_weight,
            "mesh": mesh_weight,
        }
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives = min_negatives
        self.cascade = cascade
        self.thresholds = stage_thresholds(cascade, match_thresholds, cascade_thresholds)
        if not 0.0 <= low_quality_min_iou <= 1.0:
            raise ValueError(
                f"low_quality_min_iou must be in [0, 1] (0 disables forcing), got {low_quality_min_iou}"
            )
        self.low_quality_min_iou = low_quality_min_iou
        self.use_visibility = use_visibility
        self.mesh_edge_weight = mesh_edge_weight
        self.beta = smooth_l1_beta
        self.match_chunk_size = match_chunk_size
        edges = None if mesh_faces is None else mesh_edges(torch.as_tensor(mesh_faces))
        self.register_buffer("mesh_edges", edges, persistent=False)

    def forward(
        self,
        outputs: Mapping[str, Any],
        batch: Mapping[str, Any],
        anchors: AnchorSet,
        mesh_fn: MeshFn | None = None,
    ) -> dict[str, Tensor]:
        """Loss terms.

        Args:
            outputs: ``RetinaFace.forward`` output: ``cls`` (B, A, 2), ``box`` (B, A, 4),
                ``landmarks`` (B, A, 10), ``features``; optionally the ``*_2`` cascade outputs.
            batch: detection batch: ``boxes`` (B, M, 4), ``valid`` (B, M) required; ``ignore``,
                ``landmarks`` (B, M, 5, 2), ``landmarks_valid`` (B, M), ``landmarks_visible``
                (B, M, 5), ``mesh`` (B, M, V, 3), ``mesh_valid`` (B, M) optional.
            anchors: ``AnchorSet`` of the input size (``RetinaFace.anchors_for``).
            mesh_fn: ``RetinaFace.mesh_at``; without it the mesh term is 0.

        Returns:
            ``cls``, ``box``, ``landmarks``, ``mesh`` (unweighted terms), ``total`` (weighted sum),
            ``num_positives`` (stage-1 positive anchors, not a loss); with a cascade also ``cls_2``,
            ``box_2``, ``landmarks_2``.
        """
        for key in ("boxes", "valid"):
            if key not in batch:
                raise KeyError(f"detection batch lacks {key!r}; keys: {sorted(batch)}")
        a = outputs["cls"].shape[1]
        if anchors.boxes.shape != (a, 4):
            raise ValueError(
                f"outputs have {a} anchors, anchors {tuple(anchors.boxes.shape)}; "
                "use model.anchors_for(image_size) of the same input size"
            )
        parts, match = self._stage(
            outputs["cls"], outputs["box"], outputs["landmarks"], anchors.boxes, batch, 0
        )
        parts["mesh"] = self._mesh_term(outputs, batch, anchors, match, mesh_fn)
        if ("box_2" in outputs) != self.cascade:
            raise ValueError(
                f"MultiBoxLoss(cascade={self.cascade}) got outputs "
                f"{'with' if 'box_2' in outputs else 'without'} "
                "a cascade stage; build the loss with the net's cascade flag"
            )
        if self.cascade:
            refined = decode_boxes(outputs["box"].detach().float(), anchors.boxes.float())
            stage2, _ = self._stage(
                outputs["cls_2"], outputs["box_2"], outputs["landmarks_2"], refined, batch, 1
            )
            parts.update({f"{k}_2": v for k, v in stage2.items()})
        total = sum(self.weights[k.removesuffix("_2")] * v for k, v in parts.items())
        parts["total"] = total
        parts["num_positives"] = match.positive.sum().detach().float()
        return parts

    def _stage(
        self,
        cls: Tensor,
        box: Tensor,
        landmarks: Tensor,
        priors: Tensor,
        batch: Mapping[str, Any],
        stage: int,
    ) -> tuple[dict[str, Tensor], MatchResult]:
        pos_thr, neg_thr = self.thresholds[stage]
        match = match_anchors(
            priors,
            batch["boxes"],
            batch["valid"],
            batch.get("ignore"),
            pos_thr,
            neg_thr,
            low_quality_min_iou=self.low_quality_min_iou,
            chunk_size=self.match_chunk_size,
        )
        positive, negative = match.positive, match.negative
        num_pos = positive.sum(1)
        norm = num_pos.sum().clamp(min=1).float()

        logp = cls.float().log_softmax(-1)
        bg_loss = -logp[..., 0]
        num_neg = torch.clamp((num_pos.float() * self.neg_pos_ratio).long(), min=self.min_negatives)
        hard = select_hard_negatives(bg_loss, negative, num_neg)
        cls_loss = ((-logp[..., 1])[positive].sum() + bg_loss[hard].sum()) / norm

        b_idx, a_idx, f_idx = match.positive_indices()
        pos_priors = priors[a_idx] if priors.ndim == 2 else priors[b_idx, a_idx]
        box_target = encode_boxes(batch["boxes"][b_idx, f_idx].to(pos_priors.dtype), pos_priors)
        box_loss = F.smooth_l1_loss(
            box[b_idx, a_idx].float(), box_target.float(), reduction="sum", beta=self.beta
        )
        return {
            "cls": cls_loss,
            "box": box_loss / norm,
            "landmarks": self._landmark_term(landmarks, batch, b_idx, a_idx, f_idx, pos_priors),
        }, match

    def _landmark_term(
        self,
        pred: Tensor,
        batch: Mapping[str, Any],
        b_idx: Tensor,
        a_idx: Tensor,
        f_idx: Tensor,
        priors: Tensor,
    ) -> Tensor:
        if "landmarks" not in batch:
            return pred.new_zeros((), dtype=torch.float32)
        k = batch["landmarks"].shape[-2]
        face_ok = (
            batch["landmarks_valid"][b_idx, f_idx]
            if "landmarks_valid" in batch
            else torch.ones_like(b_idx, dtype=torch.bool)
        )
        point_ok = face_ok[:, None].expand(-1, k)
        if self.use_visibility and "landmarks_visible" in batch:
            point_ok = point_ok & batch["landmarks_visible"][b_idx, f_idx]
        target = encode_landmarks(batch["landmarks"][b_idx, f_idx].to(priors.dtype), priors)
        delta = pred[b_idx, a_idx].float().unflatten(-1, (k, 2))
        loss = F.smooth_l1_loss(delta[point_ok], target[point_ok].float(), reduction="sum", beta=self.beta)
        return loss / face_ok.sum().clamp(min=1).float()

    def _mesh_term(
        self,
        outputs: Mapping[str, Any],
        batch: Mapping[str, Any],
        anchors: AnchorSet,
        match: MatchResult,
        mesh_fn: MeshFn | None,
    ) -> Tensor:
        zero = outputs["cls"].new_zeros((), dtype=torch.float32)
        if mesh_fn is None or "mesh" not in batch or self.weights["mesh"] == 0:
            return zero
        b_idx, a_idx, f_idx = match.positive_indices()
        if "mesh_valid" in batch:
            keep = batch["mesh_valid"][b_idx, f_idx]
            b_idx, a_idx, f_idx = b_idx[keep], a_idx[keep], f_idx[keep]
        if b_idx.numel() == 0:
            return zero
        pred = mesh_fn(outputs["features"], b_idx, a_idx).float()
        target = encode_mesh(
            batch["mesh"][b_idx, f_idx].to(anchors.boxes.dtype), anchors.boxes[a_idx], anchors.scales[a_idx]
        ).float()
        loss = mesh_vertex_loss(pred, target, reduction="sum")
        if self.mesh_edges is not None:
            loss = loss + self.mesh_edge_weight * mesh_edge_loss(
                pred, target, self.mesh_edges, reduction="sum"
            )
        return loss / b_idx.numel()
