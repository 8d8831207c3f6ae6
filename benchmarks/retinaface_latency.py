"""RetinaFace inference latency at VGA (640x480): network + decode + NMS, median of N runs.
Prints one JSON line. The paper reports 17.2 ms for MobileNet-0.25 on its single-thread CPU.

    python benchmarks/retinaface_latency.py --backbone mnet0.25 --threads 1
    python benchmarks/retinaface_latency.py --scene --ckpt path/to/last.ckpt
    python benchmarks/retinaface_latency.py --device cuda --precision bf16 --channels-last

Post-processing cost depends on the score map: a random net scores every anchor near 0.5, so
``--ckpt`` (a CLI checkpoint of ``RetinaFaceModule``) loads a fitted detector and ``--scene`` feeds
a synthetic scene instead of noise. ``candidates`` reports how many anchors pass the threshold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch

from facelit.nets.retinaface import RetinaFace, decode_outputs, detect
from facelit.nets.retinaface_post import SCORE_THRESHOLD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mnet0.25")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--ckpt", default=None, help="RetinaFaceModule checkpoint (its net is loaded)")
    parser.add_argument("--scene", action="store_true", help="a synthetic scene instead of uniform noise")
    parser.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paper = args.backbone != "mnet0.25"
    net = RetinaFace(args.backbone, (2, 3, 4, 5, 6) if paper else (3, 4, 5), 256 if paper else 64,
                     "paper" if paper else "mnet").eval().to(device)
    if args.ckpt is not None:
        state = torch.load(args.ckpt, map_location="cpu", weights_only=False)["state_dict"]
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    if args.scene:
        from facelit.synth import render_scene

        image = render_scene(0, 0, args.height, args.width)["image"][None].to(device)
    else:
        image = torch.rand(1, 3, args.height, args.width, device=device)
    if args.channels_last:
        net.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    anchors = net.anchors_for((args.height, args.width), device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    times = {"network": [], "total": []}
    with torch.inference_mode(), autocast:
        for i in range(args.warmup + args.runs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = net(image)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            dets = detect(out, anchors, args.score_threshold)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if i >= args.warmup:
                times["network"].append(t1 - t0)
                times["total"].append(t2 - t0)
    params = sum(p.numel() for p in net.parameters())
    scores = decode_outputs(out, anchors)[0]
    print(json.dumps({
        "benchmark": "retinaface_latency",
        "backbone": args.backbone,
        "size": [args.height, args.width],
        "device": str(device),
        "threads": args.threads,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
        "post_share_of_network": round(
            (statistics.median(times["total"]) - statistics.median(times["network"]))
            / statistics.median(times["network"]), 3
        ),
        "checkpoint": args.ckpt,
        "input": "synthetic scene" if args.scene else "uniform noise",
        "score_threshold": args.score_threshold,
        "candidates": int((scores > args.score_threshold).sum()),
        "detections": int(dets[0]["scores"].numel()),
        "p90_ms_total": round(1000 * sorted(times["total"])[int(0.9 * (len(times["total"]) - 1))], 2),
        "params": params,
        "size_mb_fp32": round(params * 4 / 1e6, 3),
        "paper_ms": 17.2 if args.backbone == "mnet0.25" else None,
    }))


if __name__ == "__main__":
    main()
