"""Interspecies transfer panels: input | predicted warp | ground-truth warp | predicted keypoints."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.images import epoch_due, log_images
from facelit.viz import draw_overlay, grid

__all__ = ["WarpPanels"]


class WarpPanels(pl.Callback):
    """After the first validation batch of every ``every_n_epochs``-th epoch, log one row per image:
    the input, the predicted warp (with the keypoint net's points on it), the ground-truth warp of the
    first valid pose match (with the matched human keypoints), and the input with the predicted
    keypoints mapped back (green) and the ground truth (red), as ``val/warps``. Needs the module's
    ``warp_panels(batch)`` (:class:`lightning_modules.interspecies.InterspeciesModule`).

    Args:
        num_images: rows per panel.
        every_n_epochs: drawing period.
        scale: integer upscaling of the small crops.
    """

    def __init__(self, num_images: int = 6, every_n_epochs: int = 1, scale: int = 3) -> None:
        if num_images < 1 or every_n_epochs < 1 or scale < 1:
            raise ValueError("num_images, every_n_epochs and scale must be >= 1")
        self.num_images, self.every_n_epochs, self.scale = num_images, every_n_epochs, scale

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or not epoch_due(trainer, self.every_n_epochs):
            return
        if not hasattr(pl_module, "warp_panels"):
            return
        with torch.no_grad():
            panels = pl_module.warp_panels(
                {k: v[: self.num_images] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            )
        tiles = []
        for p in panels:
            tiles += [
                draw_overlay(p["input"], {}, self.scale),
                draw_overlay(p["pred_warp"], {"landmarks": p["warped_landmarks"]}, self.scale),
                draw_overlay(p["gt_warp"], {"gt_landmarks": p["match_landmarks"]}, self.scale),
                draw_overlay(
                    p["input"], {"landmarks": p["landmarks"], "gt_landmarks": p["gt_landmarks"]}, self.scale
                ),
            ]
        log_images(trainer, "val/warps", [grid(tiles, columns=4)] if tiles and trainer.is_global_zero else [])
