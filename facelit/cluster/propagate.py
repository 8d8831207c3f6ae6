"""Pseudo-label propagation over scored pairs (CDP step 8), with scipy connected components.

Algorithm (official ``graph_propagation``, vectorised):

1. keep the pairs whose score is above ``threshold``; ``th`` starts at the lowest kept score;
2. connected components of the kept edges; every component of at most ``max_size`` nodes is final;
3. the nodes of the oversized components are re-split: ``th <- th + (1 - th) * step``, keep only
   their edges with score >= ``th``, take components again (a node that loses all its edges becomes
   a final singleton, as in the official code); repeat until nothing is oversized or ``max_iter``
   re-splits ran. At the ``max_iter`` stop each still-oversized component becomes one cluster (the
   official code lumps all remaining nodes into a single cluster; keeping them apart loses nothing);
4. nodes in no kept pair get ``-1`` (``singletons="discard"``) or a singleton cluster each (``"keep"``).

Labels are 0..C-1, numbered by each cluster's smallest node id. Command line::

    python -m facelit.cluster.propagate --pairs PAIRS.npy --scores SCORES.npy --num-nodes N \\
        --threshold T --out PRED.txt [--max-size 600 --step 0.05 --max-iter 100 --singletons discard]

prints one JSON line (clusters, labelled nodes, re-split iterations, final threshold, forced stop).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from facelit.cluster.io import UNLABELLED, check_pairs, load_pairs, load_scores, save_labels

__all__ = [
    "DEFAULT_MAX_ITER",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_STEP",
    "DEFAULT_THRESHOLD",
    "SINGLETON_MODES",
    "PropagationResult",
    "propagate",
    "propagate_detailed",
]

DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_SIZE = 600
"""Largest cluster (official ``max_sz``)."""
DEFAULT_STEP = 0.05
DEFAULT_MAX_ITER = 100
SINGLETON_MODES = ("discard", "keep")


@dataclass(frozen=True)
class PropagationResult:
    """Outcome of ``propagate_detailed``.

    Attributes:
        labels: (N,) int64, cluster ids 0..C-1, ``-1`` for discarded nodes.
        num_clusters: C.
        num_labelled: nodes with a label >= 0.
        kept_pairs: pairs above the threshold.
        iterations: re-split rounds run (0 when no component was oversized).
        final_threshold: ``th`` of the last round (the lowest kept score when none ran).
        forced_stop: True when ``max_iter`` stopped the re-splitting with oversized components left.
    """

    labels: np.ndarray
    num_clusters: int
    num_labelled: int
    kept_pairs: int
    iterations: int
    final_threshold: float
    forced_stop: bool

    def summary(self) -> dict:
        """The scalar fields, for a JSON line."""
        return {k: v for k, v in asdict(self).items() if k != "labels"}


def _components(nodes: np.ndarray, edges: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of the graph on ``nodes`` (sorted ids) with (E, 2) ``edges`` among them.

    ``local`` is an (N,) scratch array mapping node id -> position in ``nodes``. Returns the (n,)
    component id of each node and the component sizes.
    """
    local[nodes] = np.arange(len(nodes))
    e = local[edges]
    adj = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(adj, directed=False)
    return comp, np.bincount(comp)


def propagate_detailed(pairs: np.ndarray, scores: np.ndarray, num_nodes: int,
                       threshold: float = DEFAULT_THRESHOLD, max_size: int = DEFAULT_MAX_SIZE,
                       step: float = DEFAULT_STEP, max_iter: int = DEFAULT_MAX_ITER,
                       singletons: str = "discard", progress: bool = True) -> PropagationResult:
    """Propagate labels over (P, 2) ``pairs`` with (P,) ``scores`` (see the module doc)."""
    if singletons not in SINGLETON_MODES:
        raise ValueError(f"singletons must be one of {SINGLETON_MODES}, got {singletons!r}")
    if max_size < 1 or not 0 < step <= 1 or max_iter < 0:
        raise ValueError(f"need max_size >= 1, 0 < step <= 1, max_iter >= 0; "
                         f"got {max_size}, {step}, {max_iter}")
    pairs = check_pairs(pairs, num_nodes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pairs):
        raise ValueError(f"{len(scores)} scores for {len(pairs)} pairs")
    keep = scores > threshold
    edges, edge_scores = pairs[keep], scores[keep]
    owner = np.full(num_nodes, -1, dtype=np.int64)  # cluster of each node; numbered at the end
    local = np.empty(num_nodes, dtype=np.int64)
    nodes = np.unique(edges)
    th = float(edge_scores.min()) if len(edge_scores) else float(threshold)
    next_cluster, iterations, forced = 0, 0, False
    bar = tqdm(total=max_iter, desc="propagation re-split", disable=not progress, unit="round")
    while len(nodes):
        comp, sizes = _components(nodes, edges, local)
        small = sizes[comp] <= max_size
        owner[nodes[small]] = next_cluster + comp[small]
        next_cluster += len(sizes)
        big = nodes[~small]
        if len(big) == 0:
            break
        if iterations >= max_iter:
            owner[big] = next_cluster + comp[~small]  # forced stop: each oversized component as is
            forced = True
            break
        iterations += 1
        bar.update(1)
        th += (1.0 - th) * step
        in_big = np.zeros(num_nodes, dtype=bool)
        in_big[big] = True
        sel = in_big[edges[:, 0]] & (edge_scores >= th)  # an edge of a big component stays in it
        edges, edge_scores, nodes = edges[sel], edge_scores[sel], big
    bar.close()
    labels = _relabel(owner, singletons)
    return PropagationResult(labels=labels, num_clusters=int(labels.max(initial=-1)) + 1,
                             num_labelled=int((labels != UNLABELLED).sum()), kept_pairs=int(keep.sum()),
                             iterations=iterations, final_threshold=th, forced_stop=forced)


def _relabel(owner: np.ndarray, singletons: str) -> np.ndarray:
    """Number clusters 0..C-1 by smallest member; unowned nodes -> -1 or their own cluster."""
    owner = owner.copy()
    free = owner < 0
    if singletons == "keep":
        owner[free] = owner.max(initial=-1) + 1 + np.arange(int(free.sum()))
        free[:] = False
    labels = np.full(len(owner), UNLABELLED, dtype=np.int64)
    _, first, inverse = np.unique(owner[~free], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    labels[~free] = rank[inverse.reshape(-1)]
    return labels


def propagate(pairs: np.ndarray, scores: np.ndarray, num_nodes: int, threshold: float = DEFAULT_THRESHOLD,
              max_size: int = DEFAULT_MAX_SIZE, step: float = DEFAULT_STEP, max_iter: int = DEFAULT_MAX_ITER,
              singletons: str = "discard", progress: bool = True) -> np.ndarray:
    """(N,) int64 pseudo-labels 0..C-1 (``-1`` for discarded nodes) from scored pairs.

    Args:
        pairs: (P, 2) int node ids in [0, num_nodes).
        scores: (P,) pair scores (mediator probabilities, or similarities for the baselines).
        num_nodes: N.
        threshold: pairs with score > threshold are kept.
        max_size: largest cluster; bigger components are re-split with a rising threshold.
        step: threshold step, ``th <- th + (1 - th) * step``.
        max_iter: re-split rounds before a forced stop.
        singletons: ``"discard"`` (-1) or ``"keep"`` (own cluster) for nodes in no kept pair.
        progress: show a progress bar over re-split rounds.
    """
    return propagate_detailed(pairs, scores, num_nodes, threshold, max_size, step, max_iter, singletons,
                              progress).labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True, help="(P, 2) int .npy")
    parser.add_argument("--scores", required=True, help="(P,) float .npy")
    parser.add_argument("--num-nodes", type=int, required=True)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE)
    parser.add_argument("--step", type=float, default=DEFAULT_STEP)
    parser.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)
    parser.add_argument("--singletons", choices=SINGLETON_MODES, default="discard")
    parser.add_argument("--out", required=True, help="label file to write, one integer per line")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.pairs, args.num_nodes)
    scores = load_scores(args.scores, len(pairs))
    result = propagate_detailed(pairs, scores, args.num_nodes, args.threshold, args.max_size, args.step,
                                args.max_iter, args.singletons)
    save_labels(args.out, result.labels)
    print(json.dumps(result.summary() | {"out": args.out}))


if __name__ == "__main__":
    main()
