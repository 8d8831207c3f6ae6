"""Draw predictions over validation images and log them to the active loggers."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.images import epoch_due, log_images
from facelit.viz import draw_overlay

__all__ = ["PredictionOverlay"]


class PredictionOverlay(pl.Callback):
    """After the first validation batch of every ``every_n_epochs``-th epoch, draw what the module's
    ``predict_overlay(batch)`` returns (boxes, landmarks, pose axes; ground truth in red, predictions
    in green) on up to ``num_images`` images and log them as ``val/predictions``.

    Args:
        num_images: images drawn per epoch.
        every_n_epochs: drawing period.
        scale: integer upscaling for small crops.
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1, scale: int = 1) -> None:
        if num_images < 1 or every_n_epochs < 1 or scale < 1:
            raise ValueError("num_images, every_n_epochs and scale must be >= 1")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.scale = scale

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or not epoch_due(trainer, self.every_n_epochs):
            return
        if not hasattr(pl_module, "predict_overlay"):
            return
        with torch.no_grad():
            items = pl_module.predict_overlay(batch)[: self.num_images]
        if not items:
            return
        images = [draw_overlay(batch["image"][i], item, self.scale) for i, item in enumerate(items)]
        log_images(trainer, "val/predictions", images)
