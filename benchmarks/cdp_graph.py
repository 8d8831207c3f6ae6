"""CDP graph pipeline at scale: kNN graphs + mediator inference + propagation; prints one JSON object.

Data: synthetic clustered features generated here, deterministic in ``--seed``: ``--classes``
identity centres uniform on the unit sphere of R^D; model m (0 = base, 1..N = committee) sees node i
as ``normalize(centre[class(i)] + noise_i,m)`` with its own Gaussian noise (per-coordinate std
``--noise / sqrt(D)``), so models agree on identities and disagree on noise, as a committee does.

Stages timed (seconds, wall clock): ``knn`` (one graph per model, ``facelit.cluster.knn_graph``),
``pairs`` (candidate pairs of the base graph), ``mediator`` (``iter_mediator_inputs`` streamed in
chunks through a RANDOM-WEIGHT ``MediatorNet`` of the official width, two hidden layers of 3F: the
timing of inference, not a trained model), ``propagation`` (``propagate_detailed``). Random-weight
probabilities carry no structure, so propagation runs on the mean affinity of the models (the
affinity columns of the same inputs) as the pair score, thresholded at ``--threshold``: a stand-in
for a trained mediator whose scores also rank same-identity pairs first. ``total`` = sum of the
four stages (data generation excluded). ``--compare-structures`` also times building the inputs of
both structures (no MLP), one after the other in the same process.

Also reported: kNN recall of every graph against exact search on ``--recall-queries`` sampled
nodes, the peak resident set of the process (``ru_maxrss``, data generation included), and the
pairwise F-score of the propagated labels against the synthetic identities (a sanity check that the
pipeline did real work). On a shared machine wall time depends on the load: the process CPU time
per stage (all threads) and the 1-minute load average at the end are printed with it. Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/cdp_graph.py --nodes 200000 [--dim 256]
        [--committee 4] [--threads 2] [--method auto] [--structure mean_var]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from facelit.cluster.knn import DEFAULT_K, IVF_NPROBE, KNN_METHODS, exact_knn, knn_graph, knn_recall
from facelit.cluster.mediator_input import (
    DEFAULT_STRUCTURE,
    STRUCTURES,
    iter_mediator_inputs,
    mediator_input_names,
)
from facelit.cluster.metrics import pairwise_fscore
from facelit.cluster.pairs import candidate_pairs
from facelit.cluster.propagate import DEFAULT_MAX_SIZE, propagate_detailed
from facelit.nets.mediator import MediatorNet

NODES_PER_CLASS = 80  # the official u200k set: ~200k images of 2,577 identities


def _features(centres: np.ndarray, classes: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """(N, D) float32 unit rows: centre of each node's class plus this model's noise."""
    rng = np.random.default_rng(seed)
    d = centres.shape[1]
    x = np.empty((len(classes), d), dtype=np.float32)
    for start in range(0, len(classes), 100_000):
        c = classes[start:start + 100_000]
        block = centres[c] + rng.standard_normal((len(c), d), dtype=np.float32) * (noise / np.sqrt(d))
        x[start:start + len(c)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=None, help=f"default: nodes / {NODES_PER_CLASS}")
    parser.add_argument("--committee", type=int, default=4, help="committee size N (official u200k: 4)")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--noise", type=float, default=2.0)
    parser.add_argument("--method", choices=KNN_METHODS, default="auto")
    parser.add_argument("--structure", choices=STRUCTURES, default=DEFAULT_STRUCTURE)
    parser.add_argument("--threshold", type=float, default=0.12, help="pair score threshold (mean affinity)")
    parser.add_argument("--ivf-nprobe", type=int, default=IVF_NPROBE, help="IVF lists scanned per query")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    parser.add_argument("--compare-structures", action="store_true",
                        help="also time building the inputs of every structure, side by side (not in total)")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    num_classes = args.classes or max(1, args.nodes // NODES_PER_CLASS)
    centres = rng.standard_normal((num_classes, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    classes = rng.integers(0, num_classes, args.nodes)
    queries = rng.choice(args.nodes, size=min(args.recall_queries, args.nodes), replace=False)

    times: dict[str, float] = {"knn": 0.0}
    cpu: dict[str, float] = {"knn": 0.0}
    features, graphs, recalls = [], [], []
    for m in range(args.committee + 1):
        x = _features(centres, classes, args.noise, seed=args.seed * 1000 + m + 1)
        t, c = time.perf_counter(), time.process_time()
        graphs.append(knn_graph(x, args.k, method=args.method, progress=args.progress,
                                ivf_nprobe=args.ivf_nprobe, seed=args.seed))
        times["knn"] += time.perf_counter() - t
        cpu["knn"] += time.process_time() - c
        exact = exact_knn(x, args.k, queries=queries, progress=False)
        recalls.append(knn_recall(graphs[-1], exact, rows=queries))
        features.append(x)

    t, c = time.perf_counter(), time.process_time()
    pairs = candidate_pairs(graphs[0])
    times["pairs"], cpu["pairs"] = time.perf_counter() - t, time.process_time() - c

    names = mediator_input_names(args.committee, args.structure)
    affinity = [c for c, name in enumerate(names) if name.startswith("aff_")]
    net = MediatorNet(len(names)).eval()
    probs = np.empty(len(pairs), dtype=np.float32)
    mean_affinity = np.empty(len(pairs), dtype=np.float32)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for start, rows in iter_mediator_inputs(pairs, graphs, features, args.structure):
            probs[start:start + len(rows)] = torch.sigmoid(net(torch.from_numpy(rows))).numpy()
            mean_affinity[start:start + len(rows)] = rows[:, affinity].mean(axis=1)
    times["mediator"], cpu["mediator"] = time.perf_counter() - t, time.process_time() - c

    structure_cpu = {}
    if args.compare_structures:
        for structure in STRUCTURES:
            c = time.process_time()
            for _ in iter_mediator_inputs(pairs, graphs, features, structure):
                pass
            structure_cpu[structure] = round(time.process_time() - c, 2)

    t, c = time.perf_counter(), time.process_time()
    result = propagate_detailed(pairs, mean_affinity, args.nodes, threshold=args.threshold,
                                max_size=DEFAULT_MAX_SIZE, progress=args.progress)
    times["propagation"], cpu["propagation"] = time.perf_counter() - t, time.process_time() - c
    times["total"], cpu["total"] = sum(times.values()), sum(cpu.values())
    lab = result.labels >= 0
    precision, recall, fscore = pairwise_fscore(result.labels[lab], classes[lab])
    print(json.dumps({
        "nodes": args.nodes, "dim": args.dim, "classes": num_classes, "models": args.committee + 1,
        "k": args.k, "method": args.method, "structure": args.structure, "threads": args.threads,
        "noise": args.noise, "ivf_nprobe": args.ivf_nprobe,
        "mediator_inputs": len(names), "mediator": "random weights, hidden 2 x 3F (timing only)",
        "seconds": {key: round(v, 2) for key, v in times.items()},
        "cpu_seconds": {key: round(v, 2) for key, v in cpu.items()},
        "load_average_1min": round(os.getloadavg()[0], 1),
        "knn_recall": [round(r, 4) for r in recalls], "recall_queries": len(queries),
        "pairs": len(pairs), "peak_rss_mib": round(_peak_rss_mib(), 1),
        "propagation": result.summary() | {"score": "mean affinity", "threshold": args.threshold},
        "pairwise_precision": round(precision, 4), "pairwise_recall": round(recall, 4),
        "pairwise_fscore": round(fscore, 4), "labelled_fraction": round(float(lab.mean()), 4),
        "mean_probability_random_mediator": round(float(probs.mean()), 4),
    } | ({"input_cpu_seconds_by_structure": structure_cpu} if structure_cpu else {})))


if __name__ == "__main__":
    main()
