"""Frame strips of validation clips with predicted and ground-truth landmarks, logged."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.images import epoch_due, log_images
from facelit.metrics.video import nme_per_frame
from facelit.viz_video import batch_strips

__all__ = ["ClipStrip"]


class ClipStrip(pl.Callback):
    """After the first validation batch of every ``every_n_epochs``-th epoch, draw the module's
    ``predict_clips(batch)`` ((B, T, K, 2) landmarks; green) and the ground truth (red) on the
    frames of up to ``num_clips`` clips, one row per clip with each frame's NME, logged as
    ``val/clips``.

    Args:
        num_clips: clips drawn. max_frames: frames per row. every_n_epochs: drawing period.
        scale: integer upscaling for small crops.
    """

    def __init__(self, num_clips: int = 4, max_frames: int = 16, every_n_epochs: int = 1, scale: int = 2) -> None:
        if min(num_clips, max_frames, every_n_epochs, scale) < 1:
            raise ValueError("num_clips, max_frames, every_n_epochs and scale must be >= 1")
        self.num_clips, self.max_frames = num_clips, max_frames
        self.every_n_epochs, self.scale = every_n_epochs, scale

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or not epoch_due(trainer, self.every_n_epochs) or not hasattr(pl_module, "predict_clips"):
            return
        clips = {k: v[: self.num_clips] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            pred = pl_module.predict_clips(clips)
        frame_nme = nme_per_frame(pred, clips["landmarks"].float(), clips.get("frame_mask"))
        strip = batch_strips(clips, pred.cpu(), self.num_clips, self.max_frames, self.scale, frame_nme.cpu())
        log_images(trainer, "val/clips", [strip])
