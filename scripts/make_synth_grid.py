"""Render a picture of the synthetic world: docs/synth_samples.jpg.

    python scripts/make_synth_grid.py [--out docs/synth_samples.jpg] [--seed 0]

Rows: face crops of the source, target and clean domains (iBUG-68: green visible, red hidden;
yellow face box), horse and sheep crops (ANIMAL5 keypoints), and detection scenes (boxes green =
easy, yellow = medium, red = hard only; cyan five points where visible).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelit.synth.world import render_crops, render_scenes  # noqa: E402

COLS = 6


def _show(ax: plt.Axes, image: torch.Tensor) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), extent=(0, image.shape[2], image.shape[1], 0))
    ax.set_xticks([])
    ax.set_yticks([])


def _crop(ax: plt.Axes, s: dict[str, torch.Tensor], title: str) -> None:
    _show(ax, s["image"])
    lm, vis = s["landmarks"], s["landmarks_visible"]
    ax.scatter(lm[vis, 0], lm[vis, 1], s=4, c="lime", linewidths=0)
    ax.scatter(lm[~vis, 0], lm[~vis, 1], s=4, c="red", linewidths=0)
    x0, y0, x1, y1 = s["boxes"].tolist()
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=0.6))
    yaw, pitch, roll = s["pose"].tolist()
    ax.set_title(f"{title} y{yaw:+.0f} p{pitch:+.0f} r{roll:+.0f}", fontsize=6)


def _scene(ax: plt.Axes, s: dict[str, torch.Tensor]) -> None:
    _show(ax, s["image"])
    faces = zip(s["boxes"], s["landmarks"], s["landmarks_visible"], s["difficulty"], strict=True)
    for box, lm, vis, diff in faces:
        colour = "lime" if diff[0] else ("yellow" if diff[1] else "red")
        x0, y0, x1, y1 = box.tolist()
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=0.6))
        ax.scatter(lm[vis, 0], lm[vis, 1], s=2, c="cyan", linewidths=0)
    ax.set_title(f"scene: {s['boxes'].shape[0]} faces", fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "synth_samples.jpg")
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fig = plt.figure(figsize=(12, 17))
    grid = fig.add_gridspec(7, COLS, height_ratios=[1, 1, 1, 1, 2, 2, 0.05])
    for row, domain in enumerate(("source", "target", "clean")):
        for col, s in enumerate(render_crops(args.seed, list(range(COLS)), 128, domain)):
            _crop(fig.add_subplot(grid[row, col]), s, domain)
    animals = render_crops(args.seed, [0, 1, 2], 128, "source", "horse", "animal5") + render_crops(
        args.seed, [0, 1, 2], 128, "source", "sheep", "animal5"
    )
    for col, s in enumerate(animals):
        _crop(fig.add_subplot(grid[3, col]), s, "horse" if col < 3 else "sheep")
    scenes = render_scenes(args.seed, [0, 1, 2, 4, 6, 7], 640, 640, "source")
    for i, s in enumerate(scenes):
        _scene(fig.add_subplot(grid[4 + i // 3, 2 * (i % 3) : 2 * (i % 3) + 2]), s)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
