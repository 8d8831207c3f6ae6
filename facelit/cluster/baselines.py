"""Baselines the CDP mediator is compared against.

- ``knn_propagation``: single model, no committee: keep the base kNN pairs whose similarity is above
  a threshold, then ``propagate`` (official ``sample`` with an empty committee);
- ``committee_vote``: keep a base pair when at least ``accept_num`` committee models relate it and
  its base similarity is above a threshold (official ``vote``; a member votes when the pair is in
  its kNN graph either way round, the relationship input of the mediator);
- ``reference_clusterer``: scikit-learn k-means (true number of classes), HAC, DBSCAN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facelit.cluster.io import UNLABELLED
from facelit.cluster.knn import KNNGraph
from facelit.cluster.mediator_input import relationship
from facelit.cluster.pairs import candidate_pairs_with_sims
from facelit.cluster.propagate import propagate

__all__ = ["HAC_MAX_NODES", "REFERENCE_METHODS", "committee_vote", "knn_propagation", "reference_clusterer"]

HAC_MAX_NODES = 15_000
"""HAC keeps the N (N - 1) / 2 pairwise distances (float64, 0.9 GB at 15,000 nodes): refused beyond."""
REFERENCE_METHODS = ("kmeans", "hac", "dbscan")


def knn_propagation(graph: KNNGraph, threshold: float, **propagate_kw: Any) -> np.ndarray:
    """(N,) labels from the single-model kNN graph: pairs with cosine > ``threshold`` are propagated.

    ``propagate_kw`` go to ``propagate`` (max_size, step, max_iter, singletons, progress).
    """
    pairs, sims = candidate_pairs_with_sims(graph)
    return propagate(pairs, sims, graph.num_nodes, threshold=threshold, **propagate_kw)


def committee_vote(pairs: np.ndarray, graphs: Sequence[KNNGraph], base_sims: np.ndarray, accept_num: int,
                   threshold: float) -> np.ndarray:
    """(P,) bool mask of the kept pairs.

    Args:
        pairs: (P, 2) candidate pairs of the base graph.
        graphs: the committee's kNN graphs (base model excluded).
        base_sims: (P,) cosine similarity of each pair under the base model.
        accept_num: votes needed, 1 <= accept_num <= len(graphs).
        threshold: base similarity must exceed it.

    Feed ``propagate(pairs[kept], base_sims[kept], N, threshold=threshold)`` for labels.
    """
    if not 1 <= accept_num <= len(graphs):
        raise ValueError(f"accept_num must be in [1, {len(graphs)}] (the committee size), got {accept_num}")
    base_sims = np.asarray(base_sims).reshape(-1)
    if len(base_sims) != len(pairs):
        raise ValueError(f"{len(base_sims)} base similarities for {len(pairs)} pairs")
    votes = np.zeros(len(pairs), dtype=np.int64)
    for g in graphs:
        votes += relationship(pairs, g)
    return (votes >= accept_num) & (base_sims > threshold)


def reference_clusterer(features: np.ndarray, method: str = "kmeans", num_classes: int | None = None,
                        seed: int = 0, **kw: Any) -> np.ndarray:
    """(N,) labels of (N, D) L2-normalised features by a scikit-learn clusterer.

    Args:
        features: (N, D) float32.
        method: ``"kmeans"`` (``KMeans``, needs ``num_classes``), ``"hac"`` (average-linkage
            ``AgglomerativeClustering`` on cosine distance, needs ``num_classes``, at most
            ``HAC_MAX_NODES`` nodes) or ``"dbscan"`` (``DBSCAN`` on cosine distance; its noise
            points get ``-1``, i.e. unlabelled).
        num_classes: number of clusters for k-means and HAC (the true number of identities).
        seed: k-means random state.
        kw: passed to the scikit-learn class (e.g. ``eps``, ``min_samples`` for DBSCAN).
    """
    from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans  # heavy, baselines only

    if method not in REFERENCE_METHODS:
        raise ValueError(f"unknown reference clusterer {method!r}; expected one of {REFERENCE_METHODS}")
    x = np.asarray(features, dtype=np.float32)
    if method in ("kmeans", "hac") and (num_classes is None or num_classes < 1):
        raise ValueError(f"{method} needs num_classes >= 1 (the true number of identities), "
                         f"got {num_classes}")
    if method == "kmeans":
        model = KMeans(n_clusters=num_classes, random_state=seed, **({"n_init": 1} | kw))
    elif method == "hac":
        if len(x) > HAC_MAX_NODES:
            raise ValueError(f"HAC needs an N x N matrix: {len(x)} nodes exceed "
                             f"HAC_MAX_NODES={HAC_MAX_NODES}")
        options = {"linkage": "average", "metric": "cosine"} | kw
        model = AgglomerativeClustering(n_clusters=num_classes, **options)
    else:
        model = DBSCAN(**({"metric": "cosine"} | kw))
    labels = model.fit_predict(x).astype(np.int64)
    labels[labels < 0] = UNLABELLED
    return labels
