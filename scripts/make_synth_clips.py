"""Render a picture of synthetic video clips: docs/synth_clips.jpg.

    python scripts/make_synth_clips.py [--out docs/synth_clips.jpg] [--seed 0] [--clips 4] [--frames 16]

One row per clip (every frame, left to right) with its ground-truth landmarks drawn (iBUG-68; red
in :func:`facelit.viz.draw_overlay`); the yaw of each frame and an ``occ`` mark on frames with an
occluder are printed in the corner.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facelit.synth import render_clips  # noqa: E402
from facelit.viz import grid  # noqa: E402
from facelit.viz_video import overlay_frames  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synth_clips.jpg"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for clip in render_clips(args.seed, list(range(args.clips)), args.frames, args.size):
        labels = [
            f"{float(yaw):+.0f}" + (" occ" if bool(occ) else "")
            for yaw, occ in zip(clip["pose"][:, 0], clip["occluded"], strict=True)
        ]
        frames = overlay_frames(clip["image"], target=clip["landmarks"], labels=labels)
        rows.append(grid(list(frames), columns=len(frames), pad=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(rows, columns=1, pad=1)).save(args.out, quality=88)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
