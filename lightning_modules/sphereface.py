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

from facelit.losses.margin import (
    KIND_DEFAULT_M,
    KIND_DEFAULT_S,
    MarginKind,
    MarginLoss,
    ShardedMarginLoss,
    gather_shards,
    scale_gradient,
)
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
        shard_classifier: under DDP, split the classifier over the ranks (exact softmax, as Partial FC
            without sampling; for very many identities). Checkpoints hold the full classifier.
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
        shard_classifier: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.net = create_embedding_net(backbone, self.image_size, embedding_dim, width, weights_file)
        self.criterion = MarginLoss(
            embedding_dim,
            num_identities,
            margin,
            KIND_DEFAULT_M[margin] if m is None else m,
            KIND_DEFAULT_S[margin] if s is None else s,
            lambda_base,
            lambda_gamma,
            lambda_power,
            lambda_min,
        )
        self.flip_test = flip_test
        self.shard_classifier = shard_classifier
        self.val_metric = VerificationMetric()
        self.test_metric = VerificationMetric()

    # ---- sharded classifier ------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        world = self.trainer.world_size if self._trainer is not None else 1
        if self.shard_classifier and world > 1 and not isinstance(self.criterion, ShardedMarginLoss):
            self._shard(self.trainer.global_rank, world)

    def _shard(self, rank: int, world: int) -> None:
        """Keep this rank's slice of the (identically initialised) classifier; DDP must not average it."""
        from torch.nn.parallel import DistributedDataParallel

        full = self.criterion
        for param in full.parameters():  # every rank slices the same classifier
            torch.distributed.broadcast(param.data, 0)
        sharded = ShardedMarginLoss(full.embedding_dim, full.num_classes, rank, world, **full.settings())
        with torch.no_grad():
            sharded.weight.copy_(full.weight[sharded.class_start : sharded.class_stop])
            if full.bias is not None:
                sharded.bias.copy_(full.bias[sharded.class_start : sharded.class_stop])
            sharded.iteration.copy_(full.iteration)
        self.criterion = sharded.to(full.weight.device)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, [f"criterion.{n}" for n, _ in sharded.named_parameters()]
        )

    def on_fit_end(self) -> None:
        """Reassemble the full classifier on every rank (a spawned run hands rank 0's model back)."""
        c = self.criterion
        if not isinstance(c, ShardedMarginLoss):
            return
        full = MarginLoss(c.embedding_dim, c.num_classes, **c.settings()).to(c.weight.device)
        with torch.no_grad():
            for name, param in c.named_parameters():
                getattr(full, name).copy_(gather_shards(param.detach(), c))
            full.iteration.copy_(c.iteration)
        self.criterion = full

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Write the full classifier: gather every rank's shard (runs on every rank)."""
        if not isinstance(self.criterion, ShardedMarginLoss):
            return
        for name, param in self.criterion.named_parameters():
            checkpoint["state_dict"][f"criterion.{name}"] = gather_shards(param.detach(), self.criterion)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A full classifier in the checkpoint is sliced to this rank's shard."""
        if not isinstance(self.criterion, ShardedMarginLoss):
            return
        c = self.criterion
        for name, _ in c.named_parameters():
            key = f"criterion.{name}"
            checkpoint["state_dict"][key] = checkpoint["state_dict"][key][c.class_start : c.class_stop]

    def _embedding_for_loss(self, features: torch.Tensor) -> torch.Tensor:
        """DDP averages the backbone's gradients over ranks; a sharded loss gives each rank the exact
        gradient of the global loss through its own samples, so scale by the world size."""
        if isinstance(self.criterion, ShardedMarginLoss):
            return scale_gradient(features, self.criterion.world_size)
        return features

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
        out: dict[str, torch.Tensor] = {}
        if isinstance(self.criterion, ShardedMarginLoss):
            out["loss"] = self.criterion(self._embedding_for_loss(features), labels)
        else:
            logits = self.criterion.local_logits(features, labels)
            out["loss"] = F.cross_entropy(logits, labels)
            with torch.no_grad():
                out["accuracy"] = (logits.argmax(1) == labels).float().mean()
        return {
            **out,
            "lambda": torch.tensor(self.criterion.lambda_value),
            "feature_norm": features.detach().norm(dim=1).mean(),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if batch["identity"].numel() and int(batch["identity"].max()) >= self.criterion.num_classes:
            raise ValueError(
                f"identity {int(batch['identity'].max())} >= num_identities {self.criterion.num_classes}"
            )
        return self._step(batch, "train")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.criterion.step()  # lambda anneals per optimizer step (gradient accumulation included)

    def _pair_step(self, batch: dict[str, Any], metric: VerificationMetric) -> None:
        metric.update(
            self.embed(batch["image"]),
            self.embed(batch["image_right"]),
            batch["same"],
            batch["fold"],
            batch["index"],
        )

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

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        """``features`` (B, 2D or D) of every image, with its ``index`` (and ``identity`` when known)."""
        out = {"features": self.embed(batch["image"]), "index": batch["index"]}
        if "identity" in batch:
            out["identity"] = batch["identity"]
        return out
