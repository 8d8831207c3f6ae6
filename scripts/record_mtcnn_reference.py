"""Record facenet-pytorch's MTCNN detections once, as the reference our cascade is tested against.

facenet-pytorch pins an old torch, so it is never a dependency: install it without dependencies
into a scratch folder and run it with our torch::

    pip install --no-deps --target /tmp/fnp facenet-pytorch==2.6.0
    python scripts/record_mtcnn_reference.py --facenet-path /tmp/fnp

It writes ``tests/data/mtcnn/scene.png`` (a synthetic multi-face scene, saved so that later changes
of the renderer do not move the reference) and ``tests/data/mtcnn/reference.json``: for each image
and preset, facenet-pytorch's ``detect_face`` boxes, scores and landmarks (sorted by score) on the
image's 8-bit pixels, with its own copy of the released weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "mtcnn"
ASTRONAUT = REPO.parent / "shared" / "data" / "images" / "astronaut.png"
SCENE = {
    "seed": 0,
    "index": 3,
    "height": 240,
    "width": 320,
    "max_faces": 12,
    "min_face": 14.0,
    "max_face_frac": 0.3,
}
CASES = [("astronaut", "default"), ("scene", "default"), ("scene", "wider")]


def _scene_png(path: Path) -> None:
    from facelit.synth import render_scenes

    kw = dict(SCENE)
    image = render_scenes(kw.pop("seed"), [kw.pop("index")], **kw)[0]["image"]
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facenet-path", required=True, help="folder holding the facenet_pytorch package")
    parser.add_argument("--astronaut", default=str(ASTRONAUT))
    args = parser.parse_args(argv)
    sys.path.insert(0, args.facenet_path)
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from facenet_pytorch.models.utils.detect_face import detect_face

    from facelit.nets.mtcnn_cascade import get_preset

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    _scene_png(OUT / "scene.png")
    paths = {"astronaut": Path(args.astronaut), "scene": OUT / "scene.png"}
    nets = [net.eval() for net in (PNet(), RNet(), ONet())]
    record: dict = {"facenet_pytorch": "2.6.0", "torch": torch.__version__, "scene": SCENE, "cases": []}
    for image_name, preset in CASES:
        s = get_preset(preset)
        array = np.asarray(Image.open(paths[image_name]).convert("RGB"))
        with torch.no_grad():
            boxes, points = detect_face(array[None], s.min_face, *nets, list(s.thresholds), s.factor, "cpu")
        boxes = np.asarray(boxes[0], dtype=np.float64).reshape(-1, 5)
        points = np.asarray(points[0], dtype=np.float64).reshape(-1, 5, 2)
        order = np.argsort(-boxes[:, 4], kind="stable")
        record["cases"].append(
            {
                "image": image_name,
                "preset": preset,
                "boxes": boxes[order, :4].tolist(),
                "scores": boxes[order, 4].tolist(),
                "landmarks": points[order].tolist(),
            }
        )
        print(image_name, preset, len(order), "faces")
    (OUT / "reference.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
