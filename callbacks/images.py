"""Send images to whatever loggers are active (W&B, TensorBoard, or PNG files for CSV/no logger)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image

__all__ = ["epoch_due", "log_images"]


def epoch_due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Whether a visual callback draws in this validation: not in the sanity check, every n-th epoch."""
    return not trainer.sanity_checking and trainer.current_epoch % every_n_epochs == 0


def log_images(trainer: pl.Trainer, key: str, images: list[np.ndarray], captions: list[str] | None = None) -> list[Path]:
    """Log uint8 (H, W, 3) images under ``key`` at the current global step.

    Call it on every rank (under DDP it reads ``trainer.log_dir``, a collective); only rank 0
    writes, and other ranks may pass an empty list.

    W&B receives ``wandb.Image``s, TensorBoard ``add_image``; every other logger (CSV) and runs with
    no logger get PNG files under ``<log_dir>/images/<key>/step_<N>_<i>.png`` so that nothing is lost.

    Returns:
        The PNG paths written (empty when only W&B/TensorBoard received the images).
    """
    step = trainer.global_step
    written: list[Path] = []
    needs_files = not trainer.loggers
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            if images:
                extra = {"caption": list(captions)} if captions else {}
                logger.log_image(key=key, images=list(images), step=step, **extra)
        elif kind == "TensorBoardLogger":
            for i, img in enumerate(images):
                logger.experiment.add_image(f"{key}/{i}", img, step, dataformats="HWC")
        else:
            needs_files = True
    if needs_files:
        # trainer.log_dir broadcasts from rank 0 under DDP: every rank must ask, not only rank 0.
        log_dir = trainer.log_dir or trainer.default_root_dir
    if needs_files and trainer.is_global_zero:
        root = Path(log_dir) / "images" / key.replace("/", "_")
        root.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            path = root / f"step_{step:07d}_{i}.png"
            Image.fromarray(img).save(path)
            written.append(path)
    return written
