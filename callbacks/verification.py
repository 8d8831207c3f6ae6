"""Verification figures: the ROC of the last validation and a few identities' embeddings on the sphere."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from callbacks.images import log_images
from facelit.viz import figure_to_uint8

__all__ = ["VerificationPlots", "plot_roc", "plot_sphere_embedding", "sphere_projection"]


def plot_roc(fpr: torch.Tensor, tpr: torch.Tensor, title: str):
    """ROC with a logarithmic false-accept axis (the TAR@FAR reading)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.5), dpi=100)
    keep = fpr > 0
    ax.semilogx(fpr[keep].numpy(), tpr[keep].numpy())
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def sphere_projection(features: torch.Tensor, dims: int = 3) -> torch.Tensor:
    """(N, D) features -> (N, dims) unit vectors: the features themselves when D == dims, else
    their top principal directions (of the L2-normalised features), renormalised onto the sphere."""
    unit = F.normalize(features.double(), dim=1)
    if unit.shape[1] > dims:
        centred = unit - unit.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        unit = unit @ v[:dims].t()
    return F.normalize(unit, dim=1).float()


def plot_sphere_embedding(points: torch.Tensor, labels: torch.Tensor, title: str):
    """Scatter (N, 2) points on the circle or (N, 3) points on the sphere, one colour per label."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 4), dpi=100)
    three = points.shape[1] == 3
    ax = fig.add_subplot(projection="3d") if three else fig.add_subplot()
    for k, label in enumerate(torch.unique(labels).tolist()):
        p = points[labels == label].numpy()
        ax.scatter(*p.T, s=8, color=plt.cm.tab10(k % 10), label=str(label))
    if not three:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="0.7", lw=0.5)
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class VerificationPlots(pl.Callback):
    """After each validation, log ``val/roc`` (from the module's ``val_metric.last``) and
    ``val/embedding``: the features of ``num_identities`` validation identities on the sphere
    (raw when the embedding has 2 or 3 dimensions, as the paper's figure; else a PCA view).

    Args:
        num_identities: identities shown (those with the most images).
        max_per_identity: images per identity.
    """

    def __init__(self, num_identities: int = 6, max_per_identity: int = 30) -> None:
        if num_identities < 1 or max_per_identity < 1:
            raise ValueError("num_identities and max_per_identity must be >= 1")
        self.num_identities, self.max_per_identity = num_identities, max_per_identity

    @torch.no_grad()
    def _embedding(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        images = getattr(getattr(trainer.datamodule, "val_set", None), "images", None)
        samples = getattr(images, "samples", None)  # a cached synthetic pair set
        if samples is None:
            return None
        labels = torch.stack([s["identity"] for s in samples])
        ids, counts = torch.unique(labels, return_counts=True)
        chosen = ids[torch.argsort(counts, descending=True)[: self.num_identities]]
        index = torch.cat([torch.nonzero(labels == i).squeeze(1)[: self.max_per_identity] for i in chosen])
        batch = torch.stack([images[int(i)]["image"] for i in index]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        feats = pl_module(batch).cpu()
        pl_module.train(was_training)
        dims = 2 if feats.shape[1] == 2 else 3
        return plot_sphere_embedding(
            sphere_projection(feats, dims), labels[index], f"step {trainer.global_step}"
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = getattr(getattr(pl_module, "val_metric", None), "last", None)
        if trainer.sanity_checking or not last:
            return
        figures = []
        if trainer.is_global_zero:
            title = f"step {trainer.global_step}: accuracy {100 * float(last['accuracy']):.2f} %"
            figures.append(plot_roc(last["fpr"], last["tpr"], title))
            emb = self._embedding(trainer, pl_module)
            if emb is not None:
                figures.append(emb)
        import matplotlib.pyplot as plt

        arrays = [figure_to_uint8(f) for f in figures]
        for fig in figures:
            plt.close(fig)
        log_images(trainer, "val/roc", arrays[:1])  # on every rank: it may synchronise (log_dir)
        log_images(trainer, "val/embedding", arrays[1:])
