"""Training images/s of SphereFace-N with A-Softmax (net + classifier + SGD step). Prints one JSON line.

    python benchmarks/sphereface_train.py --depth 20 --batch 16                  # CPU, fp32, 112x96
    python benchmarks/sphereface_train.py --device cuda --precision bf16 --channels-last --batch 256

The batch is random aligned crops (data loading is not timed: the cached/decoded crops of the
datamodule cost far less than the step). Median over ``--steps`` after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import torch

from facelit.losses.margin import MarginLoss
from facelit.nets.sphere import SphereNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, nargs=2, default=[112, 96])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10575)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = SphereNet(args.depth, args.size, 512, args.width).to(device)
    loss = MarginLoss(512, args.classes).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.SGD(list(net.parameters()) + list(loss.parameters()), lr=0.01, momentum=0.9)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    )
    x = torch.rand(args.batch, 3, *args.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast:
            value = loss(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        loss.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    print(
        json.dumps(
            {
                "depth": args.depth,
                "width": args.width,
                "size": args.size,
                "batch": args.batch,
                "device": str(device),
                "precision": args.precision,
                "channels_last": args.channels_last,
                "threads": args.threads,
                "step_s": round(step_s, 4),
                "images_per_s": round(args.batch / step_s, 2),
                "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
