"""Interspecies knowledge transfer for facial keypoint detection (Rashid, Gu, Lee, CVPR 2017).

A warping network (:class:`facelit.nets.warping.WarpingNet`) bends an animal face towards human
shape with a thin-plate spline; a keypoint network trained on human faces
(:class:`facelit.nets.vanilla_cnn.VanillaCNN`) finds the keypoints on the warped image; its
points are mapped back through the same warp onto the original animal image, where the keypoint
loss is computed. The warp is supervised by the TPS that maps pose-matched human keypoints onto the
animal's (``match_points`` of the batch, :mod:`datamodules.animal_faces`): L2 between the predicted
and ground-truth dense sampling grids, averaged over the K matches.

Methods (``method``):

* ``scratch``: the keypoint network on animals only (no human stage, no warp);
* ``bl_ft``: human stage, then fine-tuning on animals without warping;
* ``bl_tps``: human stage, then warping + keypoint network trained with the keypoint loss only;
* ``full``: human stage, warping-network stage (warping loss), then both losses together.

Stages run in one ``fit`` by optimizer step: ``[0, human_steps)`` keypoint network on the batch's
human faces, ``[.., + warp_steps)`` warping network alone (``full`` only), then the animal stage
until ``trainer.max_steps``. Stages a method does not use take no steps. Each stage has its own
learning rates, one LambdaLR per parameter group (keypoint net, warping backbone, warping head).
The official recipe: Adam, batch 64; warping stage lr 1e-3 (pre-trained layers x 0.1); animal
stage lr 1e-2 divided by 10 at 1/3 and 2/3 of it, warping backbone x 0.01, rest of the warping
net x 0.1.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from facelit.geometry.schemes import ANIMAL5
from facelit.geometry.tps import (
    fit_tps_anchored,
    folds,
    from_normalised,
    map_points,
    sampling_grid,
    to_normalised,
    warp_image,
)
from facelit.losses.landmark import landmark_loss
from facelit.metrics.failure_rate import FAILURE_THRESHOLD, KeypointFailureRate
from facelit.nets.vanilla_cnn import VanillaCNN
from facelit.nets.warping import ALEXNET, WarpingNet
from lightning_modules.base import FaceModule, build_optimizer

__all__ = ["METHODS", "InterspeciesModule", "stage_plan"]

Method = Literal["scratch", "bl_ft", "bl_tps", "full"]
METHODS = ("scratch", "bl_ft", "bl_tps", "full")
FOLDCHECK = True
HUMAN, WARP, ANIMAL = "human", "warp", "animal"


def stage_plan(method: str, human_steps: int, warp_steps: int) -> tuple[int, int]:
    """(human, warp) steps that ``method`` actually runs before its animal stage."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return (0 if method == "scratch" else human_steps), (warp_steps if method == "full" else 0)


