"""Per-pair input vectors of the CDP mediator (step 6).

Models: index 0 is the base model, 1..N the committee (N = committee size). For a pair (i, j) the
input row is, column by column:

- relationship, N columns ``rel_c`` (c = 1..N): 1 if j is in committee model c's kNN(i) or i is in
  its kNN(j), else 0 (official ``get_relationship_feat``);
- affinity, N + 1 columns ``aff_m`` (m = 0..N): cosine similarity of i and j under model m;
- structure, by ``structure``:
  - ``"mean_var"`` (the paper, Sec. 3.3), 4 (N + 1) columns, for each model m in turn
    ``mean_i_m, var_i_m, mean_j_m, var_j_m``: mean and (population) variance of the k similarities
    of i's, then j's, neighbour list under model m. F = 6N + 5 in all;
  - ``"common_neighbours"`` (official ``get_structure_feat``), N + 1 columns ``cn_m``: the size of
    the intersection of i's and j's neighbour lists under model m. The official lists come from a
    self-search and so contain the node itself; ``KNNGraph`` excludes it, so each node is added back
    to its own list (closed neighbourhood, k + 1 ids) to count as the official code does.
    F = 3N + 2 in all.

``DEFAULT_STRUCTURE`` is the paper's ``"mean_var"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from facelit.cluster.io import check_pairs
from facelit.cluster.knn import KNNGraph
from facelit.cluster.pairs import PAIR_CHUNK, pair_cosine

__all__ = [
    "DEFAULT_STRUCTURE",
    "STRUCTURES",
    "iter_mediator_inputs",
    "mediator_input_names",
    "mediator_input_size",
    "mediator_inputs",
    "relationship",
]

STRUCTURES = ("mean_var", "common_neighbours")
DEFAULT_STRUCTURE = "mean_var"
_MEAN_VAR_NAMES = ("mean_i", "var_i", "mean_j", "var_j")
_CN_CHUNK = 1 << 16  # pairs per (chunk, k+1, k+1) comparison in the common-neighbour count


def _check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(f"unknown mediator structure {structure!r}; expected one of {STRUCTURES}")


def mediator_input_names(num_committee: int, structure: str = DEFAULT_STRUCTURE) -> list[str]:
    """Column names of the mediator input, in order (see the module doc)."""
    _check_structure(structure)
    models = range(num_committee + 1)
    names = [f"rel_{c}" for c in range(1, num_committee + 1)] + [f"aff_{m}" for m in models]
    if structure == "mean_var":
        return names + [f"{s}_{m}" for m in models for s in _MEAN_VAR_NAMES]
    return names + [f"cn_{m}" for m in models]


def mediator_input_size(num_committee: int, structure: str = DEFAULT_STRUCTURE) -> int:
    """F: 6N + 5 for ``"mean_var"``, 3N + 2 for ``"common_neighbours"`` (N = committee size)."""
    return len(mediator_input_names(num_committee, structure))


def relationship(pairs: np.ndarray, graph: KNNGraph) -> np.ndarray:
    """(P,) bool: j in kNN(i) or i in kNN(j) under ``graph``, for (P, 2) pairs."""
    i, j = pairs[:, 0], pairs[:, 1]
    return (graph.indices[i] == j[:, None]).any(axis=1) | (graph.indices[j] == i[:, None]).any(axis=1)


def _common_neighbours(pairs: np.ndarray, graph: KNNGraph) -> np.ndarray:
    """(P,) count of shared ids in the closed neighbourhoods (node + its k neighbours) of i and j."""
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), _CN_CHUNK):
        p = pairs[start:start + _CN_CHUNK]
        a = np.concatenate((p[:, :1], graph.indices[p[:, 0]]), axis=1)  # (c, k+1)
        b = np.concatenate((p[:, 1:], graph.indices[p[:, 1]]), axis=1)
        out[start:start + len(p)] = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return out


def _check_inputs(pairs: np.ndarray, graphs: Sequence[KNNGraph],
                  features: Sequence[np.ndarray]) -> np.ndarray:
    if len(graphs) == 0 or len(graphs) != len(features):
        raise ValueError(f"need one graph per feature matrix (base first), got {len(graphs)} graphs "
                         f"and {len(features)} feature matrices")
    n = graphs[0].num_nodes
    for m, (g, f) in enumerate(zip(graphs, features, strict=True)):
        if g.num_nodes != n or len(f) != n:
            raise ValueError(f"model {m}: graph has {g.num_nodes} nodes and features {len(f)} rows; "
                             f"the base graph has {n}")
    return check_pairs(pairs, n)


def iter_mediator_inputs(pairs: np.ndarray, graphs: Sequence[KNNGraph], features: Sequence[np.ndarray],
                         structure: str = DEFAULT_STRUCTURE,
                         chunk_size: int = PAIR_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, rows)`` with rows the (c, F) float32 inputs of ``pairs[start:start + c]``.

    Bounded memory for very large pair sets (inference can consume chunk by chunk). Arguments as
    ``mediator_inputs``.
    """
    _check_structure(structure)
    pairs = _check_inputs(pairs, graphs, features)
    if structure == "mean_var":
        node_stats = [np.stack((g.sims.mean(axis=1), g.sims.var(axis=1)), axis=1) for g in graphs]  # (N, 2)
    num_cols = mediator_input_size(len(graphs) - 1, structure)
    for start in range(0, len(pairs), chunk_size):
        p = pairs[start:start + chunk_size]
        cols = [relationship(p, g).astype(np.float32) for g in graphs[1:]]
        cols += [pair_cosine(f, p) for f in features]
        if structure == "mean_var":
            for stats in node_stats:
                cols += [stats[p[:, 0], 0], stats[p[:, 0], 1], stats[p[:, 1], 0], stats[p[:, 1], 1]]
        else:
            cols += [_common_neighbours(p, g) for g in graphs]
        rows = np.stack(cols, axis=1).astype(np.float32, copy=False)
        assert rows.shape[1] == num_cols  # internal invariant of the layout, not user input
        yield start, rows


def mediator_inputs(pairs: np.ndarray, graphs: Sequence[KNNGraph], features: Sequence[np.ndarray],
                    structure: str = DEFAULT_STRUCTURE) -> np.ndarray:
    """(P, F) float32 mediator inputs of (P, 2) pairs (layout in the module doc).

    Args:
        pairs: (P, 2) int node pairs, usually ``candidate_pairs(graphs[0])``.
        graphs: kNN graphs over the same N nodes, base model first, then the N committee models.
        features: the (N, D_m) L2-normalised features of the same models, same order.
        structure: ``"mean_var"`` (paper, default) or ``"common_neighbours"`` (official code).
    """
    out = np.empty((len(pairs), mediator_input_size(len(graphs) - 1, structure)), dtype=np.float32)
    for start, rows in iter_mediator_inputs(pairs, graphs, features, structure):
        out[start:start + len(rows)] = rows
    return out
