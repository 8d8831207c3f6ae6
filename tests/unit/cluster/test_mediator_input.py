"""Mediator input layouts on a hand-computed case (base + one committee model, 4 nodes, k = 2)."""

from __future__ import annotations

import numpy as np
import pytest

from facelit.cluster.knn import KNNGraph
from facelit.cluster.mediator_input import (
    DEFAULT_STRUCTURE,
    iter_mediator_inputs,
    mediator_input_names,
    mediator_input_size,
    mediator_inputs,
)

BASE = KNNGraph(np.array([[1, 2], [0, 2], [1, 0], [2, 1]]),
                np.array([[.9, .5], [.9, .7], [.7, .5], [.3, .2]], dtype=np.float32))
COMMITTEE = KNNGraph(np.array([[1, 3], [2, 3], [1, 0], [0, 1]]),
                     np.array([[.8, .6], [.4, .2], [.9, .1], [.5, .5]], dtype=np.float32))
X_BASE = np.array([[1, 0], [.6, .8], [0, 1], [-1, 0]], dtype=np.float32)
X_COMMITTEE = np.array([[1, 0], [1, 0], [.8, .6], [0, 1]], dtype=np.float32)
PAIRS = np.array([[0, 1], [0, 2], [2, 3]])
GRAPHS, FEATURES = [BASE, COMMITTEE], [X_BASE, X_COMMITTEE]
# relationship: (0,1) 1 in kNN_c(0); (0,2) 0 in kNN_c(2); (2,3) neither way
REL_AFF = [[1, .6, 1], [1, 0, .8], [0, 0, .6]]


def test_sizes_and_names():
    assert DEFAULT_STRUCTURE == "mean_var"
    for n in (0, 1, 4):
        assert mediator_input_size(n, "mean_var") == 6 * n + 5
        assert mediator_input_size(n, "common_neighbours") == 3 * n + 2
    assert mediator_input_names(1, "common_neighbours") == ["rel_1", "aff_0", "aff_1", "cn_0", "cn_1"]
    assert mediator_input_names(1)[3:7] == ["mean_i_0", "var_i_0", "mean_j_0", "var_j_0"]


def test_mean_var_hand_case():
    # node (mean, var) of the k sims -- base: 0 (.7,.04) 1 (.8,.01) 2 (.6,.01) 3 (.25,.0025);
    # committee: 0 (.7,.01) 1 (.3,.01) 2 (.5,.16) 3 (.5,0)
    expected = np.array([
        REL_AFF[0] + [.7, .04, .8, .01] + [.7, .01, .3, .01],
        REL_AFF[1] + [.7, .04, .6, .01] + [.7, .01, .5, .16],
        REL_AFF[2] + [.6, .01, .25, .0025] + [.5, .16, .5, 0],
    ])
    got = mediator_inputs(PAIRS, GRAPHS, FEATURES, "mean_var")
    assert got.dtype == np.float32 and got.shape == (3, 11)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_common_neighbours_hand_case():
    # closed neighbourhoods -- base: {0,1,2} {1,0,2} {2,1,0} {3,2,1};
    # committee: {0,1,3} {1,2,3} {2,1,0} {3,0,1}
    expected = np.array([REL_AFF[0] + [3, 2], REL_AFF[1] + [3, 2], REL_AFF[2] + [2, 2]])
    got = mediator_inputs(PAIRS, GRAPHS, FEATURES, "common_neighbours")
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_chunks_equal_whole():
    whole = mediator_inputs(PAIRS, GRAPHS, FEATURES)
    parts = dict(iter_mediator_inputs(PAIRS, GRAPHS, FEATURES, chunk_size=2))
    assert sorted(parts) == [0, 2]
    np.testing.assert_array_equal(np.concatenate([parts[0], parts[2]]), whole)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown mediator structure 'degree'"):
        mediator_inputs(PAIRS, GRAPHS, FEATURES, "degree")
    with pytest.raises(ValueError, match="2 graphs and 1 feature matrices"):
        mediator_inputs(PAIRS, GRAPHS, FEATURES[:1])
    with pytest.raises(ValueError, match="model 1: graph has 4 nodes and features 3 rows"):
        mediator_inputs(PAIRS, GRAPHS, [X_BASE, X_COMMITTEE[:3]])
    with pytest.raises(ValueError, match=r"row 0 = \[0, 4\] has a node outside \[0, 4\)"):
        mediator_inputs(np.array([[0, 4]]), GRAPHS, FEATURES)
