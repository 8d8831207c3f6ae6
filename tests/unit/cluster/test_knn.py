"""kNN graphs against brute force, self exclusion, pairs de-duplication."""

from __future__ import annotations

import numpy as np
import pytest

from facelit.cluster.knn import KNNGraph, exact_knn, knn_graph, knn_recall
from facelit.cluster.pairs import candidate_pairs, pair_cosine, pair_targets


def _clustered(n: int = 600, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    x = centres[rng.integers(0, 12, n)] + 0.5 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, axis=1)


@pytest.mark.parametrize("method", ["torch", "flat"])
def test_exact_methods_match_brute_force(method):
    x = _clustered()
    g = knn_graph(x, k=7, method=method, progress=False)
    idx, sims = _brute(x, 7)
    assert g.indices.shape == (600, 7) and g.indices.dtype == np.int64 and g.sims.dtype == np.float32
    np.testing.assert_allclose(g.sims, sims, atol=1e-5)
    assert (np.diff(g.sims, axis=1) <= 1e-6).all()  # decreasing similarity
    assert (g.indices != np.arange(600)[:, None]).all()
    # neighbour sets equal up to float ties at the k-th place
    assert knn_recall(g, KNNGraph(idx, sims.astype(np.float32))) > 0.999


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_recall_and_auto(method):
    x = _clustered(1500)
    exact = exact_knn(x, 10, progress=False)
    approx = knn_graph(x, k=10, method=method, progress=False)
    assert knn_recall(approx, exact) > 0.95
    assert (approx.indices != np.arange(1500)[:, None]).all()
    auto_small = knn_graph(x, k=10, method="auto", exact_max=2000, progress=False)
    np.testing.assert_allclose(auto_small.sims, exact.sims, atol=1e-5)


@pytest.mark.parametrize("method", ["torch", "flat", "hnsw", "ivf"])
def test_self_excluded_with_duplicates(method):
    x = _clustered(200)
    x[1] = x[0]
    x[2] = x[0]
    g = knn_graph(x, k=5, method=method, progress=False)
    assert set(g.indices[0, :2]) == {1, 2}
    assert (g.indices != np.arange(200)[:, None]).all()


def test_exact_knn_on_query_sample_and_recall():
    x = _clustered()
    full = exact_knn(x, 5, progress=False)
    rows = np.array([3, 10, 599])
    part = exact_knn(x, 5, queries=rows, progress=False)
    np.testing.assert_array_equal(part.indices, full.indices[rows])
    assert knn_recall(full, part, rows=rows) == 1.0
    # hand case: row 0 finds 2 of 3, row 1 finds 1 of 3 -> 3 / 6
    a = KNNGraph(np.array([[1, 2, 9], [0, 7, 8]]), np.zeros((2, 3), np.float32))
    e = KNNGraph(np.array([[2, 1, 3], [8, 5, 6]]), np.zeros((2, 3), np.float32))
    assert knn_recall(a, e) == 0.5


def test_bad_knn_input(tmp_path):
    with pytest.raises(ValueError, match="more than k nodes"):
        knn_graph(np.eye(3, dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="unknown kNN method 'lsh'"):
        knn_graph(np.eye(5, dtype=np.float32), k=2, method="lsh")
    g = exact_knn(_clustered(50), 4, progress=False)
    g.save(tmp_path / "g.npz")
    back = KNNGraph.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(back.indices, g.indices)
    np.savez(tmp_path / "bad.npz", idx=g.indices)
    with pytest.raises(ValueError, match=r"bad\.npz: not a kNN graph file"):
        KNNGraph.load(tmp_path / "bad.npz")


def test_candidate_pairs_deduplicated_sorted():
    g = KNNGraph(np.array([[1, 2], [0, 2], [0, 1], [0, 1]]), np.zeros((4, 2), np.float32))
    np.testing.assert_array_equal(candidate_pairs(g), [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3]])
    x = _clustered(300)
    p = candidate_pairs(exact_knn(x, 6, progress=False))
    assert (p[:, 0] < p[:, 1]).all() and len(np.unique(p, axis=0)) == len(p)
    assert (np.lexsort((p[:, 1], p[:, 0])) == np.arange(len(p))).all()


def test_pair_cosine_and_targets():
    x = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    p = np.array([[0, 1], [1, 2], [0, 2]])
    np.testing.assert_allclose(pair_cosine(x, p), [0.6, 0.8, 0.0], atol=1e-7)
    np.testing.assert_array_equal(pair_targets(p, np.array([4, 4, 1])), [1, 0, 0])


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@pytest.mark.gpu
@pytest.mark.skipif(_faiss_gpus() == 0, reason="needs faiss with a GPU (faiss-gpu build and a device)")
def test_auto_uses_exact_gpu_index_at_any_size():
    x = _clustered(1500)
    g = knn_graph(x, k=10, method="auto", exact_max=100, progress=False)  # GPU: flat even above exact_max
    np.testing.assert_allclose(g.sims, exact_knn(x, 10, progress=False).sims, atol=1e-4)
