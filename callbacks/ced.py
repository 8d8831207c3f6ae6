"""Plot the cumulative error distribution (CED) of the validation NMEs and log it."""

from __future__ import annotations

import pytorch_lightning as pl
from torchmetrics.utilities import dim_zero_cat

from callbacks.images import epoch_due, log_images
from facelit.viz import figure_to_uint8, plot_ced

__all__ = ["CEDPlot"]


class CEDPlot(pl.Callback):
    """At the end of validation, draw the CED curve of the module's ``val_metrics`` (a
    :class:`facelit.metrics.landmarks.LandmarkMetrics`, gathered across DDP ranks) up to
    ``threshold`` and log it as ``val/ced``.

    Args:
        threshold: largest NME on the x axis (and the AUC threshold in the legend).
        every_n_epochs: plotting period.
    """

    def __init__(self, threshold: float = 0.08, every_n_epochs: int = 1) -> None:
        if threshold <= 0 or every_n_epochs < 1:
            raise ValueError("threshold must be > 0 and every_n_epochs >= 1")
        self.threshold = threshold
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = getattr(pl_module, "val_metrics", None)
        if metric is None or not epoch_due(trainer, self.every_n_epochs):
            return
        with metric.sync_context(should_sync=trainer.world_size > 1):
            nmes = dim_zero_cat(metric.nmes).cpu() if metric.nmes else None
        if nmes is None or nmes.numel() == 0:
            return
        images = []
        if trainer.is_global_zero:
            images.append(figure_to_uint8(plot_ced({f"epoch {trainer.current_epoch}": nmes}, self.threshold)))
        log_images(trainer, "val/ced", images)  # on every rank: it may synchronise (log_dir)
