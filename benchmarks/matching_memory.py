"""Peak extra memory and time of ``match_anchors`` on a crowded image; prints one JSON object.

Default: 2,000 faces against the RetinaFace paper anchors of a 640x640 image (102,300 anchors), on
the CPU with ``torch.set_num_threads(1)`` (``--threads``). The full IoU matrix alone would take
2,000 x 102,300 x 4 B = 780 MiB (and several temporaries of that size); matching is chunked over faces.

Memory on the CPU: the process's resident-set high-water mark (``VmHWM``), reset through
``/proc/self/clear_refs`` just before matching, minus the resident set at that moment (torch's CPU
allocator is invisible to ``tracemalloc``). On CUDA: ``torch.cuda.max_memory_allocated`` minus the
memory allocated before. Usage::

    PYTHONPATH=. python benchmarks/matching_memory.py [--faces 2000] [--image 640] [--device cpu|cuda]
        [--threads 1] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from facelit.geometry.anchors import ANCHOR_PRESETS, generate_anchors
from facelit.geometry.matching import MAX_CHUNK_ELEMENTS, match_anchors

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in {_STATUS}")


def _crowd(num_faces: int, image: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = torch.rand(num_faces, 1, generator=g) * 56 + 8  # WIDER-like small faces, 8..64 px
    xy = torch.rand(num_faces, 2, generator=g) * (image - size)
    return torch.cat((xy, xy + size), dim=-1)[None].to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--image", type=int, default=640)
    parser.add_argument("--preset", default="paper", choices=sorted(ANCHOR_PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = ANCHOR_PRESETS[args.preset]
    anchors = generate_anchors((args.image, args.image), cfg.strides, cfg.sizes, device=device).boxes
    boxes = _crowd(args.faces, args.image, device)
    valid = torch.ones(boxes.shape[:2], dtype=torch.bool, device=device)
    match_anchors(anchors, boxes[:, :8], valid[:, :8])  # warm-up (kernels, allocator)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        method = "torch.cuda.max_memory_allocated - memory_allocated before"
    else:
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident set
        before = _status_kib("VmRSS") * 1024
        method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS before"
    start = time.perf_counter()
    result = match_anchors(anchors, boxes, valid, chunk_size=args.chunk_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_kib("VmHWM") * 1024

    a = anchors.shape[0]
    chunk = args.chunk_size or max(1, MAX_CHUNK_ELEMENTS // a)
    print(
        json.dumps(
            {
                "faces": args.faces,
                "anchors": a,
                "image": args.image,
                "preset": args.preset,
                "device": str(device),
                "threads": args.threads,
                "chunk_size_faces": chunk,
                "seconds": round(seconds, 3),
                "peak_extra_mib": round((peak - before) / 2**20, 1),
                "full_iou_matrix_mib": round(args.faces * a * 4 / 2**20, 1),
                "memory_method": method,
                "positive_anchors": int(result.positive.sum()),
                "faces_with_an_anchor": int(result.matches[result.positive].unique().numel()),
            }
        )
    )


if __name__ == "__main__":
    main()
