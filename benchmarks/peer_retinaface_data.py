"""Helpers of ``benchmarks/peer_retinaface.py``: a temporary WIDER-style tree of synthetic scenes that
both data pipelines read, their endless DataLoaders, and the GPU training measurement.

The tree (official layout plus the RetinaFace release's ``train/label.txt``; ``train/images`` links
to ``WIDER_train/images`` because the peer reads images next to its label file)::

    WIDER_train/images/0--Synth/0_Synth_<i>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt
    train/label.txt, train/images -> ../WIDER_train/images
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

EVENT = "0--Synth"
SCENE_SIZE = (768, 1024)  # (H, W) of the written scenes, WIDER-like
JPEG_QUALITY = 90
GPU_SCENES = 512  # distinct cached scenes the GPU part cycles through
GPU_BACKBONES = {  # name: (fpn_levels, fpn_channels, anchors, batch)
    "mnet0.25": ((3, 4, 5), 64, "mnet", 64),
    "resnet50": ((2, 3, 4, 5, 6), 256, "paper", 16),
}


def write_wider_tree(root: Path, n: int, seed: int = 0) -> Path:
    """Render ``n`` synthetic scenes with at least one face and write them as a WIDER-style tree."""
    from PIL import Image

    from facelit.synth import render_scene

    images = root / "WIDER_train" / "images" / EVENT
    images.mkdir(parents=True)
    (root / "wider_face_split").mkdir()
    (root / "train").mkdir()
    (root / "train" / "images").symlink_to(root / "WIDER_train" / "images", target_is_directory=True)
    gt, labels, index = [], [], 0
    while len(gt) < n:
        s = render_scene(seed, index, *SCENE_SIZE, max_faces=16)
        index += 1
        if s["boxes"].shape[0] == 0:  # the peer's dataset cannot serve face-free images
            continue
        rel = f"{EVENT}/0_Synth_{index}.jpg"
        pixels = (s["image"].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(images / Path(rel).name, quality=JPEG_QUALITY)
        xywh = torch.cat((s["boxes"][:, :2], s["boxes"][:, 2:] - s["boxes"][:, :2]), 1).tolist()
        block = [rel, str(len(xywh))] + [" ".join(f"{v:.2f}" for v in b) + " 0 0 0 0 0 0" for b in xywh]
        gt.append("\n".join(block))
        rows = []
        for b, pts, ok in zip(xywh, s["landmarks"].tolist(), s["landmarks_valid"].tolist(), strict=True):
            marks = [f"{x:.2f} {y:.2f} 0.0" for x, y in pts] if ok else ["-1.0 -1.0 -1.0"] * len(pts)
            rows.append(" ".join(f"{v:.2f}" for v in b) + " " + " ".join(marks) + " 1.0")
        labels.append("\n".join([f"# {rel}", *rows]))
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text("\n".join(gt) + "\n")
    (root / "train" / "label.txt").write_text("\n".join(labels) + "\n")
    return root


def _forever(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def e2e_datasets(root: Path, peer: Any, size: int) -> dict[str, Any]:
    """{"ours": ``WiderFaceDataset`` + ``DetectionAugment``, "peer": ``WiderFaceDetection`` + ``preproc``}."""
    from datamodules.base import TransformDataset
    from facelit.augment.detection import DetectionAugment
    from facelit.datasets.wider_face import WiderFaceDataset

    ours = TransformDataset(
        WiderFaceDataset(root, "train", landmarks=True), DetectionAugment(output_size=size)
    )
    theirs = peer.data.WiderFaceDetection(
        str(root / "train" / "label.txt"), peer.data.preproc(size, (104, 117, 123))
    )
    return {"ours": ours, "peer": theirs}


def e2e_loaders(root: Path, peer: Any, size: int, batch: int, workers: int) -> dict[str, Iterator[Any]]:
    """Endless batch iterators: ours (``WiderFaceDataset`` + ``DetectionAugment``, padded detection
    batches) and the peer's (``WiderFaceDetection`` + ``preproc``), as the step functions expect."""
    from datamodules.wider_face import collate_padded

    common = {"batch_size": batch, "shuffle": True, "num_workers": workers, "drop_last": True}
    if workers:
        common["persistent_workers"] = True
    datasets = e2e_datasets(root, peer, size)
    ours_loader = DataLoader(datasets["ours"], collate_fn=collate_padded, **common)
    theirs_loader = DataLoader(datasets["peer"], collate_fn=peer.data.detection_collate, **common)

    def peer_batches() -> Iterator[dict[str, Any]]:
        for images, targets in _forever(theirs_loader):
            yield {"peer_images": images, "peer_targets": targets}

    return {"ours": _forever(ours_loader), "peer": peer_batches()}


# ---------------------------------------------------------------------------------------------
# GPU: bf16 + channels_last training with batched (device) augmentation
# ---------------------------------------------------------------------------------------------
def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _gpu_backbone(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from datamodules.base import CachedDataset
    from datamodules.wider_face import collate_padded
    from facelit.augment.detection import BatchedDetectionAugment
    from facelit.synth import SceneDataset
    from lightning_modules.retinaface import RetinaFaceModule

    levels, channels, anchors, batch_size = GPU_BACKBONES[name]
    module = RetinaFaceModule(
        backbone=name, fpn_levels=levels, fpn_channels=channels, anchors=anchors, image_size=640
    ).to(device)
    module.net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    augment = BatchedDetectionAugment(output_size=640).to(device)
    scenes = CachedDataset(SceneDataset(seed=0, length=GPU_SCENES, height=640, width=640, max_faces=16))
    loader = DataLoader(
        scenes, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        collate_fn=collate_padded, pin_memory=True, persistent_workers=args.workers > 0,
    )  # fmt: skip
    batches = _forever(loader)

    def step(batch: dict[str, Any]) -> None:
        batch = augment(_to(batch, device))
        images = batch["image"].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = module.net(images)
            anchors_ = module.net.anchors_for(tuple(images.shape[-2:]), device)
            loss = module.criterion(outputs, batch, anchors_)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step(next(batches))
    with FlopCounterMode(display=False) as counter:
        step(next(batches))
    flops = counter.get_total_flops()
    torch.cuda.synchronize(device)
    waits, walls = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        batch = next(batches)  # the GPU idles while the host waits for data
        t1 = time.perf_counter()
        step(batch)
        torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        walls.append(t2 - t0)
    wall = statistics.median(walls)
    out = {
        "batch": batch_size,
        "images_per_s": round(batch_size / wall, 1),
        "gpu_idle_share": round(sum(waits) / sum(walls), 3),
        "step_tflop": round(flops / 1e12, 4),
        "achieved_tflops": round(flops / wall / 1e12, 2),
    }
    if args.peak_tflops:
        out["mfu"] = round(flops / wall / 1e12 / args.peak_tflops, 4)
    return out


def part_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """bf16 + channels_last training at 640x640 with device augmentation (see the module docstring
    of ``peer_retinaface.py``); images/s, GPU idle share and MFU per backbone."""
    device = torch.device(args.device)
    if not torch.cuda.is_available():
        return {"gpu": {"skipped": "CUDA is not available"}}
    torch.backends.cudnn.benchmark = True
    result = {"device": torch.cuda.get_device_name(device), "precision": "bf16", "channels_last": True}
    for name in GPU_BACKBONES:
        result[name] = _gpu_backbone(name, args, device)
    return {"gpu": result}


__all__ = ["e2e_datasets", "e2e_loaders", "part_gpu", "write_wider_tree"]
