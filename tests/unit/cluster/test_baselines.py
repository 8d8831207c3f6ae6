"""Baselines: single-model kNN propagation, committee voting, scikit-learn reference clusterers;
and the two CDP plots."""

from __future__ import annotations

import numpy as np
import pytest

from facelit.cluster.baselines import committee_vote, knn_propagation, reference_clusterer
from facelit.cluster.knn import KNNGraph, exact_knn
from facelit.cluster.metrics import cluster_metrics, threshold_sweep
from facelit.cluster.pairs import candidate_pairs, candidate_pairs_with_sims
from facelit.cluster.plots import plot_cluster_sizes, plot_precision_recall_vs_threshold
from facelit.viz import figure_to_uint8


def _blobs(seed: int = 0, classes: int = 8, per_class: int = 20, noise: float = 0.25):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16))
    gt = np.repeat(np.arange(classes), per_class)
    x = centres[gt] / np.linalg.norm(centres[gt], axis=1, keepdims=True)
    x = x + noise * rng.normal(size=(len(gt), 16)) / 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), gt


def test_pairs_with_sims_hand_case():
    g = KNNGraph(np.array([[1, 2], [0, 2], [1, 0]]), np.array([[.9, .3], [.9, .5], [.5, .3]], np.float32))
    pairs, sims = candidate_pairs_with_sims(g)
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 2]])
    np.testing.assert_allclose(sims, [.9, .3, .5])


def test_knn_propagation_recovers_blobs():
    x, gt = _blobs()
    labels = knn_propagation(exact_knn(x, 5, progress=False), threshold=0.8, progress=False)
    assert cluster_metrics(labels, gt)["pairwise_fscore"] > 0.95
    assert (knn_propagation(exact_knn(x, 5, progress=False), threshold=1.0, progress=False) == -1).all()


def test_committee_vote_hand_case():
    pairs = np.array([[0, 1], [0, 2], [2, 3]])
    c1 = KNNGraph(np.array([[1], [2], [0], [1]]), np.zeros((4, 1), np.float32))  # relates (0,1), (0,2)
    c2 = KNNGraph(np.array([[1], [0], [3], [0]]), np.zeros((4, 1), np.float32))  # relates (0,1), (2,3)
    sims = np.array([0.9, 0.9, 0.4])
    np.testing.assert_array_equal(committee_vote(pairs, [c1, c2], sims, 2, 0.5), [True, False, False])
    np.testing.assert_array_equal(committee_vote(pairs, [c1, c2], sims, 1, 0.5), [True, True, False])
    np.testing.assert_array_equal(committee_vote(pairs, [c1, c2], sims, 1, 0.3), [True, True, True])
    with pytest.raises(ValueError, match=r"accept_num must be in \[1, 2\]"):
        committee_vote(pairs, [c1, c2], sims, 3, 0.5)


@pytest.mark.parametrize("method", ["kmeans", "hac"])
def test_reference_clusterers(method):
    x, gt = _blobs()
    labels = reference_clusterer(x, method, num_classes=8)
    assert labels.shape == gt.shape and labels.dtype == np.int64
    assert cluster_metrics(labels, gt)["pairwise_fscore"] > 0.9


def test_dbscan_noise_is_unlabelled():
    x, gt = _blobs()
    x = np.concatenate([x, np.eye(16, dtype=np.float32)[:3]])  # three isolated points
    labels = reference_clusterer(x, "dbscan", eps=0.1, min_samples=3)
    assert (labels[-3:] == -1).all()
    assert cluster_metrics(labels[:-3], gt)["pairwise_fscore"] > 0.9
    with pytest.raises(ValueError, match="kmeans needs num_classes"):
        reference_clusterer(x, "kmeans")
    with pytest.raises(ValueError, match="unknown reference clusterer 'spectral'"):
        reference_clusterer(x, "spectral")


def test_plots_render():
    x, gt = _blobs()
    pairs, sims = candidate_pairs_with_sims(exact_knn(x, 5, progress=False))
    assert len(pairs) == len(candidate_pairs(exact_knn(x, 5, progress=False)))
    sweep = threshold_sweep(pairs, sims, gt, [0.5, 0.7, 0.9], progress=False)
    for fig in (plot_precision_recall_vs_threshold(sweep, title="pr"),
                plot_cluster_sizes(knn_propagation(exact_knn(x, 5, progress=False), 0.8, progress=False))):
        img = figure_to_uint8(fig)
        assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0
    figure_to_uint8(plot_cluster_sizes(np.full(4, -1)))  # no cluster: an empty histogram, no error
