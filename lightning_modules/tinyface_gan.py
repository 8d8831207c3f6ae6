"""Tiny-face GAN (Bai, Zhang, Ding, Ghanem, "Finding Tiny Faces in the Wild with Generative
Adversarial Network", CVPR 2018): super-resolve small face proposals 4x, refine them, and let a
discriminator with a face / non-face head re-score them.

Training is Lightning's manual-optimisation GAN pattern: one optimizer (and one per-step
scheduler) per player, ``self.toggled_optimizer``, ``self.manual_backward``, gradient clipping by
hand (``self.clip_gradients``), schedulers stepped by hand, SR images detached for D. Per batch:

1. G step: ``generator_loss`` (pixel MSE of G1 and G2; plus alpha * adversarial + beta *
   classification once the pixel-only warm-up of ``pixel_warmup_steps`` batches is over);
2. D step (after the warm-up): ``discriminator_loss`` on [HR; SR.detach()] (the four kinds of input).

``trainer.global_step`` counts optimizer steps of both players (Lightning's rule for manual
optimisation): a warm-up batch advances it by 1, a later batch by 2. The warm-up counts batches
(``batches_seen``, a buffer saved in checkpoints); G's scheduler steps every batch, D's every D
step; a resumed run continues exactly (tested).

Validation: PSNR / SSIM (torchmetrics) of bicubic, G1 and G2 against HR; D's face-head accuracy and
AP on the SR crops; D's real-head accuracy on [HR; SR]. Predict (``TinyFaceDataModule`` predict
items): the proposals below the datamodule's ``rescore_below`` are super-resolved and re-scored by
D's face head, alone (``fusion="replace"``) or fused with the detector score; a new submission is
written in the official layout with JSON lines (``facelit.metrics.widerface.write_detection_results``)
and, for annotated images, the WIDER AP before and after re-scoring to ``<predict_dir>/rescore_ap.json``.

Batch: ``datamodules.tinyface`` (``hr``, ``lr``, ``is_face``, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics.classification import BinaryAccuracy, BinaryAveragePrecision
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from facelit.losses.tinyface_gan import ALPHA, BETA, discriminator_loss, generator_loss
from facelit.metrics.widerface import WiderFaceAP, start_detection_results, write_detection_results
from facelit.nets.tinyface_gan import (
    VGG19_CONVS,
    VGG19_WIDTHS,
    TinyFaceDiscriminator,
    TinyFaceGenerator,
    bicubic_upsample,
)
from lightning_modules.base import FaceModule, build_optimizer, build_scheduler

__all__ = ["TinyFaceGANModule", "fuse_scores"]

log = logging.getLogger(__name__)

Fusion = Literal["replace", "mean", "geometric"]
_IMAGES = ("bicubic", "g1", "g2")


def fuse_scores(
    detector: torch.Tensor, face_prob: torch.Tensor, fusion: Fusion, weight: float
) -> torch.Tensor:
    """New scores of re-scored proposals (P,) from detector scores and D's face probabilities.

    ``replace``: ``face_prob``; ``mean``: ``w * face_prob + (1 - w) * detector``; ``geometric``:
    ``face_prob**w * detector**(1 - w)``.
    """
    if fusion == "replace":
        return face_prob
    if fusion == "mean":
        return weight * face_prob + (1 - weight) * detector
    if fusion == "geometric":
        return face_prob.clamp(min=0) ** weight * detector.clamp(min=0) ** (1 - weight)
    raise ValueError(f"unknown fusion {fusion!r}; use replace, mean or geometric")


def _stage_metrics() -> nn.ModuleDict:
    metrics: dict[str, nn.Module] = {}
    for name in _IMAGES:
        metrics[f"psnr_{name}"] = PeakSignalNoiseRatio(
            data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)
        )
        metrics[f"ssim_{name}"] = StructuralSimilarityIndexMeasure(data_range=1.0)
    metrics["d_face_acc"] = BinaryAccuracy()
    metrics["d_face_ap"] = BinaryAveragePrecision()
    metrics["d_real_acc"] = BinaryAccuracy()
    return nn.ModuleDict(metrics)


class TinyFaceGANModule(FaceModule):
    """Tiny-face GAN training, validation and proposal re-scoring.

    Args:
        g_channels, g_upsample_blocks, g_refine_blocks, g_deconv_channels, g_residual: generator
            (``facelit.nets.tinyface_gan.TinyFaceGenerator``; paper: 64, 8, 8, 256, False).
        scale: super-resolution factor (4; linked from the datamodule's ``scale`` by the CLI).
        d_widths, d_convs_per_stage, d_batch_norm: discriminator (VGG19: 64-128-256-512-512, 2-2-4-4-4).
        alpha, beta: adversarial and classification weights of the generator loss.
        d_lr: discriminator learning rate (None: ``lr``); both players use ``optimizer``, ``weight_decay``,
            ``scheduler`` and ``warmup_steps`` of :class:`FaceModule`.
        pixel_warmup_steps: batches of pixel-loss-only G training before the adversarial game starts.
        grad_clip: gradient-norm clipping of each player (0: off).
        fusion, fusion_weight: how ``predict`` combines D's face probability with the detector score.
        predict_dir: where ``predict`` writes the new submission (None: return results only).
        **kwargs: optimizer arguments of :class:`FaceModule` (optimizer, lr, weight_decay, ...).
    """

    def __init__(
        self,
        g_channels: int = 64,
        g_upsample_blocks: int = 8,
        g_refine_blocks: int = 8,
        g_deconv_channels: int = 256,
        g_residual: bool = False,
        scale: int = 4,
        d_widths: Sequence[int] = VGG19_WIDTHS,
        d_convs_per_stage: Sequence[int] = VGG19_CONVS,
        d_batch_norm: bool = False,
        alpha: float = ALPHA,
        beta: float = BETA,
        d_lr: float | None = None,
        pixel_warmup_steps: int = 0,
        grad_clip: float = 0.0,
        fusion: Fusion = "mean",
        fusion_weight: float = 0.5,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("optimizer", "adam")
        kwargs.setdefault("lr", 1e-4)
        kwargs.setdefault("weight_decay", 0.0)
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if fusion not in ("replace", "mean", "geometric") or not 0.0 <= fusion_weight <= 1.0:
            raise ValueError(
                f"fusion must be replace|mean|geometric and fusion_weight in [0, 1], got "
                f"{fusion!r}, {fusion_weight}"
            )
        if pixel_warmup_steps < 0 or grad_clip < 0:
            raise ValueError("pixel_warmup_steps and grad_clip must be >= 0")
        self.generator = TinyFaceGenerator(
            g_channels, g_upsample_blocks, g_refine_blocks, g_deconv_channels, scale, g_residual
        )
        self.discriminator = TinyFaceDiscriminator(d_widths, d_convs_per_stage, d_batch_norm)
        self.scale, self.alpha, self.beta = scale, alpha, beta
        self.d_lr = d_lr if d_lr is not None else self.lr
        self.pixel_warmup_steps, self.grad_clip = pixel_warmup_steps, grad_clip
        self.fusion, self.fusion_weight, self.predict_dir = fusion, fusion_weight, predict_dir
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.stage_metrics = nn.ModuleDict({"val": _stage_metrics(), "test": _stage_metrics()})
        self.ap_before, self.ap_after = WiderFaceAP(), WiderFaceAP()
        self.rescore_report: dict[str, Any] = {}

    # ---- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        opts, scheds = [], []
        for params, lr in (
            (self.generator.parameters(), self.lr),
            (self.discriminator.parameters(), self.d_lr),
        ):
            opt = build_optimizer(params, self.optimizer_name, lr, self.weight_decay, self.momentum)
            sched = build_scheduler(
                opt, self.scheduler_name, total, self.warmup_steps, self.milestones, self.gamma
            )
            opts.append(opt)
            if sched is not None:
                scheds.append(sched)
        return opts, scheds

    def _schedulers(self) -> list[Any]:
        scheds = self.lr_schedulers()
        if scheds is None:
            return []
        return list(scheds) if isinstance(scheds, list) else [scheds]

    def _step_player(self, optimizer: Any, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    @property
    def adversarial(self) -> bool:
        """Whether the warm-up is over (the adversarial game runs)."""
        return int(self.batches_seen) >= self.pixel_warmup_steps

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        hr, lr, is_face = batch["hr"], batch["lr"], batch["is_face"]
        n = hr.shape[0]
        if n == 0:  # no crop in these images: nothing to learn from
            return
        adversarial = self.adversarial
        with self.toggled_optimizer(opt_g):
            g1, g2 = self.generator(lr)
            if adversarial:
                real_logit, face_logit = self.discriminator(g2)
                g = generator_loss(g1, g2, hr, real_logit, face_logit, is_face, self.alpha, self.beta)
            else:
                g = generator_loss(g1, g2, hr)
            self._step_player(opt_g, g["total"])
        logs = {f"train/g_{k}": v.detach() for k, v in g.items()}
        if adversarial:
            with self.toggled_optimizer(opt_d):
                real_logit, face_logit = self.discriminator(torch.cat([hr, g2.detach()]))
                d = discriminator_loss(real_logit, face_logit, is_face)
                self._step_player(opt_d, d["total"])
            logs.update({f"train/d_{k}": v.detach() for k, v in d.items()})
        for player, sched in enumerate(self._schedulers()):  # D's schedule counts D's steps only
            if player == 0 or adversarial:
                sched.step()
        self.batches_seen += 1
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/loss", g["total"].detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=n)

    # ---- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        hr, lr, is_face = batch["hr"], batch["lr"], batch["is_face"]
        n = hr.shape[0]
        if n == 0:
            return
        g1, g2 = self.generator(lr)
        images = {"bicubic": bicubic_upsample(lr, self.scale), "g1": g1.clamp(0, 1), "g2": g2}
        metrics = self.stage_metrics[stage]
        for name, image in images.items():
            metrics[f"psnr_{name}"](image.float(), hr.float())
            metrics[f"ssim_{name}"](image.float(), hr.float())
        real_logit, face_logit = self.discriminator(torch.cat([hr, g2]))
        face_prob = torch.sigmoid(face_logit[n:].float())
        metrics["d_face_acc"](face_prob, is_face.long())
        metrics["d_face_ap"](face_prob, is_face.long())
        real_target = torch.cat([torch.ones(n), torch.zeros(n)]).to(hr.device).long()
        metrics["d_real_acc"](torch.sigmoid(real_logit.float()), real_target)
        pixel = generator_loss(g1, g2, hr)["pixel"]
        self.log(f"{stage}/g_pixel", pixel, on_epoch=True, batch_size=n, sync_dist=True)
        for key, metric in metrics.items():
            self.log(f"{stage}/{key}", metric, on_epoch=True, batch_size=n, prog_bar=key == "psnr_g2")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def super_resolve(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``bicubic``, ``g1``, ``g2`` (N, 3, sH, sW) for (N, 3, H, W) LR crops (for plots and callers)."""
        g1, g2 = self.generator(lr)
        return {"bicubic": bicubic_upsample(lr, self.scale), "g1": g1.clamp(0, 1), "g2": g2}

    # ---- re-scoring -------------------------------------------------------------------------------
    def face_probability(self, lr: torch.Tensor) -> torch.Tensor:
        """D's face probability (N,) of the super-resolved (N, 3, h, w) LR crops."""
        if lr.shape[0] == 0:
            return lr.new_zeros(0)
        _, g2 = self.generator(lr)
        return torch.sigmoid(self.discriminator(g2)[1].float())

    def on_predict_start(self) -> None:
        if self.predict_dir is not None:
            start_detection_results(self.predict_dir, rank=self.global_rank)
        self.ap_before.reset()
        self.ap_after.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        boxes, scores, rescore = batch["boxes"], batch["scores"], batch["rescore"]
        new_scores = scores.clone().float()
        if bool(rescore.any()):
            prob = self.face_probability(batch["lr"])
            new_scores[rescore] = fuse_scores(scores[rescore].float(), prob, self.fusion, self.fusion_weight)
        meta = batch.get("meta") or {}
        result = {
            "event": str(meta.get("event", "images")),
            "file": str(meta.get("file", f"{batch_idx:06d}")),
            "boxes": boxes.cpu(),
            "scores": new_scores.cpu(),
        }
        if self.predict_dir is not None:
            write_detection_results(self.predict_dir, [result], rank=self.global_rank)
        if "gt_boxes" in batch:
            target = [{"boxes": batch["gt_boxes"], "difficulty": batch["gt_difficulty"]}]
            self.ap_before.update([torch.cat([boxes, scores[:, None].float()], 1)], target)
            self.ap_after.update([torch.cat([boxes, new_scores[:, None]], 1)], target)
        result["rescored"] = int(rescore.sum())
        return result

    def on_predict_end(self) -> None:
        if not self.ap_before.pred_counts:
            return
        report = {
            f"{when}_{k}": float(v)
            for when, metric in (("before", self.ap_before), ("after", self.ap_after))
            for k, v in metric.compute().items()
        }
        report.update(fusion=self.fusion, fusion_weight=self.fusion_weight)
        self.rescore_report = report
        log.warning("tiny-face re-scoring: %s", json.dumps(report))
        if self.predict_dir is not None and self.global_rank == 0:
            (Path(self.predict_dir) / "rescore_ap.json").write_text(json.dumps(report, indent=1) + "\n")
