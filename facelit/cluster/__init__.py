"""Consensus-Driven Propagation building blocks (Lightning-free): feature/label files, kNN graphs,
candidate pairs, mediator inputs, label propagation, baselines, clustering metrics and plots.

Pipeline order: ``io.load_features`` -> ``knn.knn_graph`` per model -> ``pairs.candidate_pairs`` of the
base graph -> ``mediator_input.mediator_inputs`` -> (mediator scores) -> ``propagate.propagate`` ->
``metrics.cluster_metrics``.
"""

from facelit.cluster.baselines import committee_vote, knn_propagation, reference_clusterer
from facelit.cluster.io import (
    UNLABELLED,
    check_pairs,
    check_same_length,
    load_features,
    load_labels,
    save_features,
    save_labels,
)
from facelit.cluster.knn import DEFAULT_K, KNNGraph, exact_knn, knn_graph, knn_recall
from facelit.cluster.mediator_input import (
    DEFAULT_STRUCTURE,
    STRUCTURES,
    mediator_input_names,
    mediator_input_size,
    mediator_inputs,
)
from facelit.cluster.metrics import METRIC_KEYS, cluster_metrics, threshold_sweep
from facelit.cluster.pairs import candidate_pairs, candidate_pairs_with_sims, pair_cosine, pair_targets
from facelit.cluster.propagate import PropagationResult, propagate, propagate_detailed

__all__ = [
    "DEFAULT_K",
    "DEFAULT_STRUCTURE",
    "METRIC_KEYS",
    "STRUCTURES",
    "UNLABELLED",
    "KNNGraph",
    "PropagationResult",
    "candidate_pairs",
    "candidate_pairs_with_sims",
    "check_pairs",
    "check_same_length",
    "cluster_metrics",
    "committee_vote",
    "exact_knn",
    "knn_graph",
    "knn_propagation",
    "knn_recall",
    "load_features",
    "load_labels",
    "mediator_input_names",
    "mediator_input_size",
    "mediator_inputs",
    "pair_cosine",
    "pair_targets",
    "propagate",
    "propagate_detailed",
    "reference_clusterer",
    "save_features",
    "save_labels",
    "threshold_sweep",
]
