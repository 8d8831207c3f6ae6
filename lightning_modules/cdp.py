"""Consensus-Driven Propagation (Zhan et al., ECCV 2018): the two trained parts of the loop.

- :class:`CDPRecognitionModule`: SphereFace (:class:`SphereFaceModule`, unchanged) with an optional
  second classifier head for pseudo-labelled identities. With ``num_pseudo_identities = 0`` it *is*
  SphereFace (base model, committee, labelled-only and all-labels baselines); with pseudo classes
  each batch (``part=pseudo`` of :class:`datamodules.cdp.CDPDataModule`) holds labelled and
  pseudo-labelled images in equal share, one backbone, one margin head per label space (the
  authors' framework); the loss is ``loss_labelled + pseudo_weight * loss_pseudo``.
- :class:`MediatorModule`: the mediator MLP (:class:`facelit.nets.mediator.MediatorNet`) trained on
  candidate pairs of the labelled part (target: same identity) with a binary cross-entropy (the
  official 2-way softmax is the same model); ``predict`` gives each pair's probability.

Batches: :mod:`datamodules.cdp`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAveragePrecision, BinaryPrecision, BinaryRecall

from facelit.cluster.mediator_input import DEFAULT_STRUCTURE, mediator_input_size
from facelit.losses.margin import MarginLoss
from facelit.nets.mediator import MediatorNet
from lightning_modules.base import FaceModule
from lightning_modules.sphereface import SphereFaceModule

__all__ = ["CDPRecognitionModule", "MediatorModule"]


class CDPRecognitionModule(SphereFaceModule):
    """SphereFace with an optional pseudo-label head.

    Args:
        num_pseudo_identities: classes of the pseudo-label head (0: none, plain SphereFace).
        pseudo_weight: weight of the pseudo-labelled loss.
        **kwargs: :class:`SphereFaceModule` arguments (``num_identities`` = labelled classes).
    """

    def __init__(self, num_pseudo_identities: int = 0, pseudo_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_pseudo_identities < 0:
            raise ValueError(f"num_pseudo_identities must be >= 0, got {num_pseudo_identities}")
        if num_pseudo_identities and self.shard_classifier:
            raise ValueError("shard_classifier does not shard the pseudo-label head: use one or the other")
        self.pseudo_weight = float(pseudo_weight)
        self.pseudo_criterion: MarginLoss | None = None
        if num_pseudo_identities:
            c = self.criterion
            self.pseudo_criterion = MarginLoss(c.embedding_dim, num_pseudo_identities, **c.settings())

    @staticmethod
    def _head_loss(
        head: MarginLoss, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) of one margin head on (B, D) features and (B,) labels."""
        logits = head.local_logits(features, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        if self.pseudo_criterion is None or "pseudo" not in batch:
            return super().model_step(batch, stage)
        features = self(batch["image"])
        pseudo, labels = batch["pseudo"], batch["identity"]
        loss_l, acc_l = self._head_loss(self.criterion, features[~pseudo], labels[~pseudo])
        loss_p, acc_p = self._head_loss(self.pseudo_criterion, features[pseudo], labels[pseudo])
        return {
            "loss": loss_l + self.pseudo_weight * loss_p,
            "loss_labelled": loss_l.detach(),
            "loss_pseudo": loss_p.detach(),
            "accuracy": acc_l,
            "accuracy_pseudo": acc_p,
            "lambda": torch.tensor(self.criterion.lambda_value),
            "feature_norm": features.detach().norm(dim=1).mean(),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "pseudo" not in batch:
            return super().training_step(batch, batch_idx)
        if self.pseudo_criterion is None:
            raise ValueError("a pseudo-labelled batch needs model.init_args.num_pseudo_identities > 0")
        heads = {False: self.criterion, True: self.pseudo_criterion}
        for flag, head in heads.items():
            labels = batch["identity"][batch["pseudo"] == flag]
            if labels.numel() and int(labels.max()) >= head.num_classes:
                name = "num_pseudo_identities" if flag else "num_identities"
                raise ValueError(f"identity {int(labels.max())} >= {name} {head.num_classes}")
        return self._step(batch, "train")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.pseudo_criterion is not None:
            self.pseudo_criterion.step()  # its lambda anneals with the labelled head's


class MediatorModule(FaceModule):
    """The CDP mediator.

    Args:
        num_committee: N, committee models besides the base model.
        structure: neighbour-structure input, ``mean_var`` (paper) or ``common_neighbours`` (official
            code); with N it fixes the input size F (6N + 5 or 3N + 2).
        hidden_dims: hidden widths (``None``: two layers of 3F, the official net).
        input_norm: standardise the inputs (BatchNorm1d without affine parameters).
        threshold: probability above which a pair counts as positive in ``val/precision`` and
            ``val/recall`` (the propagation threshold is the pipeline's).
        **kwargs: optimizer arguments of :class:`FaceModule` (official: SGD lr 1e-3, momentum 0.9,
            weight decay 1e-4, batch 1024, one epoch).
    """

    def __init__(
        self,
        num_committee: int = 4,
        structure: str = DEFAULT_STRUCTURE,
        hidden_dims: list[int] | None = None,
        input_norm: bool = True,
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if num_committee < 1:
            raise ValueError(f"num_committee must be >= 1, got {num_committee}")
        self.net = MediatorNet(mediator_input_size(num_committee, structure), hidden_dims, input_norm)
        self.threshold = float(threshold)
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict(
                    {
                        "precision": BinaryPrecision(threshold=self.threshold),
                        "recall": BinaryRecall(threshold=self.threshold),
                        "average_precision": BinaryAveragePrecision(),
                    }
                )
                for stage in ("val", "test")
            }
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, F) pair inputs -> (B,) logits of "same identity"."""
        return self.net(inputs)

    @staticmethod
    def _counted(batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with ``image`` aliasing ``inputs``: :class:`FaceModule` counts a batch by the rows
        of ``batch["image"]``."""
        return {**batch, "image": batch["inputs"]}

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        logits = self(batch["inputs"])
        target = batch["target"]
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if stage in self.metrics:
            probs, labels = torch.sigmoid(logits.detach()), target.long()
            for metric in self.metrics[stage].values():
                metric.update(probs, labels)
        with torch.no_grad():
            accuracy = ((logits > 0).float() == target).float().mean()
        return {"loss": loss, "accuracy": accuracy, "positive_rate": target.mean()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return super().training_step(self._counted(batch), batch_idx)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return super().validation_step(self._counted(batch), batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return super().test_step(self._counted(batch), batch_idx)

    def _log_metrics(self, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            if metric.update_count:
                self.log(f"{stage}/{name}", metric.compute(), sync_dist=False)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        """``scores`` (B,) probability that each pair shows one identity, with its pair ``index``."""
        return {"scores": torch.sigmoid(self(batch["inputs"])), "index": batch["index"]}
