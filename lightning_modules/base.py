"""Shared LightningModule plumbing: optimizer/scheduler from plain arguments, one ``model_step``
for train/val/test, namespaced logging and the overlay hook used by the visual callbacks.

Each paper module subclasses :class:`FaceModule`, builds its nets from constructor arguments (so a
YAML maps one-to-one onto ``__init__``) and implements :meth:`model_step` (and, for overlays,
:meth:`predict_overlay`). Optimizer arguments are plain values so that W&B sweeps can address them
as ``--model.init_args.lr`` etc.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["FaceModule", "NonFiniteLossError", "build_optimizer", "build_scheduler"]

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["none", "cosine", "multistep"]
NonFinitePolicy = Literal["stop", "skip"]


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite (``FaceModule(nonfinite="stop")``)."""


def build_optimizer(
    params: Any, name: OptimizerName, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Create the optimizer ``name`` over ``params``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use one of sgd, adam, adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: SchedulerName,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: tuple[float, ...] = (0.7, 0.9),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-step LR multiplier: linear warmup, then cosine to 0 or steps of ``gamma`` at ``milestones``.

    Args:
        total_steps: optimizer steps of the whole run (``trainer.estimated_stepping_batches``).
        milestones: fractions of ``total_steps`` at which ``multistep`` multiplies the LR by ``gamma``
            (the RetinaFace recipe decays at 55/80 and 68/80 of training).
    """
    if name == "none" and warmup_steps == 0:
        return None
    total = max(1, int(total_steps))
    marks = [int(m * total) for m in milestones]

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if name == "multistep":
            return gamma ** sum(step >= m for m in marks)
        return 1.0

    if name not in ("none", "cosine", "multistep"):
        raise ValueError(f"unknown scheduler {name!r}; use one of none, cosine, multistep")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class FaceModule(pl.LightningModule):
    """Base class of facelit's paper modules.

    Args:
        optimizer: ``sgd`` | ``adam`` | ``adamw``.
        lr: peak learning rate.
        weight_decay: L2 / decoupled weight decay.
        momentum: SGD momentum.
        scheduler: ``none`` | ``cosine`` | ``multistep`` (per optimizer step).
        warmup_steps: linear warmup steps.
        milestones: ``multistep`` decay points as fractions of the run.
        gamma: ``multistep`` decay factor.
        channels_last: convert the model and the input images to channels_last (faster convs on GPU).
        nonfinite: what a NaN/infinite training loss does: ``stop`` raises :class:`NonFiniteLossError`
            naming the step and every loss part; ``skip`` skips that batch's optimizer step, counts it
            (``nonfinite_skipped``, logged as ``train/nonfinite_skipped``) and warns. ``skip`` needs
            automatic optimisation on one device (under DDP the other ranks would wait for its
            gradients).
    """

    def __init__(
        self,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_steps: int = 0,
        milestones: tuple[float, ...] = (0.7, 0.9),
        gamma: float = 0.1,
        channels_last: bool = False,
        nonfinite: NonFinitePolicy = "stop",
    ) -> None:
        super().__init__()
        if nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.channels_last = channels_last
        self.nonfinite = nonfinite
        self.nonfinite_skipped = 0

    # ---- optimisation -------------------------------------------------------------------------
    def parameters_to_optimize(self) -> Any:
        """Parameters (or param groups) handed to the optimizer; override for param groups."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(
            self.parameters_to_optimize(), self.optimizer_name, self.lr, self.weight_decay, self.momentum
        )
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        sched = build_scheduler(
            opt, self.scheduler_name, int(total), self.warmup_steps, self.milestones, self.gamma
        )
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the nets expect them (channels_last when enabled)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    # ---- one step for every stage ------------------------------------------------------------
    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        """Run the model on ``batch`` and return at least ``{"loss": scalar}`` plus loss parts.

        ``stage`` is ``train`` | ``val`` | ``test``; subclasses update their stage metrics here.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement model_step")

    def loss_is_finite(self, out: dict[str, torch.Tensor]) -> bool:
        """Whether ``out["loss"]`` is finite; otherwise apply the ``nonfinite`` policy.

        Raises:
            NonFiniteLossError: with ``nonfinite="stop"``, naming the global step, the epoch and the
                value of every scalar loss part.
        """
        if bool(torch.isfinite(out["loss"].detach()).all()):
            return True
        parts = ", ".join(f"{k}={v.detach().item():.6g}" for k, v in out.items() if v.ndim == 0)
        message = (f"{type(self).__name__}: non-finite training loss at global step {self.global_step} "
                   f"(epoch {self.current_epoch}): {parts}")
        if self.nonfinite == "stop":
            raise NonFiniteLossError(message + "; set model.init_args.nonfinite=skip to skip such batches, "
                                     "or lower the learning rate / set trainer.gradient_clip_val")
        self.nonfinite_skipped += 1
        log.warning("%s; skipped (%d so far)", message, self.nonfinite_skipped)
        return False

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor | None:
        """``model_step`` plus logging; in training, ``None`` (no optimizer step) for a skipped
        non-finite loss."""
        out = self.model_step(batch, stage)
        if stage == "train" and not self.loss_is_finite(out):
            return None
        batch_size = batch["image"].shape[0]
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in out.items() if v.ndim == 0 and k != "loss"},
            prog_bar=False,
            on_step=on_step,
            on_epoch=not on_step,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        self.log(f"{stage}/loss", out["loss"].detach(), prog_bar=True, on_step=on_step,
                 on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        return out["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        loss = self._step(batch, "train")
        if self.nonfinite == "skip":
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), on_step=True, on_epoch=False,
                     batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    # ---- visualisation -----------------------------------------------------------------------
    def predict_overlay(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per image, what to draw: any of ``boxes`` (N, 4), ``scores`` (N,), ``landmarks`` (N, K, 2),
        ``pose`` (N, 3) and ``anchor`` (N, 2) (where to draw pose axes), for predictions, plus the
        same keys prefixed ``gt_`` for ground truth. Default: nothing to draw."""
        return []

    @staticmethod
    def freeze(module: nn.Module) -> None:
        """Stop gradients for ``module``'s parameters."""
        for p in module.parameters():
            p.requires_grad_(False)
