"""Throughput of the batched TPS warps of interspecies transfer; prints one JSON line.

- ``predicted``: the warping net's path for a batch: fit a 5 x 5 control-grid TPS per image
  (:func:`facelit.geometry.tps.fit_tps`), evaluate the dense sampling grid and resample the image
  with the mean fill, images/s, with and without backward;
- ``ours_fitted_warp`` vs ``kornia_warp_image_tps``: resampling with an already fitted spline, our
  ``sampling_grid`` + ``warp_image`` against kornia's own ``warp_image_tps``, images/s, interleaved
  side by side, and their time ratio;
- ``ground_truth``: the ground-truth grids of B animals x K matches (5 keypoints, some hidden) with
  border anchors (:func:`facelit.geometry.tps.fit_tps_anchored`), grids/s.

Usage::

    python benchmarks/tps_warp.py [--device cuda] [--batch 64] [--size 64] [--repeats 10]

Medians over ``--repeats`` timed calls after one warm-up, one intra-op thread on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from kornia.geometry.transform import warp_image_tps

from facelit.geometry.tps import control_grid, fit_tps, fit_tps_anchored, sampling_grid, warp_image


def median_seconds(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--matches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    b, s = args.batch, args.size
    images = torch.rand(b, 3, s, s, generator=g).to(device)
    control = control_grid(5).to(device).expand(b, -1, -1)
    offsets = (0.1 * torch.randn(b, 25, 2, generator=g)).to(device).requires_grad_(True)

    def predicted(backward: bool) -> Callable[[], object]:
        def step() -> object:
            warp = fit_tps(control, control + offsets)
            out = warp_image(images, sampling_grid(warp, (s, s)))
            if backward:
                out.mean().backward()
            return out

        return step

    warp = fit_tps(control, control + offsets.detach())

    def ours_step() -> object:
        return warp_image(images, sampling_grid(warp, (s, s)), fill="zeros")

    def kornia_step() -> object:
        return warp_image_tps(
            images, warp.centres, warp.kernel_weights, warp.affine_weights, align_corners=False
        )

    n = b * args.matches
    human = (0.6 * torch.rand(n, 5, 2, generator=g) - 0.3).to(device)
    animal = human * 2.0 + 0.1 * torch.randn(n, 5, 2, generator=g).to(device)
    mask = torch.rand(n, 5, generator=g).to(device) > 0.15
    mask[:, :3] = True

    def ground_truth() -> object:
        return sampling_grid(fit_tps_anchored(human, animal, mask), (s, s))

    t_fwd = median_seconds(predicted(False), args.repeats, device)
    t_bwd = median_seconds(predicted(True), args.repeats, device)
    t_ours, t_kornia = [], []
    for _ in range(3):  # interleaved, side by side
        t_ours.append(median_seconds(ours_step, args.repeats, device))
        t_kornia.append(median_seconds(kornia_step, args.repeats, device))
    t_ours_m, t_kornia_m = statistics.median(t_ours), statistics.median(t_kornia)
    t_gt = median_seconds(ground_truth, args.repeats, device)
    print(
        json.dumps(
            {
                "device": str(device),
                "batch": b,
                "size": s,
                "matches": args.matches,
                "predicted_images_per_s": round(b / t_fwd, 1),
                "predicted_with_backward_images_per_s": round(b / t_bwd, 1),
                "ours_fitted_warp_images_per_s": round(b / t_ours_m, 1),
                "kornia_warp_image_tps_images_per_s": round(b / t_kornia_m, 1),
                "ours_over_kornia_time": round(t_ours_m / t_kornia_m, 3),
                "ground_truth_grids_per_s": round(n / t_gt, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
