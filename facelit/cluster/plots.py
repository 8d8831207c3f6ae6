"""CDP plots: pairwise precision/recall against the pair threshold, and the cluster-size histogram.

Both return a matplotlib ``Figure`` on an Agg canvas (``facelit.viz.figure_to_uint8`` turns it into
an image for loggers; ``fig.savefig`` writes a file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from facelit.cluster.io import UNLABELLED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_cluster_sizes", "plot_precision_recall_vs_threshold"]

_CURVES = (("pairwise_precision", "precision"), ("pairwise_recall", "recall"),
           ("pairwise_fscore", "F-score"), ("labelled_fraction", "labelled fraction"))


def _axes(xlabel: str, ylabel: str, title: str | None) -> tuple[Figure, object]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return fig, ax


def plot_precision_recall_vs_threshold(sweep: Sequence[Mapping[str, float]],
                                       title: str | None = None) -> Figure:
    """Pairwise precision, recall, F-score (labelled nodes) and labelled fraction per threshold.

    ``sweep``: rows of ``metrics.threshold_sweep`` (each with ``"threshold"`` and the metric keys).
    """
    fig, ax = _axes("pair threshold", "fraction", title)
    t = [row["threshold"] for row in sweep]
    for key, name in _CURVES:
        ax.plot(t, [row[key] for row in sweep], marker="o", markersize=3, label=name)
    ax.set_ylim(0.0, 1.02)
    if sweep:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return fig


def plot_cluster_sizes(labels: np.ndarray, title: str | None = None) -> Figure:
    """Histogram of cluster sizes of (N,) labels (unlabelled nodes, -1, are not a cluster).

    Log-spaced bins from 1 to the largest cluster; the legend gives the cluster count.
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels[labels != UNLABELLED])
    sizes = sizes[sizes > 0]
    fig, ax = _axes("cluster size (nodes)", "clusters", title)
    if len(sizes):
        bins = np.unique(np.geomspace(1, sizes.max() + 1, num=30).astype(int))
        ax.hist(sizes, bins=bins if len(bins) > 1 else 1, label=f"{len(sizes)} clusters")
        ax.set_xscale("log")
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig
