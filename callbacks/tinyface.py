"""Image grid of the tiny-face GAN: LR | bicubic | G1 | G2 | HR, one row per validation crop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from callbacks.images import epoch_due, log_images
from facelit.viz import grid, to_uint8

__all__ = ["SuperResolutionGrid", "COLUMNS", "sr_grid"]

COLUMNS = ("lr", "bicubic", "g1", "g2", "hr")


def sr_grid(lr: torch.Tensor, outputs: dict[str, torch.Tensor], hr: torch.Tensor) -> np.ndarray:
    """(rows * (S + pad), 5 * (S + pad), 3) uint8 grid; LR shown nearest-neighbour enlarged to S.

    Args:
        lr: (N, 3, h, w); outputs: ``bicubic``, ``g1``, ``g2`` (N, 3, S, S); hr: (N, 3, S, S).
    """
    size = hr.shape[-2:]
    columns = {"lr": F.interpolate(lr.float(), size=size, mode="nearest"), **outputs, "hr": hr}
    tiles = [to_uint8(columns[c][i].float().clamp(0, 1)) for i in range(hr.shape[0]) for c in COLUMNS]
    return grid(tiles, columns=len(COLUMNS))


class SuperResolutionGrid(pl.Callback):
    """After the first validation batch of every ``every_n_epochs``-th epoch, log ``val/sr_grid``.

    Works with any module that has ``super_resolve(lr) -> {"bicubic", "g1", "g2"}`` and batches
    with ``lr``/``hr`` (``datamodules.tinyface``).

    Args:
        num_crops: rows of the grid.
        every_n_epochs: drawing period.
    """

    def __init__(self, num_crops: int = 8, every_n_epochs: int = 1) -> None:
        if num_crops < 1 or every_n_epochs < 1:
            raise ValueError("num_crops and every_n_epochs must be >= 1")
        self.num_crops, self.every_n_epochs = num_crops, every_n_epochs

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
        if not hasattr(pl_module, "super_resolve") or batch["lr"].shape[0] == 0:
            return
        lr, hr = batch["lr"][: self.num_crops], batch["hr"][: self.num_crops]
        with torch.no_grad():
            out = pl_module.super_resolve(lr)
        log_images(trainer, "val/sr_grid", [sr_grid(lr, out, hr)], captions=[" | ".join(COLUMNS)])
