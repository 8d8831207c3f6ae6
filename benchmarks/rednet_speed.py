"""RED-Net speed and memory: tracking frames/s and the peak memory of clips of T frames; prints one
JSON line.

    python benchmarks/rednet_speed.py [--nets demo vgg16] [--frames 24] [--clip-length 16] [--device cpu]

Per net (``demo``: the demo's narrow SegNet at 64 px; ``vgg16``: the paper's VGG-16 widths at
128 px), 7 points, 3 spatial steps, temporal mode, eval mode:

* ``tracking_fps``: :meth:`RedNetModule.track` over ``--frames`` synthetic video frames (each frame
  one crop, one LSTM step, 3 spatial steps; the box follows the landmarks), after one warm-up
  frame; frames / wall seconds.
* ``infer_clip_peak_mb``: peak memory of one clip of ``--clip-length`` frames, no gradients.
* ``train_clip_peak_mb``: peak memory of one training step (forward, losses, backward) on one clip
  of ``--clip-length`` frames (``--train-nets`` only: the VGG-16 step does not fit a small CPU
  machine's memory budget).

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the growth of the process's peak
resident set (``ru_maxrss``) over the model's own footprint, measured in a fresh subprocess per
figure so that one measurement's peak does not hide the next.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETS = {
    "demo": {"widths": [8, 16, 32, 32, 32], "depths": [1, 1, 1, 1, 1], "lstm_hidden": 64, "image_size": 64},
    "vgg16": {"widths": [64, 128, 256, 512, 512], "depths": [2, 2, 3, 3, 3], "lstm_hidden": 256, "image_size": 128},
}
MB = 1024 * 1024


def _module(net: str, device: str):
    from lightning_modules.rednet import RedNetModule

    cfg = dict(NETS[net])
    module = RedNetModule(scheme="rednet7", num_identities=100, mean_shape_samples=0, **cfg)
    return module.to(device), cfg["image_size"]


def _clip(size: int, length: int, device: str) -> dict[str, torch.Tensor]:
    from facelit.datasets.clips import collate_clips
    from facelit.synth.video import render_clip

    batch = collate_clips([render_clip(0, 0, length, size, scheme="rednet7")])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _memory_job(net: str, length: int, device: str, train: bool, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    module, size = _module(net, device)
    batch = _clip(size, length, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _peak_mb(device) if not device.startswith("cuda") else torch.cuda.memory_allocated() / MB
    if train:
        module.train()
        out = module.model_step(batch, "train")
        out["loss"].backward()
    else:
        module.eval()
        with torch.no_grad():
            module(batch["image"], batch["frame_mask"])
    queue.put(_peak_mb(device) - base)


def _memory(net: str, length: int, device: str, train: bool) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_job, args=(net, length, device, train, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return float("nan")
    return round(float(queue.get()), 1)


def _tracking_fps(net: str, frames: int, device: str) -> float:
    from facelit.synth.video import render_clip

    module, size = _module(net, device)
    video = render_clip(0, 1, frames + 1, 2 * size, scheme="rednet7")["image"]
    box = torch.tensor([0.0, 0.0, 2.0 * size, 2.0 * size])
    module.track(video[:1], initial_box=box, progress=False)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    module.track([f.to(device) for f in video[1:]], initial_box=box, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return round(frames / (time.perf_counter() - start), 2)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--train-nets", nargs="*", default=["demo"], choices=list(NETS))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--clip-length", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, object] = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "clip_length": args.clip_length, "tracking_frames": args.frames,
    }
    for net in args.nets:
        figures = {
            "image_size": NETS[net]["image_size"],
            "tracking_fps": _tracking_fps(net, args.frames, args.device),
            "infer_clip_peak_mb": _memory(net, args.clip_length, args.device, train=False),
        }
        if net in args.train_nets:
            figures["train_clip_peak_mb"] = _memory(net, args.clip_length, args.device, train=True)
        result[net] = figures
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
