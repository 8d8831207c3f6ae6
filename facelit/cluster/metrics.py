"""Clustering metrics of pseudo-labels against identities (CDP evaluation).

Conventions (``pred`` -1 = node left unlabelled by the propagation):

- ``pairwise_*``: the official ``eval_cluster.fscore`` over the labelled nodes only ("singular
  removed"): with n_ij the contingency counts, a_j the predicted cluster sizes, b_i the class sizes
  and n the node count, TP = sum n_ij^2 - n, precision = TP / (sum a_j^2 - n),
  recall = TP / (sum b_i^2 - n) (ordered pairs of distinct nodes; the ratios equal those of
  unordered pairs);
- ``pairwise_*_all``: the same with every unlabelled node its own singleton cluster ("singular kept");
- ``bcubed_*``: per-node precision |C(i) & L(i)| / |C(i)| and recall |C(i) & L(i)| / |L(i)| averaged
  over the labelled nodes (C = predicted cluster, L = identity class);
- ``nmi``: ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic mean) over labelled nodes;
- ``labelled_fraction``: labelled nodes / all nodes.

A ratio whose denominator is empty (no predicted pair, no labelled node) is 0, and so is an F-score
with precision + recall = 0. All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facelit.cluster.io import UNLABELLED

__all__ = [
    "METRIC_KEYS", "bcubed", "cluster_metrics", "pairwise_fscore", "singletons_kept", "threshold_sweep",
]

METRIC_KEYS = (
    "pairwise_precision", "pairwise_recall", "pairwise_fscore",
    "pairwise_precision_all", "pairwise_recall_all", "pairwise_fscore_all",
    "bcubed_precision", "bcubed_recall", "bcubed_fscore",
    "nmi", "labelled_fraction",
)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _f(p: float, r: float) -> float:
    return _ratio(2 * p * r, p + r)


def _contingency(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Contingency of (N,) labels: the non-zero counts n_ij, each node's cell (N,), and each node's
    compact cluster id (N,) and class id (N,)."""
    p = np.unique(pred, return_inverse=True)[1].reshape(-1)
    g = np.unique(gt, return_inverse=True)[1].reshape(-1)
    _, cell, counts = np.unique(g * (p.max(initial=0) + 1) + p, return_inverse=True, return_counts=True)
    return counts, cell.reshape(-1), p, g


def pairwise_fscore(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F) of same-cluster pairs against same-identity pairs, (N,) labels each."""
    n = len(gt)
    counts, _, p, g = _contingency(pred, gt)
    cluster_sizes, class_sizes = np.bincount(p), np.bincount(g)
    tp = float(np.dot(counts, counts)) - n
    precision = _ratio(tp, float(np.dot(cluster_sizes, cluster_sizes)) - n)
    recall = _ratio(tp, float(np.dot(class_sizes, class_sizes)) - n)
    return precision, recall, _f(precision, recall)


def bcubed(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F) of B-cubed, averaged over the (N,) nodes."""
    if len(gt) == 0:
        return 0.0, 0.0, 0.0
    counts, cell, p, g = _contingency(pred, gt)
    shared = counts[cell].astype(np.float64)
    precision = float(np.mean(shared / np.bincount(p)[p]))
    recall = float(np.mean(shared / np.bincount(g)[g]))
    return precision, recall, _f(precision, recall)


def singletons_kept(pred: np.ndarray) -> np.ndarray:
    """(N,) labels with each unlabelled (-1) node moved to a new singleton cluster."""
    out = np.array(pred, dtype=np.int64)
    free = out == UNLABELLED
    out[free] = out.max(initial=-1) + 1 + np.arange(int(free.sum()))
    return out


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 1 or gt.ndim != 1 or len(pred) != len(gt):
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be 1-D with one label per node")
    for name, a, lowest in (("pred", pred, UNLABELLED), ("gt", gt, 0)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} labels must be integers, got dtype {a.dtype}")
        if len(a) and a.min() < lowest:
            row = int(np.flatnonzero(a < lowest)[0])
            raise ValueError(f"{name} row {row}: label {int(a[row])} below {lowest}")
    return pred.astype(np.int64), gt.astype(np.int64)


def cluster_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All ``METRIC_KEYS`` for (N,) predicted labels (-1 = unlabelled) against (N,) identities."""
    from sklearn.metrics import normalized_mutual_info_score  # heavy import, only needed here

    pred, gt = _check(pred, gt)
    lab = pred != UNLABELLED
    out = dict(zip(("pairwise_precision", "pairwise_recall", "pairwise_fscore"),
                   pairwise_fscore(pred[lab], gt[lab]), strict=True))
    out |= dict(zip(("pairwise_precision_all", "pairwise_recall_all", "pairwise_fscore_all"),
                    pairwise_fscore(singletons_kept(pred), gt), strict=True))
    out |= dict(zip(("bcubed_precision", "bcubed_recall", "bcubed_fscore"), bcubed(pred[lab], gt[lab]),
                    strict=True))
    out["nmi"] = float(normalized_mutual_info_score(gt[lab], pred[lab])) if lab.any() else 0.0
    out["labelled_fraction"] = _ratio(lab.sum(), len(pred))
    return out


def threshold_sweep(pairs: np.ndarray, scores: np.ndarray, gt: np.ndarray, thresholds: Sequence[float],
                    **propagate_kw: Any) -> list[dict[str, float]]:
    """``cluster_metrics`` of ``propagate`` at each threshold (for plots on a validation split).

    Args:
        pairs: (P, 2) scored pairs; scores: (P,); gt: (N,) identities (N = number of nodes).
        thresholds: pair-score thresholds to propagate with.
        propagate_kw: other ``propagate`` arguments (max_size, step, max_iter, singletons, progress).

    Returns:
        One dict per threshold: ``"threshold"`` plus ``METRIC_KEYS``.
    """
    from facelit.cluster.propagate import propagate

    gt = np.asarray(gt)
    return [{"threshold": float(t)} | cluster_metrics(propagate(pairs, scores, len(gt), threshold=float(t),
                                                                **propagate_kw), gt)
            for t in thresholds]
