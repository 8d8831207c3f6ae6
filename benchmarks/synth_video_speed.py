"""Synthetic video clips vs face crops: frames/s against crops/s, side by side on one CPU thread;
prints one JSON line.

    python benchmarks/synth_video_speed.py [--frames 256] [--clip-length 16] [--size 128] [--rounds 5]

A clip frame is a crop of the same renderer with per-frame draws, so the target is frames/s close to
crops/s. Each round renders ``--frames`` crops (``FaceCropDataset.__getitems__``, 64 per call, as a
DataLoader asks for them) and the same number of clip frames (``SyntheticClipDataset.__getitems__``
over ``frames / clip_length`` clips, a batch of clips); the two alternate within each round so that
the load of a shared machine hits both alike. Reported: medians over rounds of wall time and
process CPU time, and the ratio frames/s over crops/s of the per-round figures (median).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelit.synth import FaceCropDataset, SyntheticClipDataset  # noqa: E402

CROP_BATCH = 64  # what FaceCropDataset renders per call


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256, help="crops and clip frames per round")
    parser.add_argument("--clip-length", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_clips = max(1, args.frames // args.clip_length)
    frames = n_clips * args.clip_length
    crops = FaceCropDataset(seed=0, length=10**6, size=args.size)
    clips = SyntheticClipDataset(seed=0, length=10**6, clip_length=args.clip_length, size=args.size)

    def render_crops(start: int) -> None:
        for k in range(start, start + frames, CROP_BATCH):
            crops.__getitems__(list(range(k, min(k + CROP_BATCH, start + frames))))

    def render_clips(start: int) -> None:
        clips.__getitems__(list(range(start, start + n_clips)))

    render_crops(0), render_clips(0)  # warm-up: caches, first-call allocations
    rows: dict[str, list[tuple[float, float]]] = {"crops": [], "frames": []}
    for r in range(args.rounds):
        first, second = ("crops", "frames") if r % 2 == 0 else ("frames", "crops")
        for kind in (first, second):  # alternate the order between rounds
            start = 1000 + r * 10 * frames
            rows[kind].append(
                _timed(lambda k=kind, s=start: render_crops(s) if k == "crops" else render_clips(s))
            )
    out: dict[str, object] = {
        "benchmark": "synth_video_speed",
        "size": args.size,
        "clip_length": args.clip_length,
        "frames_per_round": frames,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
    }
    for kind, timings in rows.items():
        out[f"{kind}_per_s_wall"] = round(frames / statistics.median(t[0] for t in timings), 1)
        out[f"{kind}_per_s_cpu"] = round(frames / statistics.median(t[1] for t in timings), 1)
    ratios = [
        c[0] / f[0] for c, f in zip(rows["crops"], rows["frames"], strict=True)
    ]  # frames/s over crops/s
    cpu_ratios = [c[1] / f[1] for c, f in zip(rows["crops"], rows["frames"], strict=True)]
    out["frames_over_crops_wall"] = round(statistics.median(ratios), 3)
    out["frames_over_crops_cpu"] = round(statistics.median(cpu_ratios), 3)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
