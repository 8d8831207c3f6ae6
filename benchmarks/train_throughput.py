"""Training throughput of a paper module, with the share of step time per phase. Prints one JSON line.

    python benchmarks/train_throughput.py --paper retinaface --backbone mnet0.25 --size 640 --batch 8
    python benchmarks/train_throughput.py --paper retinaface --backbone resnet50 --size 640 --batch 4
    python benchmarks/train_throughput.py --paper landmarks --backbone seresnet50 --size 256 --batch 32
    python benchmarks/train_throughput.py --paper retinaface --device cuda --precision bf16 --channels-last

Phases (medians over ``--steps`` after ``--warmup``): ``data`` = synthetic render + augmentation +
collate on the CPU in this process (what one DataLoader worker does per batch), ``forward`` = the
network, ``loss`` = matching + losses (RetinaFace) or the landmark loss, ``backward`` = backward +
optimizer step. ``images_per_s`` counts the model step only (data loading overlaps it in workers);
``data_images_per_s_per_worker`` says how many workers keep the model fed
(``workers_needed = images_per_s / data_images_per_s_per_worker``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def _retinaface(args: argparse.Namespace):
    from facelit.augment.detection import DetectionAugment
    from facelit.batch import collate_detections
    from facelit.synth import render_scene
    from lightning_modules.retinaface import RetinaFaceModule

    paper = args.backbone != "mnet0.25"
    module = RetinaFaceModule(
        backbone=args.backbone,
        fpn_levels=(2, 3, 4, 5, 6) if paper else (3, 4, 5),
        fpn_channels=256 if paper else 64,
        anchors="paper" if paper else "mnet",
        channels_last=args.channels_last,
    )
    augment = DetectionAugment(output_size=args.size)
    counter = iter(range(10**9))

    def make_batch() -> dict[str, Any]:
        samples = []
        for _ in range(args.batch):
            s = augment(render_scene(0, next(counter), args.size, args.size, max_faces=args.faces))
            s.pop("mesh", None)
            s.pop("mesh_valid", None)
            samples.append(s)
        return collate_detections(samples)

    def split_step(batch: dict[str, Any], device: torch.device):
        images = module.prepare_images(batch["image"])
        outputs, t_fwd = _timed(lambda: module.net(images), device)
        anchors = module.net.anchors_for(tuple(images.shape[-2:]), device)
        parts, t_loss = _timed(lambda: module.criterion(outputs, batch, anchors), device)
        return parts["total"], t_fwd, t_loss

    return module, make_batch, split_step


def _landmarks(args: argparse.Namespace):
    from facelit.augment.landmarks import LandmarkAugment
    from facelit.batch import collate_crops
    from facelit.synth import render_crop
    from lightning_modules.landmarks import LandmarkModule

    module = LandmarkModule(backbone=args.backbone, image_size=args.size, channels_last=args.channels_last)
    augment = LandmarkAugment("ibug68")
    counter = iter(range(10**9))

    def make_batch() -> dict[str, Any]:
        return collate_crops([augment(render_crop(0, next(counter), args.size)) for _ in range(args.batch)])

    def split_step(batch: dict[str, Any], device: torch.device):
        images = module.prepare_images(batch["image"])
        pred, t_fwd = _timed(lambda: module.net(images), device)
        size = images.shape[-1]
        loss, t_loss = _timed(lambda: module.criterion(pred.float(), batch["landmarks"] / size, batch["landmarks_visible"]),
                              device)
        return loss, t_fwd, t_loss

    return module, make_batch, split_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", choices=["retinaface", "landmarks"], default="retinaface")
    parser.add_argument("--backbone", default=None, help="default: mnet0.25 / resnet18")
    parser.add_argument("--size", type=int, default=None, help="default: 640 / 256")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--faces", type=int, default=16, help="faces per synthetic scene at most")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    args.backbone = args.backbone or ("mnet0.25" if args.paper == "retinaface" else "resnet18")
    args.size = args.size or (640 if args.paper == "retinaface" else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    module, make_batch, split_step = (_retinaface if args.paper == "retinaface" else _landmarks)(args)
    module.to(device)
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext())

    times: dict[str, list[float]] = {"data": [], "forward": [], "loss": [], "backward": [], "step": []}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.steps):
        batch, t_data = _timed(make_batch, torch.device("cpu"))
        batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with autocast:
            loss, t_fwd, t_loss = split_step(batch, device)

        def backward() -> None:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        _, t_bwd = _timed(backward, device)
        if i >= args.warmup:
            for key, value in zip(times, (t_data, t_fwd, t_loss, t_bwd, t_fwd + t_loss + t_bwd)):
                times[key].append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    model_step = med["step"]
    result = {
        "benchmark": "train_throughput",
        "paper": args.paper,
        "backbone": args.backbone,
        "size": args.size,
        "batch": args.batch,
        "device": str(device),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "share_of_model_step": {k: round(med[k] / model_step, 3) for k in ("forward", "loss", "backward")},
        "data_share_if_serial": round(med["data"] / (med["data"] + model_step), 3),
        "images_per_s": round(args.batch / model_step, 2),
        "data_images_per_s_per_worker": round(args.batch / med["data"], 2),
        "workers_needed": round((args.batch / model_step) / (args.batch / med["data"]), 2),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
