"""Throughput of the augmentation paths; prints one JSON line.

- detection, per sample (the DataLoader-worker path, always on the CPU): ``DetectionAugment`` on
  ~640 x 640 images with ~20 faces, samples/s;
- detection, batched (``BatchedDetectionAugment``) on ``--device`` for ``--batch`` images, samples/s;
- landmarks, per sample and batched, on 256 x 256 face crops with 68 points, samples/s.

Usage::

    python benchmarks/augment_speed.py [--device cuda] [--batch 16] [--seconds 3]

One intra-op thread (``torch.set_num_threads(1)``) so that figures match one DataLoader worker.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from facelit.augment.detection import BatchedDetectionAugment, DetectionAugment
from facelit.augment.landmarks import BatchedLandmarkAugment, LandmarkAugment
from facelit.batch import collate_crops, collate_detections
from facelit.geometry.schemes import IBUG68


def detection_sample(g: torch.Generator, height: int, width: int, faces: int) -> dict[str, Any]:
    """A random image with ``faces`` random boxes and five-point landmarks inside them."""
    size = 8 + torch.rand(faces, 1, generator=g) * 120
    x1 = torch.rand(faces, 1, generator=g) * (width - size)
    y1 = torch.rand(faces, 1, generator=g) * (height - size)
    boxes = torch.cat([x1, y1, x1 + size, y1 + size], dim=-1)
    landmarks = boxes[:, None, :2] + torch.rand(faces, 5, 2, generator=g) * size[:, None]
    return {
        "image": torch.rand(3, height, width, generator=g),
        "boxes": boxes,
        "landmarks": landmarks,
        "landmarks_valid": torch.ones(faces, dtype=torch.bool),
        "landmarks_visible": torch.ones(faces, 5, dtype=torch.bool),
        "ignore": torch.zeros(faces, dtype=torch.bool),
    }


def crop_sample(g: torch.Generator, size: int) -> dict[str, Any]:
    """A random 68-point face crop."""
    return {
        "image": torch.rand(3, size, size, generator=g),
        "landmarks": size * (0.2 + 0.6 * torch.rand(68, 2, generator=g)),
        "landmarks_visible": torch.ones(68, dtype=torch.bool),
        "pose": 30 * torch.randn(3, generator=g),
    }


def rate(step: Callable[[], Any], items: int, seconds: float, sync: Callable[[], None]) -> float:
    """Items per second of ``step`` (one warm-up call, then repeated for about ``seconds``)."""
    step()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * items / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of the batched paths (cpu, cuda, ...)")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the batched detection path")
    parser.add_argument("--crop-batch", type=int, default=64, help="batch size of the batched landmark path")
    parser.add_argument("--faces", type=int, default=20, help="faces per detection image")
    parser.add_argument("--size", type=int, default=640, help="detection output side")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    no_sync: Callable[[], None] = lambda: None
    g = torch.Generator().manual_seed(0)

    samples = [detection_sample(g, 640, 704, args.faces) for _ in range(8)]
    det = DetectionAugment(output_size=args.size)
    cursor = iter(range(10**9))
    det_sample = rate(lambda: det(samples[next(cursor) % len(samples)], g), 1, args.seconds, no_sync)

    batch = collate_detections([detection_sample(g, 640, 640, args.faces) for _ in range(args.batch)])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    det_batched = BatchedDetectionAugment(output_size=args.size).to(device)
    det_batch = rate(lambda: det_batched(batch), args.batch, args.seconds, sync)

    crops = [crop_sample(g, 256) for _ in range(8)]
    lmk = LandmarkAugment(IBUG68)
    lmk_sample = rate(lambda: lmk(crops[next(cursor) % len(crops)], g), 1, args.seconds, no_sync)
    crop_batch = collate_crops([crop_sample(g, 256) for _ in range(args.crop_batch)])
    crop_batch = {k: v.to(device) for k, v in crop_batch.items()}
    lmk_batched = BatchedLandmarkAugment(IBUG68).to(device)
    lmk_batch = rate(lambda: lmk_batched(crop_batch), args.crop_batch, args.seconds, sync)

    print(
        json.dumps(
            {
                "benchmark": "augment_speed",
                "threads": torch.get_num_threads(),
                "device": str(device),
                "detection_input": [640, 704],
                "detection_output": args.size,
                "faces": args.faces,
                "detection_sample_cpu_per_s": round(det_sample, 1),
                "detection_batched_per_s": round(det_batch, 1),
                "detection_batch": args.batch,
                "landmark_crop": 256,
                "landmark_sample_cpu_per_s": round(lmk_sample, 1),
                "landmark_batched_per_s": round(lmk_batch, 1),
                "landmark_batch": args.crop_batch,
            }
        )
    )


if __name__ == "__main__":
    main()
