"""MTCNN cascade throughput side by side with facenet-pytorch's, same images, weights and settings,
one process; plus the memory of a crowded (700-face) image. Prints JSON.

    pip install --no-deps --target /tmp/fnp facenet-pytorch==2.6.0     # never a dependency
    python benchmarks/mtcnn_speed.py --facenet-path /tmp/fnp --threads 1 2
    python benchmarks/mtcnn_speed.py --facenet-path /tmp/fnp --device cuda --batch 16
    python benchmarks/mtcnn_speed.py --memory                           # 700 faces, chunked vs not

Images (640x480): ``one_face`` (the astronaut portrait, scaled to 480x480, on grey) and
``thirty_faces`` (30 copies of its face, 70x80 px each, on grey). Each timing is the median of
``--repeats`` runs after a warm-up, the two implementations alternating. ``equal`` reports the
largest box/landmark difference (px) and score difference between the two outputs.
Without ``--facenet-path`` only our timings are printed (and a message says why).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelit.datasets.crops import load_rgb  # noqa: E402
from facelit.nets.mtcnn import pretrained_cascade_nets  # noqa: E402
from facelit.nets.mtcnn_cascade import CascadeSettings, detect_faces  # noqa: E402

ASTRONAUT = REPO.parent / "shared" / "data" / "images" / "astronaut.png"
GREY = 0.5
FACE_WINDOW = (slice(50, 190), slice(165, 285))  # rows, cols of the astronaut's face (with margin)


def _quantise(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round() / 255


def make_images(astronaut: Path) -> dict[str, torch.Tensor]:
    """The two 640x480 benchmark images, float RGB in [0, 1] on 8-bit levels."""
    a = load_rgb(astronaut)
    one = torch.full((3, 480, 640), GREY)
    one[:, :, 80:560] = F.interpolate(a[None], size=(480, 480), mode="area")[0]
    tile = F.interpolate(a[None, :, FACE_WINDOW[0], FACE_WINDOW[1]], size=(80, 70), mode="area")[0]
    many = torch.full((3, 480, 640), GREY)
    for i in range(5):
        for j in range(6):
            many[:, 10 + i * 94 : 90 + i * 94, 10 + j * 105 : 80 + j * 105] = tile
    return {"one_face": _quantise(one), "thirty_faces": _quantise(many)}


def crowded_image(astronaut: Path, faces: int = 700) -> torch.Tensor:
    """A 1600x1400 image with ``faces`` copies (36x40 px) of the astronaut's face."""
    a = load_rgb(astronaut)
    tile = F.interpolate(a[None, :, FACE_WINDOW[0], FACE_WINDOW[1]], size=(40, 36), mode="area")[0]
    image = torch.full((3, 1400, 1600), GREY)
    cols = 1600 // 44
    for k in range(faces):
        r, c = divmod(k, cols)
        image[:, 4 + r * 48 : 44 + r * 48, 4 + c * 44 : 40 + c * 44] = tile
    return _quantise(image)


def _median_times(fns: list, repeats: int, sync) -> list[float]:
    """Median seconds per call of each function, the functions alternating within every repeat."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times, strict=False):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            record.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def _compare(ours: dict[str, torch.Tensor], boxes: np.ndarray, points: np.ndarray) -> dict[str, float]:
    ref = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 5)
    pts = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 5, 2)
    out = {"faces_ours": len(ours["boxes"]), "faces_facenet": len(ref)}
    if len(ref) == len(ours["boxes"]) and len(ref):
        # equal faces have equal scores: pair detections by position (row-major), not by score
        key = lambda b: (b[:, 1].round() * 1e5 + b[:, 0]).argsort()
        mine, theirs = key(ours["boxes"].cpu()), key(ref)
        out["max_box_px"] = float((ours["boxes"].cpu()[mine] - ref[theirs, :4]).abs().max())
        out["max_landmark_px"] = float((ours["landmarks"].cpu()[mine] - pts[theirs]).abs().max())
        out["max_score"] = float((ours["scores"].cpu()[mine] - ref[theirs, 4]).abs().max())
    return out


def run_speed(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nets = [n.to(device) for n in pretrained_cascade_nets()]
    settings = CascadeSettings()
    fnp = None
    report: dict = {
        "device": str(device),
        "batch": args.batch,
        "repeats": args.repeats,
        "settings": repr(settings),
    }
    if args.facenet_path:
        sys.path.insert(0, args.facenet_path)
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
        from facenet_pytorch.models.utils.detect_face import detect_face

        fnp_nets = [n.eval().to(device) for n in (PNet(), RNet(), ONet())]
        fnp = lambda arrays: detect_face(
            arrays, settings.min_face, *fnp_nets, list(settings.thresholds), settings.factor, device
        )
    else:
        report["facenet_pytorch"] = (
            "skipped: pass --facenet-path (pip install --no-deps --target DIR facenet-pytorch)"
        )
    for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for name, image in make_images(Path(args.astronaut)).items():
            batch = image[None].repeat(args.batch, 1, 1, 1).to(device)
            arrays = (batch * 255).round().byte().permute(0, 2, 3, 1).contiguous()
            entry: dict = {"threads": threads, "image": name}
            with torch.no_grad():
                ours_fn = lambda batch=batch: detect_faces(batch, *nets, settings=settings)
                ours_out = ours_fn()
                fns = [ours_fn]
                if fnp is not None:
                    fnp_arrays = arrays if device.type == "cuda" else arrays.cpu().numpy()
                    boxes, points = fnp(fnp_arrays)
                    entry["equal"] = _compare(ours_out[0], boxes[0], points[0])
                    fns.append(lambda arrays=fnp_arrays: fnp(arrays))
                times = _median_times(fns, args.repeats, sync)
                entry["ours_images_per_s"] = round(args.batch / times[0], 3)
                if fnp is not None:
                    entry["facenet_images_per_s"] = round(args.batch / times[1], 3)
                    entry["speedup"] = round(times[1] / times[0], 3)
            report.setdefault("runs", []).append(entry)
            print(json.dumps(entry), file=sys.stderr)
    return report


def memory_child(chunk: int, astronaut: str) -> None:
    """Run the cascade once on the crowded image; print peak memory (RSS, or CUDA allocated)."""
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    image = crowded_image(Path(astronaut)).to(device)
    nets = [n.to(device) for n in pretrained_cascade_nets()]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        final, stages = detect_faces(
            image[None], *nets, settings=CascadeSettings(chunk=chunk), return_stages=True
        )
    out = {
        "chunk": chunk,
        "faces_found": len(final[0]["boxes"]),
        "candidates": {k: len(v[0]["boxes"]) for k, v in stages.items()},
        "peak_rss_mb_added": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1),
    }
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facenet-path", default=None, help="folder holding the facenet_pytorch package")
    parser.add_argument("--astronaut", default=str(ASTRONAUT))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch", type=int, default=1, help="images per call (equal sizes, as facenet needs)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--memory", action="store_true", help="700-face image: peak memory, chunked vs one chunk"
    )
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.astronaut)
        return
    if args.memory:
        runs = []
        for chunk in (256, 1_000_000):
            done = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(chunk), "--astronaut", args.astronaut],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps({"memory_700_faces": runs}, indent=1))
        return
    print(json.dumps(run_speed(args), indent=1))


if __name__ == "__main__":
    main()