class InterspeciesModule(FaceModule):
    """Warp -> keypoint net -> points mapped back through the warp.

    Args:
        method: ``scratch`` | ``bl_ft`` | ``bl_tps`` | ``full`` (module docstring).
        warp_backbone: ``alexnet`` or a timm model name.
        warp_width: channel multiplier of the AlexNet-style backbone.
        grid_size, grid_extent: TPS control grid (side, normalised extent).
        warp_hidden: first FC width of the warping net.
        warp_weights_file: local timm weights for a timm warping backbone (its layers count as
            pre-trained: x ``pretrained_lr_mult`` in the warping stage).
        keypoint_channels, keypoint_hidden: vanilla CNN widths.
        human_steps, warp_steps: steps of the human and warping stages (module docstring).
        human_lr, warp_lr: learning rates of those stages.
        pretrained_lr_mult: warping stage multiplier of pre-trained warping layers.
        backbone_lr_mult, warp_head_lr_mult: animal stage multipliers of the warping backbone / head.
        warp_loss_weight: weight of the warping loss in the animal stage (``full``).
        matches_per_step: matches per animal drawn at random (among the valid ones) for the warping loss
            of a training step, the K matches acting as augmentation (validation uses all K).
        smooth_l1_beta: smooth-L1 transition in pixels of the crop.
        failure_threshold: keypoint failure when the error exceeds this fraction of the crop side.
        **kwargs: FaceModule arguments (``lr`` is the animal-stage LR; ``milestones``/``gamma`` its
            decay points as fractions of the animal stage; ``optimizer``, ``weight_decay``).
    """

    def __init__(
        self,
        method: Method = "full",
        warp_backbone: str = ALEXNET,
        warp_width: float = 1.0,
        grid_size: int = 5,
        grid_extent: float = 1.0,
        warp_hidden: int = 256,
        warp_weights_file: str | None = None,
        keypoint_channels: tuple[int, ...] = (16, 48, 64, 64),
        keypoint_hidden: int = 100,
        human_steps: int = 0,
        warp_steps: int = 0,
        human_lr: float = 1e-3,
        warp_lr: float = 1e-3,
        pretrained_lr_mult: float = 0.1,
        backbone_lr_mult: float = 0.01,
        warp_head_lr_mult: float = 0.1,
        warp_loss_weight: float = 1.0,
        matches_per_step: int = 1,
        smooth_l1_beta: float = 1.0,
        failure_threshold: float = FAILURE_THRESHOLD,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("optimizer", "adam")
        kwargs.setdefault("lr", 1e-2)
        kwargs.setdefault("milestones", (1 / 3, 2 / 3))
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if min(human_steps, warp_steps) < 0:
            raise ValueError(f"human_steps and warp_steps must be >= 0, got {human_steps}, {warp_steps}")
        self.method = method
        self.human_steps, self.warp_steps = stage_plan(method, human_steps, warp_steps)
        self.human_lr, self.warp_lr = human_lr, warp_lr
        self.pretrained_lr_mult = pretrained_lr_mult
        self.backbone_lr_mult, self.warp_head_lr_mult = backbone_lr_mult, warp_head_lr_mult
        self.warp_loss_weight = warp_loss_weight
        if matches_per_step < 1:
            raise ValueError(f"matches_per_step must be >= 1, got {matches_per_step}")
        self.matches_per_step = matches_per_step
        self.smooth_l1_beta = smooth_l1_beta
        self.uses_warp = method in ("bl_tps", "full")
        self.keypoint_net = VanillaCNN(ANIMAL5.num_points, keypoint_channels, keypoint_hidden)
        self.warp_net = (
            WarpingNet(
                warp_backbone,
                warp_width,
                grid_size,
                grid_extent,
                hidden=warp_hidden,
                weights_file=warp_weights_file,
            )
            if self.uses_warp
            else None
        )
        self.warp_pretrained = warp_weights_file is not None
        self.val_metrics = KeypointFailureRate(ANIMAL5.point_names, failure_threshold)
        self.test_metrics = KeypointFailureRate(ANIMAL5.point_names, failure_threshold)

    # ---- stages and optimisation --------------------------------------------------------------
    def stage_at(self, step: int) -> str:
        """The training stage of optimizer step ``step``."""
        if step < self.human_steps:
            return HUMAN
        if step < self.human_steps + self.warp_steps:
            return WARP
        return ANIMAL

    def _stage_lrs(self, step: int, total: int) -> tuple[float, float, float]:
        """(keypoint net, warping backbone, warping head) learning rates at ``step``."""
        stage = self.stage_at(step)
        if stage == HUMAN:
            return self.human_lr, 0.0, 0.0
        if stage == WARP:
            backbone = self.warp_lr * (self.pretrained_lr_mult if self.warp_pretrained else 1.0)
            return 0.0, backbone, self.warp_lr
        start = self.human_steps + self.warp_steps
        progress = (step - start) / max(1, total - start)
        lr = self.lr * self.gamma ** sum(progress >= m for m in self.milestones)
        return lr, lr * self.backbone_lr_mult, lr * self.warp_head_lr_mult

    def configure_optimizers(self) -> Any:
        groups = [{"params": list(self.keypoint_net.parameters()), "lr": 1.0}]
        if self.warp_net is not None:
            head = self.warp_net.head_parameters()
            head_ids = {id(p) for p in head}
            backbone = [p for p in self.warp_net.parameters() if id(p) not in head_ids]
            groups += [{"params": backbone, "lr": 1.0}, {"params": head, "lr": 1.0}]
        opt = build_optimizer(groups, self.optimizer_name, 1.0, self.weight_decay, self.momentum)
        total = int(
            self.trainer.max_steps
            if self._trainer is not None and self.trainer.max_steps > 0
            else (self.trainer.estimated_stepping_batches if self._trainer is not None else 1)
        )
        lambdas = [(lambda step, g=g: self._stage_lrs(step, total)[g]) for g in range(len(groups))]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- the model ----------------------------------------------------------------------------
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) animal images -> ``landmarks`` (B, 5, 2) on the original image (pixels), plus
        ``warped`` (B, 3, H, W), ``grid`` (B, H, W, 2) and ``warped_landmarks`` (B, 5, 2) for the
        warping methods."""
        size = (images.shape[-2], images.shape[-1])
        if self.warp_net is None:
            return {"landmarks": self.keypoint_net.predict_pixels(self.prepare_images(images))}
        warp = self.warp_net(self.prepare_images(images))
        warped, grid = self.warp_net.warp(images, warp)
        on_warped = self.keypoint_net.predict_pixels(self.prepare_images(warped))
        return {
            "landmarks": map_points(warp, on_warped, size, size),
            "warped": warped,
            "grid": grid,
            "warped_landmarks": on_warped,
        }

    def keypoint_loss(self, pred: Tensor, target: Tensor, visible: Tensor, size: int) -> Tensor:
        """Smooth-L1 on visible keypoints, (B, K, 2) pixels of an S-sided crop, in units of the crop side."""
        return (
            landmark_loss(
                pred / size,
                target / size,
                visible,
                kind="smooth_l1",
                smooth_l1_beta=self.smooth_l1_beta,
                scale=float(size),
            )
            / size
        )

    @staticmethod
    def ground_truth_grids(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Dense GT sampling grids (B, M, H, W, 2) of the TPS that maps each matched human keypoint set
        onto the animal's (keypoints visible in both, >= 3 of them; border anchored by their similarity,
        :func:`facelit.geometry.tps.fit_tps_anchored`), and their (B, M) validity (warps that fold the
        image, :func:`facelit.geometry.tps.folds`, are not valid)."""
        image = batch["image"]
        b, _, h, w = image.shape
        human = batch["match_points"]  # (B, M, 5, 2) normalised, output frame
        m = human.shape[1]
        animal = to_normalised(batch["landmarks"], (h, w))[:, None].expand(-1, m, -1, -1)
        used = batch["match_visible"] & batch["landmarks_visible"][:, None, :]
        valid = batch["match_valid"] & (used.sum(-1) >= 3)
        grids = image.new_zeros(b, m, h, w, 2)
        if bool(valid.any()):
            fit = fit_tps_anchored(human[valid].to(image.dtype), animal[valid].to(image.dtype), used[valid])
            dense = sampling_grid(fit, (h, w))
            grids[valid] = dense
            valid = valid.clone()
            valid[valid.clone()] = ~folds(dense) if FOLDCHECK else True
        return grids, valid

    def draw_matches(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with ``matches_per_step`` of its K matches per animal, valid ones first, at random."""
        valid = batch["match_valid"]
        if self.matches_per_step >= valid.shape[1]:
            return batch
        score = torch.rand(valid.shape, device=valid.device) + valid.to(torch.float32)
        pick = score.topk(self.matches_per_step, dim=1).indices  # (B, m)
        out = dict(batch)
        out["match_valid"] = valid.gather(1, pick)
        out["match_visible"] = batch["match_visible"].gather(1, pick[..., None].expand(-1, -1, 5))
        out["match_points"] = batch["match_points"].gather(1, pick[..., None, None].expand(-1, -1, 5, 2))
        return out

    @staticmethod
    def warping_loss(grid: Tensor, gt_grids: Tensor, valid: Tensor) -> Tensor:
        """Mean squared distance per pixel between (B, H, W, 2) and the valid ones of (B, M, H, W, 2),
        averaged over valid matches (0 when none is valid)."""
        per_match = ((grid[:, None] - gt_grids) ** 2).sum(-1).mean(dim=(-2, -1))  # (B, M)
        return (per_match * valid).sum() / valid.sum().clamp(min=1)

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, Tensor]:
        images = batch["image"]
        size = images.shape[-1]
        phase = self.stage_at(self.global_step) if stage == "train" else ANIMAL
        if phase == HUMAN:
            pred = self.keypoint_net.predict_pixels(self.prepare_images(batch["human_image"]))
            loss = self.keypoint_loss(pred, batch["human_landmarks"], batch["human_landmarks_visible"], size)
            return {"loss": loss, "human_keypoint_loss": loss}
        out: dict[str, Tensor] = {}
        if stage == "train" and "match_points" in batch:
            batch = self.draw_matches(batch)
        if phase == WARP:
            assert self.warp_net is not None  # stage_plan gives warp steps only to warping methods
            grid = self.warp_net.warp(images, self.warp_net(self.prepare_images(images)))[1]
            with torch.no_grad():
                gt, valid = self.ground_truth_grids(batch)
            loss = self.warping_loss(grid, gt, valid)
            return {"loss": loss, "warp_loss": loss}
        pred = self(images)
        kp_loss = self.keypoint_loss(pred["landmarks"], batch["landmarks"], batch["landmarks_visible"], size)
        loss = kp_loss
        out["keypoint_loss"] = kp_loss
        if "grid" in pred and "match_points" in batch:
            with torch.no_grad():
                gt, valid = self.ground_truth_grids(batch)
            warp_loss = self.warping_loss(pred["grid"], gt, valid)
            out["warp_loss"] = warp_loss
            if self.method == "full":
                loss = loss + self.warp_loss_weight * warp_loss
        out["loss"] = loss
        if stage in ("val", "test"):
            metric = self.val_metrics if stage == "val" else self.test_metrics
            metric.update(pred["landmarks"], batch["landmarks"], batch["landmarks_visible"], float(size))
        return out

    def _log_metrics(self, stage: str) -> None:
        metric = self.val_metrics if stage == "val" else self.test_metrics
        self.log_dict({f"{stage}/{k}": v for k, v in metric.compute().items()}, sync_dist=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"landmarks": self(batch["image"])["landmarks"], "meta": batch.get("meta")}

    @torch.no_grad()
    def warp_panels(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        """Per image: ``input``, ``pred_warp`` and ``gt_warp`` (first valid match; the input when none)
        images (3, H, W), ``landmarks``/``gt_landmarks`` on the input, ``warped_landmarks`` on the
        predicted warp and ``match_landmarks`` (the matched human keypoints) on the GT warp, (5, 2) pixels."""
        images = batch["image"]
        h, w = images.shape[-2:]
        pred = self(images)
        gt_warp, match = images, batch["landmarks"]
        if "match_points" in batch:
            grids, valid = self.ground_truth_grids(batch)
            first = valid.float().argmax(1)
            rows = torch.arange(images.shape[0], device=images.device)
            warped = warp_image(images, grids[rows, first])
            has = valid.any(1)
            gt_warp = torch.where(has[:, None, None, None], warped, images)
            match = from_normalised(batch["match_points"][rows, first], (h, w))
        pred_warp = pred.get("warped", images)
        on_warp = pred.get("warped_landmarks", pred["landmarks"])
        return [
            {
                "input": images[i],
                "pred_warp": pred_warp[i],
                "gt_warp": gt_warp[i],
                "landmarks": pred["landmarks"][i],
                "gt_landmarks": batch["landmarks"][i],
                "warped_landmarks": on_warp[i],
                "match_landmarks": match[i],
            }
            for i in range(images.shape[0])
        ]

    def predict_overlay(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        pred = self(batch["image"])["landmarks"]
        return [{"landmarks": p, "gt_landmarks": t} for p, t in zip(pred, batch["landmarks"], strict=True)]
