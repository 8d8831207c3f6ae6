"""PADACO label-space source weights: k-d tree against chunked brute force; prints one JSON line.

    python benchmarks/padaco_weights.py [--source 100000] [--target 15000] [--neighbours 10] [--repeats 5]

Target (issue 12): 100k source and 15k target samples in under a second on one CPU thread. The
k-d tree runs at full size (median of ``--repeats``); brute force (``torch.cdist`` + ``topk``) runs
once on ``--brute-target`` target rows, is checked equal on them, and is scaled linearly to the
full target count (its cost is linear in the target rows). CPU time is reported next to wall time
because shared machines inflate the latter.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelit.datasets.sampling import label_space_weights, label_space_weights_bruteforce  # noqa: E402

TARGET_SECONDS = 1.0
SOURCE_RANGE = (90.0, 35.0, 30.0)  # the synthetic 'source' domain's yaw, pitch, roll half-ranges
TARGET_RANGE = (60.0, 25.0, 20.0)  # the synthetic 'target' domain's


def _uniform(n: int, half: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor(half)


def _timed(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=int, default=100_000)
    parser.add_argument("--target", type=int, default=15_000)
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--brute-target", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    source, target = _uniform(args.source, SOURCE_RANGE, g), _uniform(args.target, TARGET_RANGE, g)
    runs = [_timed(lambda: label_space_weights(source, target, args.neighbours)) for _ in range(args.repeats)]
    tree_wall = statistics.median(r[0] for r in runs)
    tree_cpu = statistics.median(r[1] for r in runs)
    sub = target[: args.brute_target]
    brute_wall, brute_cpu, brute = _timed(
        lambda: label_space_weights_bruteforce(source, sub, args.neighbours)
    )
    tree_sub = label_space_weights(source, sub, args.neighbours)
    scale = args.target / len(sub)
    print(
        json.dumps(
            {
                "source": args.source,
                "target": args.target,
                "neighbours": args.neighbours,
                "kdtree_wall_s_median": round(tree_wall, 4),
                "kdtree_cpu_s_median": round(tree_cpu, 4),
                "bruteforce_wall_s_scaled": round(brute_wall * scale, 3),
                "bruteforce_cpu_s_scaled": round(brute_cpu * scale, 3),
                "speedup_cpu": round(brute_cpu * scale / max(tree_cpu, 1e-9), 1),
                "equal_on_subset": bool(torch.equal(tree_sub, brute)),
                "under_target": tree_cpu < TARGET_SECONDS,
                "target_s": TARGET_SECONDS,
                "nonzero_fraction": round(float((runs[-1][2] > 0).float().mean()), 4),
                "python": platform.python_version(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
