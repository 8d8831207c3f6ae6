"""Head pose with partial adversarial domain adaptation for continuous labels (PADACO) and baselines.

Kuhnke & Ostermann, ICCV 2019. F (a timm CNN) and R regress (yaw, pitch, roll) on the labelled
source; D tells source from target features through a gradient-reversal layer whose weight rises
as ``lambda_max * (2 / (1 + exp(-10 p)) - 1)`` over the adaptation phase.

Methods (``method``), all with the same budget and schedule:

- ``source_only``: F, R on the source regression loss; the target is never seen.
- ``dann``: + the adversarial loss from epoch ``adapt_epoch`` on, all source samples alike.
- ``pada``: PADA-like: at ``adapt_epoch`` the target is predicted once and the label-space source
  weights (:func:`facelit.datasets.sampling.label_space_weights`) multiply the source terms of the
  regression and discriminator losses (sampling stays uniform).
- ``padaco``: the same weights drive a weighted resampling of the source instead (sampler, not
  loss: poses absent from the target stay out of the BatchNorm statistics too).

Epochs before ``adapt_epoch`` are stage 1 (source only) for every method. Weights are computed once
(not iterated) and kept in checkpoints. Validation: source val (``val/source/*``, model selection)
and target labels for reporting (``val/target/*``); test: the target test set (``test/target/*``).
MAE in both conventions (``mae``: ypr, ``mae_pyr``: headposeplus), see
:mod:`facelit.metrics.headpose`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from facelit.datasets.sampling import label_space_weights
from facelit.losses.grl import dann_lambda
from facelit.metrics.headpose import HeadPoseMAE
from facelit.nets.headpose import HeadPoseNet
from lightning_modules.base import FaceModule

__all__ = ["METHODS", "PadacoModule"]

Method = Literal["source_only", "dann", "pada", "padaco"]
METHODS = ("source_only", "dann", "pada", "padaco")
_ADVERSARIAL = ("dann", "pada", "padaco")
_WEIGHTED = ("pada", "padaco")
_DOMAINS = ("source", "target")


class PadacoModule(FaceModule):
    """PADACO and its baselines on ``datamodules.padaco.PadacoDataModule`` batches.

    Args:
        method: ``source_only`` | ``dann`` | ``pada`` | ``padaco``.
        backbone: timm model name of F (``resnet18`` in the paper).
        weights_file: local ImageNet weights of F (nothing is downloaded).
        adapt_epoch: first epoch of stage 2 (adversarial training, weights); 0 starts at once.
        num_neighbours: N_n, source neighbours per target prediction in label space.
        weight_floor: weight added to every source sample before normalising (0 = paper).
        lambda_max: final weight of the adversarial gradient.
        regression_loss: ``l2`` | ``l1`` | ``smooth_l1`` on standardised angles.
        discriminator_hidden, dropout: D's hidden widths and dropout.
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        method: Method = "padaco",
        backbone: str = "resnet18",
        weights_file: str | None = None,
        adapt_epoch: int = 1,
        num_neighbours: int = 10,
        weight_floor: float = 0.0,
        lambda_max: float = 1.0,
        regression_loss: Literal["l2", "l1", "smooth_l1"] = "l2",
        discriminator_hidden: tuple[int, ...] = (256, 256),
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
        if regression_loss not in ("l2", "l1", "smooth_l1"):
            raise ValueError(f"unknown regression_loss {regression_loss!r}; use l2, l1 or smooth_l1")
        if adapt_epoch < 0 or num_neighbours < 1:
            raise ValueError("adapt_epoch must be >= 0 and num_neighbours >= 1")
        self.save_hyperparameters()
        self.method, self.adapt_epoch = method, adapt_epoch
        self.num_neighbours, self.weight_floor, self.lambda_max = num_neighbours, weight_floor, lambda_max
        self.regression_loss = regression_loss
        self.net = HeadPoseNet(backbone, weights_file, tuple(discriminator_hidden), dropout)
        self.val_metrics = torch.nn.ModuleDict({d: HeadPoseMAE() for d in _DOMAINS})
        self.test_metrics = torch.nn.ModuleDict({d: HeadPoseMAE() for d in _DOMAINS})
        self.source_weights: torch.Tensor | None = None
        self._adapt_start_step: int | None = None

    # ---- setup, stage 2 --------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and hasattr(dm, "source_poses"):
            self.net.set_label_stats(dm.source_poses())

    def adapting(self) -> bool:
        """True in stage 2 of an adversarial or weighted method."""
        return self.method != "source_only" and self.current_epoch >= self.adapt_epoch

    @torch.no_grad()
    def compute_source_weights(self) -> torch.Tensor:
        """Predict the unlabelled target once and spread weight over the source in label space."""
        dm = self.trainer.datamodule
        was_training = self.training
        self.eval()
        preds = [self(batch["image"].to(self.device)).cpu() for batch in dm.target_predict_dataloader()]
        self.train(was_training)
        weights = label_space_weights(
            dm.source_poses(), torch.cat(preds), self.num_neighbours, self.weight_floor
        )
        return weights

    def on_train_epoch_start(self) -> None:
        if not self.adapting():
            return
        if self._adapt_start_step is None:
            self._adapt_start_step = self.global_step
        if self.method in _WEIGHTED and self.source_weights is None:
            self.source_weights = self.compute_source_weights()
            w = self.source_weights
            ess = float(w.sum() ** 2 / (w**2).sum()) / len(w)  # effective sample size, as a fraction
            self.log_dict(
                {"adapt/weights_nonzero": (w > 0).float().mean(), "adapt/weights_ess": ess},
                rank_zero_only=True,
            )
        if self.method == "padaco":
            self.trainer.datamodule.set_source_weights(self.source_weights)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["padaco"] = {
            "source_weights": self.source_weights,
            "adapt_start_step": self._adapt_start_step,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("padaco", {})
        self.source_weights = state.get("source_weights")
        self._adapt_start_step = state.get("adapt_start_step")

    def adversarial_weight(self) -> float:
        """lambda of the current step: the DANN schedule over the adaptation phase."""
        start = self._adapt_start_step if self._adapt_start_step is not None else self.global_step
        total = (
            int(self.trainer.max_steps)
            if self.trainer.max_steps and self.trainer.max_steps > 0
            else int(self.trainer.estimated_stepping_batches)
        )
        return dann_lambda((self.global_step - start) / max(1, total - start), self.lambda_max)

    # ---- steps -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 3) yaw, pitch, roll degrees."""
        return self.net(self.prepare_images(images))

    def _regression(self, z: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample loss on standardised angles."""
        target = self.net.standardize(pose.float())
        if self.regression_loss == "l2":
            return F.mse_loss(z, target, reduction="none").mean(-1)
        if self.regression_loss == "l1":
            return F.l1_loss(z, target, reduction="none").mean(-1)
        return F.smooth_l1_loss(z, target, reduction="none").mean(-1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        source, target = batch["source"], batch["target"]
        b_s = source["image"].shape[0]
        adapting = self.adapting()
        adversarial = adapting and self.method in _ADVERSARIAL
        images = torch.cat([source["image"], target["image"]]) if adversarial else source["image"]
        features = self.net.embed(self.prepare_images(images))
        per_sample = self._regression(self.net.regress(features[:b_s]), source["pose"])
        sample_w = None
        if adapting and self.method == "pada" and self.source_weights is not None:
            sample_w = self.source_weights.to(self.device)[source["index"]]
        reg = (
            (per_sample * sample_w).sum() / sample_w.sum().clamp_min(1e-6)
            if sample_w is not None
            else per_sample.mean()
        )
        loss, logs = reg, {"train/regression": reg.detach()}
        if adversarial:
            lambd = self.adversarial_weight()
            logits = self.net.discriminator(features, lambd)
            labels = torch.cat([logits.new_ones(b_s), logits.new_zeros(len(logits) - b_s)])
            bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            if sample_w is not None:
                d_src = (bce[:b_s] * sample_w).sum() / sample_w.sum().clamp_min(1e-6)
            else:
                d_src = bce[:b_s].mean()
            domain = 0.5 * (d_src + bce[b_s:].mean())
            loss = loss + domain
            acc = ((logits > 0).float() == labels).float().mean()
            logs.update({"train/domain": domain.detach(), "train/domain_acc": acc, "train/lambda": lambd})
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=b_s)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=b_s)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str, domain: str) -> None:
        pred = self(batch["image"])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics[domain].update(pred, batch["pose"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", _DOMAINS[dataloader_idx])

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", "target")

    def _log_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        for domain, metric in metrics.items():
            if metric.update_count == 0:
                continue
            values = metric.compute()  # gathered across ranks: no further sync
            self.log_dict(
                {f"{stage}/{domain}/{k}": v.float() for k, v in values.items()},
                sync_dist=False,
                add_dataloader_idx=False,
            )
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"pose": self(batch["image"]), "meta": batch.get("meta")}

    def predict_overlay(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        pred = self(batch["image"])
        size = batch["image"].shape[-1]
        anchor = torch.full((1, 2), size / 2.0)
        length = torch.tensor(size / 3.0)
        return [
            {
                "pose": p.view(1, 3),
                "anchor": anchor,
                "axis_length": length,
                "gt_pose": t.view(1, 3),
                "gt_anchor": anchor,
                "gt_axis_length": length,
            }
            for p, t in zip(pred, batch["pose"], strict=True)
        ]
