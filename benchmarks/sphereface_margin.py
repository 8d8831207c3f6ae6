"""Cost and memory of the A-Softmax classifier for many identities: one process vs sharded over 2.
Prints one JSON line per class count.

    python benchmarks/sphereface_margin.py --classes 10000 100000 --dim 512 --batch 128
    python benchmarks/sphereface_margin.py --classes 1000000 --dim 128 --batch 128

Every configuration runs in fresh spawned processes (gloo on CPU): ``single`` holds all C classes
in one process; ``sharded`` runs ``--world`` processes, each holding C / world classes and
``batch / world`` samples (the same global batch), all-gathering features and all-reducing the
softmax statistics (exact, as Partial FC without sampling). Timings are medians of forward +
backward over ``--steps`` after ``--warmup``; ``peak_rss_mb`` is each process's peak resident memory
above its level before the classifier was built (the most loaded rank for sharded runs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(
    rank: int, world: int, init: str, out: str, classes: int, dim: int, batch: int, steps: int, warmup: int
) -> None:
    import torch.distributed as dist

    from facelit.losses.margin import MarginLoss, ShardedMarginLoss

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    base = _rss_mb()
    g = torch.Generator().manual_seed(rank)
    loss = ShardedMarginLoss(dim, classes, rank, world) if world > 1 else MarginLoss(dim, classes)
    loss.iteration.fill_(10_000)
    local = batch // world
    times = []
    for step in range(warmup + steps):
        x = torch.randn(local, dim, generator=g, requires_grad=True)
        y = torch.randint(0, classes, (local,), generator=g)
        t = time.perf_counter()
        value = loss(x, y)
        value.backward()
        loss.weight.grad = None
        if step >= warmup:
            times.append(time.perf_counter() - t)
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"median_s": statistics.median(times), "peak_rss_mb": _rss_mb() - base})
    )
    if world > 1:
        dist.destroy_process_group()


def _run(world: int, args: argparse.Namespace, classes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.start_processes(
            _worker,
            args=(
                world,
                str(Path(tmp) / "init"),
                tmp,
                classes,
                args.dim,
                args.batch,
                args.steps,
                args.warmup,
            ),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]
    return {
        "median_s": max(r["median_s"] for r in ranks),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    for classes in args.classes:
        single, sharded = _run(1, args, classes), _run(args.world, args, classes)
        print(
            json.dumps(
                {
                    "classes": classes,
                    "dim": args.dim,
                    "batch": args.batch,
                    "world": args.world,
                    "weight_mb": classes * args.dim * 4 / 2**20,
                    "single_s": round(single["median_s"], 4),
                    "sharded_s": round(sharded["median_s"], 4),
                    "single_peak_rss_mb": round(single["peak_rss_mb"], 1),
                    "sharded_peak_rss_mb_per_rank": round(sharded["peak_rss_mb"], 1),
                    "memory_ratio": round(sharded["peak_rss_mb"] / max(single["peak_rss_mb"], 1e-9), 3),
                    "time_ratio": round(sharded["median_s"] / single["median_s"], 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
