"""Qualitative interspecies overlay on a real image: input | predicted warp | keypoints mapped back.

    python scripts/interspecies_overlay.py --ckpt logs/interspecies_demo/version_0/checkpoints/last.ckpt \
        --image ../shared/data/images/chelsea.png --box 75 0 375 300 --out docs/interspecies_chelsea.jpg

``--box`` is the face crop (xyxy pixels of the image, default: the central square); it is resampled
to the model's training size (``--size``). Works with any :class:`InterspeciesModule` checkpoint
(methods without a warp show the input twice).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from facelit.datasets.crops import crop_and_resize, load_rgb
from facelit.viz import draw_overlay, grid
from lightning_modules.interspecies import InterspeciesModule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--box", type=float, nargs=4, default=None, metavar=("X1", "Y1", "X2", "Y2"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    image = load_rgb(args.image)
    h, w = image.shape[-2:]
    side = min(h, w)
    box = torch.tensor(
        args.box if args.box else [(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2]
    )
    crop, _ = crop_and_resize(image, box, args.size)
    model = InterspeciesModule.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    with torch.no_grad():
        out = model(crop[None])
    warped = out.get("warped", crop[None])[0]
    on_warp = out.get("warped_landmarks", out["landmarks"])[0]
    tiles = [
        draw_overlay(crop, {}, args.scale),
        draw_overlay(warped, {"landmarks": on_warp}, args.scale),
        draw_overlay(crop, {"landmarks": out["landmarks"][0]}, args.scale),
    ]
    Image.fromarray(grid(tiles, columns=3)).save(args.out, quality=90)
    print(args.out)


if __name__ == "__main__":
    main()
