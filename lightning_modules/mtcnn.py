"""MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016): one module trains one cascade stage (``stage: pnet | rnet | onet``) on
the mined crops of ``datamodules.mtcnn`` and predicts with the cascade up to that stage.

Training: ``facelit.losses.mtcnn.MTCNNLoss`` (face cross-entropy with online hard sample mining of
the top ``keep_ratio`` = 70 %, L2 box offsets, L2 landmarks; weights (1, 0.5, 0.5) for P/R-Net,
(1, 0.5, 1) for O-Net). Validation logs the face classifier's recall and precision at probability
0.5 on the positives and negatives of the mined val crops (``val/recall``, ``val/precision``).

Prediction: ``detect_faces`` with the earlier stages from ``cascade_ckpt`` (or the released weights
when ``pretrained``) and this module's net last; writes the WIDER submission layout and JSON lines
(``facelit.metrics.widerface.write_detection_results``) in original-image pixels.

``pretrained: true`` loads the released weights into the trained net (fine-tuning starts from
them) and, without ``cascade_ckpt``, into the earlier stages.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torchmetrics.classification import BinaryPrecision, BinaryRecall

from facelit.datasets.mtcnn_samples import NEGATIVE, POSITIVE
from facelit.losses.mtcnn import OHEM_KEEP_RATIO, STAGE_WEIGHTS, MTCNNLoss
from facelit.nets.mtcnn import PRETRAINED, STAGE_SIZES, build_stage_net, load_pretrained, load_stage
from facelit.nets.mtcnn_cascade import detect_faces, get_preset
from lightning_modules.base import FaceModule

__all__ = ["MTCNNModule"]

_ORDER = tuple(STAGE_SIZES)  # pnet, rnet, onet
_FACE_PROBABILITY = 0.5  # operating point of the logged recall/precision


class MTCNNModule(FaceModule):
    """One MTCNN stage: training on crops, cascade prediction on images.

    Args:
        stage: ``pnet`` | ``rnet`` | ``onet``.
        landmarks: give P-Net/R-Net the paper's landmark head (O-Net always has one).
        pretrained: start from the released weights (``weights_dir``; None: the copy in facelit).
        weights_dir: folder of ``{pnet,rnet,onet}.pt``.
        det_weight, box_weight, landmark_weight: loss weights (None: the paper's for ``stage``).
        keep_ratio: OHEM fraction of classification losses back-propagated (1.0: no OHEM).
        cascade_ckpt: the earlier stages used by ``predict`` (``rnet``: [P-Net]; ``onet``: [P-Net,
            R-Net]), each an ``MTCNNModule`` checkpoint or ``"pretrained"``.
        preset: cascade thresholds for ``predict`` (``default`` | ``wider``).
        predict_dir: where ``predict`` writes the WIDER layout and JSON lines (None: return only).
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        stage: Literal["pnet", "rnet", "onet"] = "pnet",
        landmarks: bool = False,
        pretrained: bool = False,
        weights_dir: str | None = None,
        det_weight: float | None = None,
        box_weight: float | None = None,
        landmark_weight: float | None = None,
        keep_ratio: float = OHEM_KEEP_RATIO,
        cascade_ckpt: list[str] | None = None,
        preset: str = "default",
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if stage not in STAGE_SIZES:
            raise ValueError(f"stage must be one of {sorted(STAGE_SIZES)}, got {stage!r}")
        self.save_hyperparameters()
        self.stage = stage
        self.net = build_stage_net(stage, landmarks)
        if pretrained:
            load_pretrained(self.net, stage, weights_dir)
        defaults = STAGE_WEIGHTS[stage]
        weights = tuple(
            d if w is None else w
            for w, d in zip((det_weight, box_weight, landmark_weight), defaults, strict=False)
        )
        self.criterion = MTCNNLoss(weights, keep_ratio)  # type: ignore[arg-type]
        earlier = _ORDER[: _ORDER.index(stage)]
        sources = list(cascade_ckpt) if cascade_ckpt else ([PRETRAINED] * len(earlier) if pretrained else [])
        if sources and len(sources) != len(earlier):
            raise ValueError(f"cascade_ckpt for stage {stage} must list {list(earlier)}, got {sources}")
        self._earlier_sources = sources
        self._weights_dir = weights_dir
        self._earlier: list[torch.nn.Module] | None = None
        self.settings = get_preset(preset)
        self.predict_dir = predict_dir
        self.val_recall, self.val_precision = (
            BinaryRecall(_FACE_PROBABILITY),
            BinaryPrecision(_FACE_PROBABILITY),
        )
        self.test_recall, self.test_precision = (
            BinaryRecall(_FACE_PROBABILITY),
            BinaryPrecision(_FACE_PROBABILITY),
        )

    # ---- training / evaluation ----------------------------------------------------------------
    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs of the stage net for (B, 3, S, S) crops in [0, 1]."""
        return self.net(self.prepare_images(crops))

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        outputs = self(batch["image"])
        parts = self.criterion(outputs, batch)
        out = {
            "loss": parts["total"],
            "det": parts["det"],
            "box": parts["box"],
            "landmark": parts["landmark"],
        }
        if stage in ("val", "test"):
            kind = batch["kind"]
            scored = (kind == POSITIVE) | (kind == NEGATIVE)
            prob = outputs["logits"].flatten(1).softmax(1)[:, 1][scored]
            target = (kind[scored] == POSITIVE).long()
            recall, precision = (
                (self.val_recall, self.val_precision)
                if stage == "val"
                else (self.test_recall, self.test_precision)
            )
            recall.update(prob, target)
            precision.update(prob, target)
        return out

    def _log_classifier(self, stage: str) -> None:
        recall, precision = (
            (self.val_recall, self.val_precision)
            if stage == "val"
            else (self.test_recall, self.test_precision)
        )
        self.log(f"{stage}/recall", recall.compute(), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/precision", precision.compute(), sync_dist=True)
        recall.reset()
        precision.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_classifier("val")

    def on_test_epoch_end(self) -> None:
        self._log_classifier("test")

    # ---- cascade prediction ---------------------------------------------------------------------
    def cascade_nets(self) -> list[torch.nn.Module]:
        """The nets of the cascade up to this stage (earlier ones loaded once, on this device)."""
        earlier = _ORDER[: _ORDER.index(self.stage)]
        if len(self._earlier_sources) != len(earlier):
            raise ValueError(
                f"predicting with an MTCNN {self.stage} needs the earlier stages {list(earlier)}: "
                "set cascade_ckpt (or pretrained: true)"
            )
        if self._earlier is None:
            self._earlier = [
                load_stage(src, st, self._weights_dir).to(self.device)
                for src, st in zip(self._earlier_sources, earlier, strict=False)
            ]
        return [*self._earlier, self.net]

    def detect(self, images: torch.Tensor | list[torch.Tensor], return_stages: bool = False) -> Any:
        """``detect_faces`` with this cascade on (B, 3, H, W) or a list of (3, H, W) images in [0, 1]."""
        nets = self.cascade_nets() + [None] * (len(_ORDER) - _ORDER.index(self.stage) - 1)
        was_training = self.net.training
        self.net.eval()
        try:
            return detect_faces(images, nets[0], nets[1], nets[2], self.settings, return_stages=return_stages)
        finally:
            self.net.train(was_training)

    def on_predict_start(self) -> None:
        if self.predict_dir is not None:
            from facelit.metrics.widerface import start_detection_results

            start_detection_results(self.predict_dir, rank=self.global_rank)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Detection batch (``image`` (B, 3, H, W), ``meta``): per image, detections in original pixels."""
        dets = self.detect(batch["image"])
        metas = batch.get("meta") or [{} for _ in dets]
        results = []
        for i, det in enumerate(dets):
            meta = metas[i] or {}
            sx, sy = meta.get("scale", (1.0, 1.0))
            factor = det["boxes"].new_tensor([sx, sy])
            result = {
                "event": str(meta.get("event", "images")),
                "file": str(meta.get("file", f"{batch_idx:06d}_{i:03d}")),
                "boxes": (det["boxes"] / factor.repeat(2)).cpu(),
                "scores": det["scores"].cpu(),
            }
            if "landmarks" in det:
                result["landmarks"] = (det["landmarks"] / factor).cpu()
            results.append(result)
        if self.predict_dir is not None:
            from facelit.metrics.widerface import write_detection_results

            write_detection_results(self.predict_dir, results, rank=self.global_rank)
        return results
