"""Throughput of the synthetic world on one CPU thread; prints one JSON line.

    python benchmarks/synth_speed.py [--crops 256] [--scenes 16]

Figures: crops/s at 128 x 128 and scenes/s at 640 x 640, both batched the way a DataLoader asks for
them (``Dataset.__getitems__``) and one sample at a time (``render_crop`` / ``render_scene``);
CPU time of this process is reported next to wall time because shared machines inflate the latter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelit.synth import FaceCropDataset, SceneDataset, head_model, render_crop, render_scene  # noqa: E402

TARGET_CROPS_PER_S = 300.0
TARGET_SCENES_PER_S = 20.0


def _timed(fn, n: int) -> tuple[float, float]:
    """(samples per second of wall time, samples per second of process CPU time)."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - w), n / (time.process_time() - c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--scenes", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    head_model("human")
    crops = FaceCropDataset(seed=0, length=10**6, size=128)
    crops.__getitems__(list(range(256)))  # warm-up; fills the identity cache (100 identities)
    batch = 64
    start = 1000
    crop_wall, crop_cpu = _timed(
        lambda: [
            crops.__getitems__(list(range(i, i + batch))) for i in range(start, start + args.crops, batch)
        ],
        args.crops // batch * batch,
    )
    single_n = max(8, args.crops // 8)
    crop1_wall, crop1_cpu = _timed(
        lambda: [render_crop(0, i) for i in range(5000, 5000 + single_n)], single_n
    )
    scenes = SceneDataset(seed=0, length=10**6, height=640, width=640)
    scenes.__getitems__([0, 1])
    scene_wall, scene_cpu = _timed(
        lambda: scenes.__getitems__(list(range(10, 10 + args.scenes))), args.scenes
    )
    scene1_n = max(2, args.scenes // 4)
    scene1_wall, scene1_cpu = _timed(
        lambda: [render_scene(0, i) for i in range(100, 100 + scene1_n)], scene1_n
    )
    print(
        json.dumps(
            {
                "crops_per_s": round(crop_wall, 1),
                "crops_per_s_cpu": round(crop_cpu, 1),
                "crops_per_s_single_call": round(crop1_wall, 1),
                "scenes_per_s": round(scene_wall, 2),
                "scenes_per_s_cpu": round(scene_cpu, 2),
                "scenes_per_s_single_call": round(scene1_wall, 2),
                "target_crops_per_s": TARGET_CROPS_PER_S,
                "target_scenes_per_s": TARGET_SCENES_PER_S,
                "crop_size": 128,
                "scene_size": 640,
                "crop_batch": batch,
                "threads": torch.get_num_threads(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
