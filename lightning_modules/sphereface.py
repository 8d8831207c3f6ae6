"""SphereFace (Liu et al., CVPR 2017): an embedding net trained with a margin softmax on identities,
judged by pair verification on unseen identities.

The net (SphereFace-N or a timm backbone) maps aligned crops to an embedding; the classifier and
margin live in :class:`facelit.losses.margin.MarginLoss` (A-Softmax by default; softmax, CosFace,
ArcFace and SphereFace-R by ``margin``). The A-Softmax lambda advances once per optimizer step and
is saved with the checkpoint (a buffer of the loss).

Features for verification and ``predict`` are concat(f(img), f(flip(img))) (``flip_test``), as
the official evaluation; the LFW protocol (:mod:`facelit.metrics.verification`) runs at the end of
every validation/test epoch over all pairs (DDP-gathered). Checkpoints are selected on ``val/*``
(unseen synthetic identities, or a real validation pair set), never on the benchmark test set.

Batches: see :mod:`datamodules.face_recognition`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from facelit.losses.margin import KIND_DEFAULT_M, KIND_DEFAULT_S, MarginKind, MarginLoss
from facelit.metrics.verification import IncompletePairsError, VerificationMetric, flip_features
from facelit.nets.sphere import create_embedding_net
from lightning_modules.base import FaceModule

__all__ = ["SphereFaceModule"]

log = logging.getLogger(__name__)


class SphereFaceModule(FaceModule):
    """Face recognition with a margin softmax.

    Args:
        backbone: ``sphere4|10|20|36|64`` (SphereFace-N) or any timm model name.
        image_size: (height, width) of the aligned crops (linked from the datamodule).
        num_identities: training identities = classifier classes (linked from the datamodule).
        embedding_dim: embedding size (512 in the paper; 2 or 3 for the sphere figure).
        width: channel multiplier of SphereFace-N (1 = the paper).
        weights_file: local timm weights.
        margin: ``asoftmax`` | ``softmax`` | ``cosface`` | ``arcface`` | ``spherefacer``.
        m, s: margin and scale; default the kind's published values (A-Softmax m = 4).
        lambda_base, lambda_gamma, lambda_power, lambda_min: A-Softmax annealing (official values).
        flip_test: evaluation features concatenate the flipped image's.
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        backbone: str = "sphere20",
        image_size: tuple[int, int] = (112, 96),
        num_identities: int = 10575,
        embedding_dim: int = 512,
        width: float = 1.0,
        weights_file: str | None = None,
        margin: MarginKind = "asoftmax",
        m: float | None = None,
        s: float | None = None,
        lambda_base: float = 1000.0,
        lambda_gamma: float = 0.12,
        lambda_power: float = 1.0,
        lambda_min: float = 5.0,
        flip_test: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.net = create_embedding_net(backbone, self.image_size, embedding_dim, width, weights_file)
        self.criterion = MarginLoss(
            embedding_dim, num_identities, margin,
            KIND_DEFAULT_M[margin] if m is None else m, KIND_DEFAULT_S[margin] if s is None else s,
            lambda_base, lambda_gamma, lambda_power, lambda_min,
        )
        self.flip_test = flip_test
        self.val_metric = VerificationMetric()
        self.test_metric = VerificationMetric()

    # ---- features -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) aligned crops in [0, 1] -> (B, D) embeddings."""
        return self.net(self.prepare_images(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation features: (B, 2D) with ``flip_test`` (image and its mirror), else (B, D)."""
        return flip_features(self, images) if self.flip_test else self(images)

    # ---- steps --------------------------------------------------------------------------------
    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        features = self(batch["image"])
        labels = batch["identity"]
        logits = self.criterion.local_logits(features, labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy, "lambda": torch.tensor(self.criterion.lambda_value),
                "feature_norm": features.detach().norm(dim=1).mean()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if batch["identity"].numel() and int(batch["identity"].max()) >= self.criterion.num_classes:
            raise ValueError(f"identity {int(batch['identity'].max())} >= num_identities {self.criterion.num_classes}")
        return self._step(batch, "train")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.criterion.step()  # lambda anneals per optimizer step (gradient accumulation included)

    def _pair_step(self, batch: dict[str, Any], metric: VerificationMetric) -> None:
        metric.update(self.embed(batch["image"]), self.embed(batch["image_right"]), batch["same"], batch["fold"],
                      batch["index"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._pair_step(batch, self.val_metric)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._pair_step(batch, self.test_metric)

    def _log_metric(self, metric: VerificationMetric, stage: str) -> None:
        try:
            values = metric.compute()  # already gathered over ranks: identical everywhere
        except IncompletePairsError as err:  # a partial pass (limit_*_batches, fast_dev_run)
            log.warning("%s verification not scored: %s", stage, err)
            metric.reset()
            return
        self.log(f"{stage}/accuracy", values.pop("accuracy"), prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()})
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metric(self.val_metric, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metric(self.test_metric, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """``features`` (B, 2D or D) of every image, with its ``index`` (and ``identity`` when known)."""
        out = {"features": self.embed(batch["image"]), "index": batch["index"]}
        if "identity" in batch:
            out["identity"] = batch["identity"]
        return out
