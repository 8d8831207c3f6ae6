"""RetinaFace (Deng et al., "RetinaFace: Single-shot Multi-level Face Localisation in the Wild",
CVPR 2020): multi-task single-stage face detection with face classification, box regression,
five facial landmarks and (optionally) a dense mesh regressed at the positive anchors.

L = L_cls + 0.25 L_box + 0.1 L_pts + 0.01 L_mesh (``facelit.losses.multibox.LOSS_WEIGHTS``,
configurable), OHEM 3:1 negatives.

Validation logs the WIDER FACE protocol's AP (``facelit.metrics.widerface``) on the validation
images *letterboxed* to ``image_size``, as ``val/ap_{easy,medium,hard}@<image_size>``: a training
signal, not the published number. The number comparable to published WIDER tables is the official
evaluation at original resolution: ``predict`` (original-size images, one per batch) writes the
submission layout, and ``python -m facelit.metrics.wider_eval`` scores it (README "Evaluation").
``predict`` writes the official submission layout (``<predict_dir>/<event>/<file>.txt``) and one
JSON line per image (``<predict_dir>/predictions.rank<r>.jsonl``), in original-image pixels.

Batch: the detection batch of ``facelit.batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_warn

from facelit.geometry.matching import LOW_QUALITY_MIN_IOU
from facelit.losses.multibox import LOSS_WEIGHTS, NEG_POS_RATIO, MultiBoxLoss
from facelit.metrics.widerface import WiderFaceAP, start_detection_results, write_detection_results
from facelit.nets.retinaface import RetinaFace, detect, detect_multiscale
from facelit.nets.retinaface_post import NMS_THRESHOLD, SCORE_THRESHOLD, VOTE_THRESHOLD
from lightning_modules.base import FaceModule

__all__ = ["OVERLAY_SCORE_THRESHOLD", "RetinaFaceModule"]

OVERLAY_SCORE_THRESHOLD = 0.5  # detections drawn on the validation overlays (display only)


def _original_scale(meta: dict[str, Any] | None, device: torch.device) -> torch.Tensor:
    """(sx, sy) that mapped the original image to the network input (1, 1 when not resized)."""
    scale = (meta or {}).get("scale", (1.0, 1.0))
    return torch.tensor(scale, dtype=torch.float32, device=device)


class RetinaFaceModule(FaceModule):
    """RetinaFace training, validation (WIDER AP) and prediction.

    Args:
        backbone: ``mnet0.25`` (our MobileNetV1-0.25) or any timm ``features_only`` model name.
        fpn_levels: pyramid levels: (3, 4, 5) (common release) or (2, 3, 4, 5, 6) (paper).
        fpn_channels: FPN/context channels (64 for mnet0.25, 256 in the paper).
        anchors: anchor preset: ``mnet`` (16,800 at 640x640) or ``paper`` (102,300).
        context: ``ssh`` or ``none``.
        deformable: deformable convolutions in the context modules.
        mesh: regress the projected mesh of the synthetic head at the positive anchors (linked from
            the datamodule, which then serves mesh ground truth).
        cascade: a second head stage regressing from the first stage's boxes.
        pretrained / weights_file: backbone weights from a local file (nothing is fetched).
        image_size: training input size (linked from the datamodule).
        cls_weight, box_weight, landmark_weight, mesh_weight: loss weights (the paper's 1, 0.25, 0.1).
        neg_pos_ratio: OHEM negatives per positive.
        match_thresholds: stage-1 (positive IoU >=, negative <); None = the recipe: (0.5, 0.3), or
            (0.7, 0.3) with ``cascade`` (paper; authors' ``RPN_POSITIVE_OVERLAP = 0.7``).
        cascade_thresholds: stage-2 (positive >=, negative <) against the stage-1 boxes; None =
            (0.5, 0.4) (authors' ``CASCADE_OVERLAP = [0.4, 0.5]``).
        low_quality_min_iou: a face forces its best anchor(s) when that IoU is >= this (0.2,
            Pytorch_Retinaface); 0 disables forcing (the authors' mxnet release).
        use_visibility: train landmarks only on visible points. Default False: occluded but
            annotated WIDER points (flag 1) are trained on, as both public releases do.
        score_threshold, nms_threshold: detection post-processing.
        predict_dir: where ``predict`` writes the submission layout and JSON (None: return only).
        test_scales, test_flip: multi-scale + flip test-time augmentation for ``predict``.
        tta_merge, vote_threshold: how TTA passes merge: ``vote`` (box voting at IoU 0.4, the
            paper) or ``nms`` (at ``nms_threshold``).
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        backbone: str = "mnet0.25",
        fpn_levels: Sequence[int] = (3, 4, 5),
        fpn_channels: int = 64,
        anchors: Literal["mnet", "paper"] = "mnet",
        context: Literal["ssh", "none"] = "ssh",
        deformable: bool = False,
        mesh: bool = False,
        cascade: bool = False,
        pretrained: bool = False,
        weights_file: str | None = None,
        image_size: int = 640,
        cls_weight: float = LOSS_WEIGHTS["cls"],
        box_weight: float = LOSS_WEIGHTS["box"],
        landmark_weight: float = LOSS_WEIGHTS["landmarks"],
        mesh_weight: float = LOSS_WEIGHTS["mesh"],
        neg_pos_ratio: float = NEG_POS_RATIO,
        match_thresholds: tuple[float, float] | None = None,
        cascade_thresholds: tuple[float, float] | None = None,
        low_quality_min_iou: float = LOW_QUALITY_MIN_IOU,
        use_visibility: bool = False,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        predict_dir: str | None = None,
        test_scales: Sequence[float] = (1.0,),
        test_flip: bool = False,
        tta_merge: Literal["vote", "nms"] = "vote",
        vote_threshold: float = VOTE_THRESHOLD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        mesh_faces, num_vertices = None, 0
        if mesh:
            from facelit.synth import head_model

            head = head_model("human")
            mesh_faces, num_vertices = head.faces, head.vertices.shape[0]
        self.use_mesh = mesh
        self.image_size = image_size
        self.net = RetinaFace(
            backbone,
            tuple(fpn_levels),
            fpn_channels,
            anchors,
            context,
            deformable,
            num_vertices,
            cascade,
            pretrained,
            weights_file,
        )
        self.criterion = MultiBoxLoss(
            mesh_faces=mesh_faces,
            cls_weight=cls_weight,
            box_weight=box_weight,
            landmark_weight=landmark_weight,
            mesh_weight=mesh_weight,
            neg_pos_ratio=neg_pos_ratio,
            cascade=cascade,
            match_thresholds=match_thresholds,
            cascade_thresholds=cascade_thresholds,
            low_quality_min_iou=low_quality_min_iou,
            use_visibility=use_visibility,
        )
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.predict_dir = predict_dir
        self.test_scales = tuple(test_scales)
        self.test_flip = test_flip
        self.tta_merge = tta_merge
        self.vote_threshold = vote_threshold
        self.uses_backbone_weights = weights_file is not None
        self.val_ap = WiderFaceAP()
        self.test_ap = WiderFaceAP()

    # ---- forward / detection ------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """Dense outputs of the net for (B, 3, H, W) images."""
        return self.net(self.prepare_images(images))

    def detect(
        self, images: torch.Tensor, outputs: dict[str, Any] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (P, 4), ``scores`` (P,), ``landmarks`` (P, 5, 2) in input pixels."""
        outputs = self(images) if outputs is None else outputs
        anchors = self.net.anchors_for(tuple(images.shape[-2:]), images.device)
        return detect(outputs, anchors, self.score_threshold, self.nms_threshold)

    # ---- training / evaluation ------------------------------------------------------------------
    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        images = batch["image"]
        outputs = self(images)
        anchors = self.net.anchors_for(tuple(images.shape[-2:]), images.device)
        parts = self.criterion(outputs, batch, anchors, mesh_fn=self.net.mesh_at if self.use_mesh else None)
        out = {"loss": parts["total"], **{k: v for k, v in parts.items() if k != "total"}}
        out["num_positives"] = out["num_positives"].float()
        if stage in ("val", "test"):
            metric = self.val_ap if stage == "val" else self.test_ap
            preds, targets = self._ap_inputs(batch, self.detect(images, outputs))
            metric.update(preds, targets)
        return out

    def _ap_inputs(self, batch: dict[str, Any], dets: list[dict[str, torch.Tensor]]) -> tuple[list, list]:
        """Predictions (P, 5) xyxy+score and targets, both mapped back to original-image pixels."""
        preds, targets = [], []
        metas = batch.get("meta") or [{}] * len(dets)
        for i, det in enumerate(dets):
            scale = _original_scale(metas[i], det["boxes"].device).repeat(2)
            preds.append(torch.cat([det["boxes"] / scale, det["scores"][:, None]], dim=1).detach())
            valid = batch["valid"][i]
            difficulty = batch.get("difficulty")
            keep = (
                difficulty[i][valid]
                if difficulty is not None
                else torch.ones(int(valid.sum()), 3, dtype=torch.bool, device=valid.device)
            )
            targets.append({"boxes": batch["boxes"][i][valid] / scale, "difficulty": keep})
        return preds, targets

    def _log_ap(self, stage: str) -> None:
        metric = self.val_ap if stage == "val" else self.test_ap
        values = metric.compute()
        self.log_dict(
            {self.ap_key(stage, k): torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()},
            prog_bar=stage == "val",
        )
        metric.reset()

    def ap_key(self, stage: str, name: str) -> str:
        """Log key of a letterboxed-AP value, e.g. ``val/ap_easy@640`` (``name`` = ``ap_easy``)."""
        return f"{stage}/{name}@{self.image_size}"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if (
            stage == "fit"
            and getattr(datamodule, "synthetic", True) is False
            and not self.uses_backbone_weights
        ):
            rank_zero_warn(
                "RetinaFace is training on real data with a randomly initialised "
                f"{self.hparams['backbone']!r} "
                "backbone (no model.init_args.weights_file): the paper and both releases start from ImageNet "
                "weights; expect far lower AP"
            )

    def on_validation_epoch_end(self) -> None:
        self._log_ap("val")

    def on_test_epoch_end(self) -> None:
        self._log_ap("test")

    # ---- prediction -------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        images = batch["image"]
        if self.test_scales != (1.0,) or self.test_flip:
            dets = [
                detect_multiscale(
                    self.net,
                    img,
                    self.test_scales,
                    self.test_flip,
                    self.score_threshold,
                    self.nms_threshold,
                    merge=self.tta_merge,
                    vote_threshold=self.vote_threshold,
                )
                for img in images
            ]
        else:
            dets = self.detect(images)
        metas = batch.get("meta") or [{} for _ in dets]
        results = []
        for i, det in enumerate(dets):
            meta = metas[i] or {}
            scale = _original_scale(meta, images.device)
            boxes = det["boxes"] / scale.repeat(2)
            landmarks = det["landmarks"] / scale
            event = str(meta.get("event", "images"))
            name = str(meta.get("file", f"{batch_idx:06d}_{i:03d}"))
            results.append(
                {
                    "event": event,
                    "file": name,
                    "boxes": boxes.cpu(),
                    "scores": det["scores"].cpu(),
                    "landmarks": landmarks.cpu(),
                }
            )
        if self.predict_dir is not None:
            write_detection_results(self.predict_dir, results, rank=self.global_rank)
        return results

    def on_predict_start(self) -> None:
        """A predict run replaces the previous run's JSON lines of this rank (no duplicates)."""
        if self.predict_dir is not None:
            start_detection_results(self.predict_dir, rank=self.global_rank)

    def predict_overlay(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        dets = self.detect(batch["image"])
        items = []
        for i, det in enumerate(dets):
            keep = det["scores"] > OVERLAY_SCORE_THRESHOLD
            valid = batch["valid"][i]
            item = {
                "boxes": det["boxes"][keep],
                "landmarks": det["landmarks"][keep],
                "gt_boxes": batch["boxes"][i][valid],
            }
            if "landmarks_valid" in batch:
                item["gt_landmarks"] = batch["landmarks"][i][valid & batch["landmarks_valid"][i]]
            items.append(item)
        return items
