"""k-nearest-neighbour graphs of L2-normalised features under cosine similarity (CDP step 4).

Every method returns the same ``KNNGraph``: for each node its ``k`` nearest *other* nodes (the
node itself is excluded, also when duplicates tie with it), sorted by decreasing similarity.
Memory stays bounded: no method builds an N x N matrix.

Methods:

- ``"torch"``: exact, blocked matrix product + top-k (``MAX_BLOCK_ELEMENTS`` similarities at once);
  the fallback for small sets and the reference of the tests;
- ``"flat"``: exact, faiss ``IndexFlatIP`` (on the GPU when faiss has one);
- ``"hnsw"``: approximate, faiss ``IndexHNSWFlat`` with inner-product metric;
- ``"ivf"``: approximate, faiss ``IndexIVFFlat`` (k-means coarse lists, ``ivf_nprobe`` lists scanned
  per query); builds several times faster than HNSW on a loaded CPU (``benchmarks/cdp_graph.py``);
- ``"auto"``: faiss GPU flat when a GPU is available, else ``"flat"`` up to ``exact_max`` nodes and
  ``"hnsw"`` beyond.

Threads: faiss follows ``faiss.omp_set_num_threads`` (default: ``OMP_NUM_THREADS``), torch
``torch.set_num_threads``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "DEFAULT_K",
    "EXACT_MAX",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_NPROBE",
    "KNN_METHODS",
    "KNNGraph",
    "MAX_BLOCK_ELEMENTS",
    "exact_knn",
    "knn_graph",
    "knn_recall",
]

DEFAULT_K = 15
"""Neighbours per node, as the official CDP configs."""
EXACT_MAX = 50_000
"""Largest set that ``method="auto"`` searches exactly on the CPU."""
HNSW_M = 32
"""HNSW links per node."""
HNSW_EF_CONSTRUCTION = 64
"""HNSW candidate list while building."""
HNSW_EF_SEARCH = 64
"""HNSW candidate list while searching (raised to k + 1 when smaller)."""
IVF_LISTS_PER_SQRT_N = 4
"""IVF lists: 4 sqrt(N), faiss's rule of thumb."""
IVF_NPROBE = 8
"""IVF lists scanned per query."""
IVF_TRAIN_PER_LIST = 16
"""k-means training points per IVF list (a random sample of the nodes)."""
IVF_TRAIN_ITERATIONS = 10
MAX_BLOCK_ELEMENTS = 1 << 24
"""Similarities held at once by the blocked exact search (64 MiB of float32)."""
KNN_METHODS = ("auto", "torch", "flat", "hnsw", "ivf")
_ADD_CHUNK = 20_000  # rows per faiss add/search call, so the progress bar moves


