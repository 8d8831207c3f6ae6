"""Tiny-face GAN speed: one generator step and one discriminator step (forward + backward + Adam),
and re-scoring throughput (LR crops -> G -> D face head, proposals/s), medians of N runs, side by
side for the paper-size nets (128x128 HR, 64-channel G with 8 + 8 blocks, VGG19 D) and the demo
nets (configs/demo/tinyface_gan.yaml). Prints one JSON line.

    python benchmarks/tinyface_speed.py --threads 1 --batch 4
    python benchmarks/tinyface_speed.py --device cuda --precision bf16 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from facelit.losses.tinyface_gan import discriminator_loss, generator_loss
from facelit.nets.tinyface_gan import TinyFaceDiscriminator, TinyFaceGenerator

SIZES: dict[str, dict[str, Any]] = {
    "paper": {
        "hr": 128,
        "g": dict(channels=64, upsample_blocks=8, refine_blocks=8, deconv_channels=256),
        "d": dict(widths=(64, 128, 256, 512, 512), convs_per_stage=(2, 2, 4, 4, 4)),
    },
    "demo": {
        "hr": 64,
        "g": dict(channels=16, upsample_blocks=2, refine_blocks=2, deconv_channels=16, residual=True),
        "d": dict(widths=(16, 32, 32, 32, 32), convs_per_stage=(1, 1, 1, 1, 1)),
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, runs: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(
    size: str, batch: int, runs: int, warmup: int, device: torch.device, autocast
) -> dict[str, float]:
    spec = SIZES[size]
    g = TinyFaceGenerator(**spec["g"]).to(device)
    d = TinyFaceDiscriminator(**spec["d"]).to(device)
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-4), torch.optim.Adam(d.parameters(), 1e-4)
    hr = torch.rand(batch, 3, spec["hr"], spec["hr"], device=device)
    lr = torch.rand(batch, 3, spec["hr"] // 4, spec["hr"] // 4, device=device)
    is_face = torch.arange(batch, device=device) % 2 == 0

    def g_step() -> None:
        with autocast:
            g1, g2 = g(lr)
            real, face = d(g2)
            loss = generator_loss(g1, g2, hr, real, face, is_face)["total"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    def d_step() -> None:
        with torch.no_grad(), autocast:
            _, g2 = g(lr)
        with autocast:
            real, face = d(torch.cat([hr, g2]))
            loss = discriminator_loss(real, face, is_face)["total"]
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    def rescore() -> None:
        with torch.inference_mode(), autocast:
            _, g2 = g(lr)
            torch.sigmoid(d(g2)[1])

    t_g = _median_time(g_step, runs, warmup, device)
    t_d = _median_time(d_step, runs, warmup, device)
    t_r = _median_time(rescore, runs, warmup, device)
    return {
        "g_step_ms": 1e3 * t_g,
        "d_step_ms": 1e3 * t_d,
        "rescore_proposals_per_s": batch / t_r,
        "g_params": sum(p.numel() for p in g.parameters()),
        "d_params": sum(p.numel() for p in d.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4, help="crops per step")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    )
    result: dict[str, Any] = {
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "batch": args.batch,
        "runs": args.runs,
    }
    for size in args.sizes:
        result[size] = measure(size, args.batch, args.runs, args.warmup, device, autocast)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
