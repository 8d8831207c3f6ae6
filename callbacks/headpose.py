"""Head-pose plots: validation error against ground-truth yaw, and the source-weight histogram."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from callbacks.images import epoch_due, log_images
from facelit.viz import figure_to_uint8

__all__ = ["HeadPosePlots", "error_by_yaw", "plot_error_by_yaw", "plot_weight_histogram"]

YAW_BIN_WIDTH = 10.0


def error_by_yaw(
    pred: torch.Tensor, target: torch.Tensor, width: float = YAW_BIN_WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute error (mean of the three angles) per ground-truth yaw bin.

    Args:
        pred, target: (N, 3) yaw, pitch, roll in degrees.
        width: bin width in degrees.

    Returns:
        bin centres (K,) and MAE per bin (K,) for the non-empty bins.
    """
    err = (pred - target).abs().mean(-1).cpu().numpy()
    yaw = target[:, 0].cpu().numpy()
    bins = np.floor(yaw / width).astype(int)
    keys = np.unique(bins)
    return (keys + 0.5) * width, np.array([err[bins == k].mean() for k in keys])


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def plot_error_by_yaw(curves: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """(H, W, 3) uint8 plot of MAE vs ground-truth yaw, one line per name -> (pred, target)."""
    fig, ax = _figure("error vs yaw", "ground-truth yaw (deg)", "MAE (deg)")
    for name, (pred, target) in curves.items():
        centres, mae = error_by_yaw(pred, target)
        ax.plot(centres, mae, marker="o", label=name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return figure_to_uint8(fig)


def plot_weight_histogram(poses: torch.Tensor, weights: torch.Tensor, bins: int = 36) -> np.ndarray:
    """(H, W, 3) uint8: source yaw histogram, uniform vs weighted, and the weighted yaw-pitch map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    yaw, pitch = poses[:, 0].numpy(), poses[:, 1].numpy()
    w = weights.double().numpy()
    fig = Figure(figsize=(9.0, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.hist(yaw, bins=bins, density=True, alpha=0.5, label="source (uniform)")
    ax1.hist(yaw, bins=bins, weights=w, density=True, alpha=0.5, label="source (weighted)")
    ax1.set_xlabel("yaw (deg)")
    ax1.legend(fontsize="small")
    ax2.hist2d(yaw, pitch, bins=bins // 2, weights=w)
    ax2.set_xlabel("yaw (deg)")
    ax2.set_ylabel("pitch (deg)")
    ax2.set_title("source weight over pose space")
    fig.tight_layout()
    return figure_to_uint8(fig)


class HeadPosePlots(pl.Callback):
    """After each validation, log ``val/error_by_yaw`` from the module's ``val_metrics`` (a dict of
    :class:`facelit.metrics.headpose.HeadPoseMAE` per domain; this rank's samples) and, once the
    module has ``source_weights``, ``adapt/source_weights`` (histograms over the datamodule's
    source labels).

    Args:
        every_n_epochs: plotting period.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError("every_n_epochs must be >= 1")
        self.every_n_epochs = every_n_epochs
        self._weights_drawn = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = getattr(pl_module, "val_metrics", None)
        if metrics is None or not epoch_due(trainer, self.every_n_epochs):
            return
        curves = {name: m.samples() for name, m in metrics.items() if m.update_count > 0}
        images = [plot_error_by_yaw(curves)] if curves and trainer.is_global_zero else []
        log_images(trainer, "val/error_by_yaw", images)
        weights = getattr(pl_module, "source_weights", None)
        dm = getattr(trainer, "datamodule", None)
        if weights is not None and not self._weights_drawn and hasattr(dm, "source_poses"):
            images = [plot_weight_histogram(dm.source_poses(), weights)] if trainer.is_global_zero else []
            log_images(trainer, "adapt/source_weights", images)
            self._weights_drawn = True
