"""Facial-landmark regression: a timm backbone (SE-ResNet by default) regressing K points.

The practice of the landmark literature: regress 2K coordinates normalised to the crop (or decode
heatmaps with soft-argmax), train with L2 / L1 / smooth-L1 / Wing, judge with NME (inter-ocular,
inter-pupil, landmark-box or face-box normaliser), the CED curve, AUC@0.08 and failure rates.

Batch: the face-crop batch of ``facelit.batch`` (image (B, 3, S, S), landmarks (B, K, 2) in crop
pixels, landmarks_visible (B, K), pose (B, 3), boxes (B, 4) the face box).

Checkpoints are selected on ``val/*`` (a validation split of the training data); the benchmark
split (AFLW2000-3D, the AFLW-19 test split) is scored once by ``cli.py test`` as ``test/*``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from facelit.geometry.schemes import get_scheme
from facelit.losses.landmark import LandmarkLoss
from facelit.metrics.landmarks import LandmarkMetrics, check_normaliser
from facelit.nets.landmark_net import LandmarkRegressor, mean_shape
from lightning_modules.base import FaceModule

__all__ = ["LandmarkModule"]


class LandmarkModule(FaceModule):
    """Landmark regression on face crops.

    Args:
        backbone: timm model name (``seresnet50`` in the paper recipe; any timm model works).
        scheme: landmark scheme (linked from the datamodule when it declares one).
        head: ``regression`` (2K outputs) or ``heatmap`` (soft-argmax over K heatmaps).
        loss: ``l2`` | ``l1`` | ``smooth_l1`` | ``wing``.
        wing_w, wing_eps: Wing loss parameters in pixels of the crop.
        normaliser: NME normaliser: ``inter_ocular`` | ``inter_pupil`` | ``landmark_box`` (sqrt(w h) of
            the ground-truth landmarks' box, AFLW2000-3D) | ``face_box`` (sqrt(w h) of the dataset's
            face box, AFLW-19); see :mod:`facelit.metrics.landmarks`.
        image_size: crop side in pixels (linked from the datamodule).
        pretrained: load timm weights (only with ``weights_file``: nothing is fetched).
        weights_file: local backbone weights.
        head_channels: channels of the heatmap head's deconvolution stages.
        mean_shape_samples: training samples averaged for the mean-shape initialisation of the
            regression bias (0 keeps the crop centre). Only a fresh head is initialised: a model
            loaded from a checkpoint keeps its trained bias when it is fine-tuned.
        regression_pool: how the regression head reads the last feature map: ``avg`` (global
            average pooling) or ``flatten`` (every cell of the map at ``image_size``, keeping where
            each part of the face lies); see :data:`facelit.nets.landmark_net.POOLS`.
        yaw_bins: also report NME by |yaw| bins [0, 30], (30, 60], (60, 90] (needs pose labels).
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        backbone: str = "seresnet50",
        scheme: str = "ibug68",
        head: Literal["regression", "heatmap"] = "regression",
        loss: Literal["l2", "l1", "smooth_l1", "wing"] = "wing",
        wing_w: float = 10.0,
        wing_eps: float = 2.0,
        normaliser: str = "inter_ocular",
        image_size: int = 256,
        pretrained: bool = False,
        weights_file: str | None = None,
        head_channels: int = 256,
        mean_shape_samples: int = 256,
        regression_pool: Literal["avg", "flatten"] = "avg",
        yaw_bins: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.scheme = get_scheme(scheme)
        self.image_size = image_size
        self.normaliser = check_normaliser(normaliser)
        self.mean_shape_samples = mean_shape_samples
        self.yaw_bins = yaw_bins
        self.net = LandmarkRegressor(
            backbone,
            self.scheme.num_points,
            head,
            pretrained,
            weights_file,
            head_channels=head_channels,
            pool=regression_pool,
            input_size=image_size if regression_pool == "flatten" else None,
        )
        # Saved with the weights: True once the regression bias holds a mean shape or trained values.
        self.register_buffer("head_initialised", torch.tensor(False))
        self.criterion = LandmarkLoss(loss, wing_w=wing_w, wing_eps=wing_eps, scale=float(image_size))
        self.val_metrics = LandmarkMetrics(normaliser, self.scheme)
        self.test_metrics = LandmarkMetrics(normaliser, self.scheme)

    # ---- setup ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if (
            stage == "fit"
            and self.mean_shape_samples > 0
            and self.net.head_type == "regression"
            and not bool(self.head_initialised)
        ):
            self._init_mean_shape()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written before ``head_initialised`` existed holds a trained head too."""
        state = checkpoint.get("state_dict", {})
        state.setdefault("head_initialised", torch.tensor(True))

    @torch.no_grad()
    def _init_mean_shape(self) -> None:
        """Start the regression bias at the mean normalised shape of (un-augmented) training crops."""
        dm = getattr(self.trainer, "datamodule", None)
        dataset = getattr(dm, "train_set", None)
        if dataset is None:
            return
        dataset = getattr(dataset, "dataset", dataset)  # skip the augmentation wrapper
        samples = [dataset[i] for i in range(min(len(dataset), self.mean_shape_samples))]
        points = torch.stack([s["landmarks"] for s in samples])
        visible = torch.stack([s["landmarks_visible"] for s in samples])
        size = samples[0]["image"].shape[-1]
        self.net.fc.bias.copy_((mean_shape(points, visible) / size).reshape(-1).to(self.net.fc.bias))
        self.head_initialised.fill_(True)

    # ---- steps ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, K, 2) landmarks in crop pixels."""
        size = torch.tensor(images.shape[-1:-3:-1], device=images.device, dtype=images.dtype)
        return self.net(self.prepare_images(images)) * size

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        images = batch["image"]
        size = images.shape[-1]
        pred_norm = self.net(self.prepare_images(images))
        target_norm = batch["landmarks"] / size
        visible = batch["landmarks_visible"]
        loss = self.criterion(pred_norm.float(), target_norm.float(), visible)
        out = {"loss": loss}
        if stage in ("val", "test"):
            metric = self.val_metrics if stage == "val" else self.test_metrics
            yaw = batch["pose"][:, 0] if self.yaw_bins and "pose" in batch else None
            face_box = batch["boxes"] if self.normaliser == "face_box" else None
            metric.update(
                pred_norm.detach().float() * size,
                batch["landmarks"].float(),
                visible,
                face_box=face_box,
                yaw=yaw,
            )
        return out

    def _log_metrics(self, stage: str) -> None:
        metric = self.val_metrics if stage == "val" else self.test_metrics
        values = metric.compute()
        # compute() already gathered every rank's samples: no further sync.
        self.log_dict(
            {f"{stage}/{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()},
            sync_dist=False,
        )
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"landmarks": self(batch["image"]), "meta": batch.get("meta")}

    def predict_overlay(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        pred = self(batch["image"])
        return [{"landmarks": p, "gt_landmarks": t} for p, t in zip(pred, batch["landmarks"], strict=True)]