@dataclass(frozen=True)
class KNNGraph:
    """Neighbour lists of N nodes.

    Attributes:
        indices: (N, k) int64, neighbour ids, self excluded, by decreasing similarity.
        sims: (N, k) float32, the matching cosine similarities.
    """

    indices: np.ndarray
    sims: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.shape != self.sims.shape or self.indices.ndim != 2:
            raise ValueError(f"indices {self.indices.shape} and sims {self.sims.shape} must both be (N, k)")

    @property
    def num_nodes(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def save(self, path: str | Path) -> None:
        """Write ``indices`` and ``sims`` to one ``.npz`` file."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, indices=self.indices, sims=self.sims)

    @classmethod
    def load(cls, path: str | Path) -> KNNGraph:
        """Read a graph written by ``save``; the error names the file when a key is missing."""
        with np.load(path, allow_pickle=False) as f:
            missing = {"indices", "sims"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: not a kNN graph file (missing {sorted(missing)})")
            return cls(f["indices"].astype(np.int64, copy=False), f["sims"].astype(np.float32, copy=False))


def _check_features(features: np.ndarray, k: int) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if features.shape[0] <= k:
        raise ValueError(f"k={k} neighbours need more than k nodes, got {features.shape[0]}")
    return np.ascontiguousarray(features, dtype=np.float32)


def exact_knn(features: np.ndarray, k: int = DEFAULT_K, queries: np.ndarray | None = None,
              progress: bool = True) -> KNNGraph:
    """Exact neighbours by blocked matrix products in torch.

    Args:
        features: (N, D) float32, L2-normalised.
        k: neighbours per node.
        queries: (Q,) node ids to search for (default: all N), e.g. a sample for recall checks.
        progress: show a progress bar.

    Returns:
        ``KNNGraph`` with (Q, k) arrays (row q = node ``queries[q]``).
    """
    x = torch.from_numpy(_check_features(features, k))
    n = x.shape[0]
    ids = torch.arange(n) if queries is None else torch.as_tensor(np.asarray(queries, dtype=np.int64))
    block = max(1, MAX_BLOCK_ELEMENTS // n)
    indices = torch.empty(len(ids), k, dtype=torch.int64)
    sims = torch.empty(len(ids), k, dtype=torch.float32)
    for start in tqdm(range(0, len(ids), block), desc="exact kNN", disable=not progress, unit="block"):
        q = ids[start:start + block]
        s = x[q] @ x.T  # (b, N)
        s[torch.arange(len(q)), q] = -torch.inf
        vals, idx = s.topk(k, dim=1)
        sims[start:start + len(q)] = vals
        indices[start:start + len(q)] = idx
    return KNNGraph(indices.numpy(), sims.numpy())


def _faiss():
    import faiss  # imported lazily: a heavy import that only graph building needs

    return faiss


def _gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _faiss_search(index, x: np.ndarray, k: int, desc: str, progress: bool) -> KNNGraph:
    """Search every row of ``x`` for k + 1 hits and drop the node itself (or the last hit)."""
    n = x.shape[0]
    indices = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in tqdm(range(0, n, _ADD_CHUNK), desc=desc, disable=not progress, unit="chunk"):
        q = x[start:start + _ADD_CHUNK]
        d, i = index.search(q, k + 1)
        if (i < 0).any():
            row = start + int(np.flatnonzero((i < 0).any(axis=1))[0])
            raise RuntimeError(f"faiss returned fewer than k + 1 = {k + 1} hits for node {row}; "
                               "raise ef_search (HNSW) or lower k")
        is_self = i == np.arange(start, start + len(q))[:, None]
        is_self[~is_self.any(axis=1), -1] = True  # self not among the hits: drop the farthest
        keep = ~is_self
        indices[start:start + len(q)] = i[keep].reshape(len(q), k)
        sims[start:start + len(q)] = d[keep].reshape(len(q), k)
    return KNNGraph(indices, sims)


def _add_chunked(index, x: np.ndarray, desc: str, progress: bool) -> None:
    for start in tqdm(range(0, x.shape[0], _ADD_CHUNK), desc=desc, disable=not progress, unit="chunk"):
        index.add(x[start:start + _ADD_CHUNK])


def _trained_ivf(x: np.ndarray, nprobe: int, seed: int):
    """faiss ``IndexIVFFlat`` (inner product) with its coarse k-means trained on a node sample."""
    faiss = _faiss()
    n, d = x.shape
    nlist = max(1, min(n // IVF_TRAIN_PER_LIST, int(IVF_LISTS_PER_SQRT_N * np.sqrt(n))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = IVF_TRAIN_ITERATIONS
    index.cp.min_points_per_centroid = IVF_TRAIN_PER_LIST
    sample = np.random.default_rng(seed).choice(n, size=min(n, nlist * IVF_TRAIN_PER_LIST), replace=False)
    index.train(x[np.sort(sample)])
    index.nprobe = min(nprobe, nlist)
    return index


def knn_graph(features: np.ndarray, k: int = DEFAULT_K, method: str = "auto", exact_max: int = EXACT_MAX,
              progress: bool = True, hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
              ef_search: int = HNSW_EF_SEARCH, ivf_nprobe: int = IVF_NPROBE, seed: int = 0) -> KNNGraph:
    """kNN graph of (N, D) L2-normalised features under cosine similarity (see the module doc).

    Args:
        features: (N, D) float, L2-normalised rows (``io.load_features`` gives them so).
        k: neighbours per node (self excluded); N must exceed k.
        method: one of ``KNN_METHODS``.
        exact_max: with ``"auto"`` on the CPU, the largest N searched exactly.
        progress: show progress bars.
        hnsw_m, ef_construction, ef_search: HNSW parameters (``"hnsw"`` and large ``"auto"``).
        ivf_nprobe: lists scanned per query (``"ivf"``).
        seed: draws the IVF training sample.

    Returns:
        ``KNNGraph`` with (N, k) ``indices`` int64 and ``sims`` float32.
    """
    if method not in KNN_METHODS:
        raise ValueError(f"unknown kNN method {method!r}; expected one of {KNN_METHODS}")
    x = _check_features(features, k)
    if method == "torch":
        return exact_knn(x, k, progress=progress)
    faiss = _faiss()
    n, d = x.shape
    if method == "auto":
        method = "flat" if n <= exact_max or _gpu_available() else "hnsw"
    if method == "flat":
        index = faiss.IndexFlatIP(d)
        if _gpu_available():
            index = faiss.index_cpu_to_all_gpus(index)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = max(ef_search, k + 1)
    else:
        index = _trained_ivf(x, ivf_nprobe, seed)
    _add_chunked(index, x, f"{method} index", progress)
    return _faiss_search(index, x, k, f"{method} search", progress)


def knn_recall(approx: KNNGraph, exact: KNNGraph, rows: np.ndarray | None = None) -> float:
    """Fraction of the exact neighbours that the approximate graph found, over all rows.

    Args:
        approx: graph to score, (N, k).
        exact: reference graph, (Q, k') with k' <= k; row q is node ``rows[q]`` (default: q).
        rows: (Q,) node ids of ``exact``'s rows.
    """
    a = approx.indices if rows is None else approx.indices[np.asarray(rows)]
    e = exact.indices
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"approx has {a.shape[0]} rows for the {e.shape[0]} rows of exact")
    found = 0
    chunk = max(1, MAX_BLOCK_ELEMENTS // (a.shape[1] * e.shape[1]))
    for start in range(0, len(e), chunk):
        hit = a[start:start + chunk, :, None] == e[start:start + chunk, None, :]
        found += int(hit.any(axis=1).sum())
    return found / e.size
