"""RetinaFace mnet0.25 side by side with Pytorch_Retinaface (biubug6), one process, alternating A/B.

    python benchmarks/peer_retinaface.py --peer-dir /path/to/Pytorch_Retinaface
    python benchmarks/peer_retinaface.py --peer-dir PATH --parts infer,deploy --rounds 30

The peer's code is imported from ``--peer-dir`` (a checkout the user points to; nothing of it is in
this repository); without it the script prints a message and exits 0. Prints one JSON object.

Parts (``--parts``, comma separated; medians over ``--rounds``, every round runs each side once,
in alternating order, so that machine load hits both alike):

- ``infer``: VGA (480x640) eager forward, inference mode, at 1 and 2 threads: ours (BatchNorm
  folded, channels_last; ``facelit.nets.fused``), ours as before that change (plain conv-BN-act,
  contiguous maps: the same modules run as ``nn.Sequential``), the peer (``phase="test"``, its own
  mean-subtracted BGR input).
- ``deploy``: our ONNX export (``facelit.nets.export``) in ONNX Runtime at 1 and 2 threads, next to
  the peer's eager forward.
- ``train``: one training step (forward, matching, loss, backward, SGD) at 640x640, batch 8, 2
  threads, on the same synthetic scenes: ours (``RetinaFaceModule``'s net and ``MultiBoxLoss``)
  vs the peer's net with its own ``MultiBoxLoss`` (0.35 IoU, 7:1 OHEM, loc weight 2) and priors.
- ``post``: post-processing at VGA (``--ckpt``: a fitted detector; a synthetic scene): our
  ``detect`` vs the peer's ``detect.py`` flow with its numpy NMS, on the same dense outputs.
- ``data``: the data pipelines alone at one thread (one worker's work), CPU ms per image (process
  time: robust to the machine's load), same JPEGs as ``e2e``.
- ``e2e``: training throughput including data loading: both sides read the same JPEGs from a
  temporary WIDER-style tree (our ``WiderFaceDataset`` + ``DetectionAugment`` vs the peer's
  ``WiderFaceDetection`` + cv2 ``preproc``; needs cv2), ``--workers`` DataLoader workers each.

The peer's loss moves tensors with ``.cuda()`` unconditionally; on a machine without CUDA the
benchmark makes ``Tensor.cuda`` the identity while (and only while) that loss runs.

On a CUDA device (``--device cuda``) the ``gpu`` part measures bf16 + channels_last training at
640x640 with batched (device) augmentation for mnet0.25 and ResNet-50 P2-P6: images/s, the share of
wall time the GPU waits for data, and MFU against ``--peak-tflops`` (bf16 dense peak of the device).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

VGA = (480, 640)
TRAIN_SIZE = 640
PEER_BGR_MEAN = (104.0, 117.0, 123.0)  # the peer's pixel means (BGR, 0-255), subtracted in its data pipeline
PEER_LOC_WEIGHT = 2.0  # cfg_mnet["loc_weight"]
PEER_LOSS_ARGS = (2, 0.35, True, 0, True, 7, 0.35, False)  # train.py: MultiBoxLoss(...)
LR, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 5e-4  # both recipes' SGD


# ---------------------------------------------------------------------------------------------
# the peer
# ---------------------------------------------------------------------------------------------
def load_peer(peer_dir: Path) -> types.SimpleNamespace:
    """Import the peer's model, loss, priors and config from its checkout (cv2 only for its data)."""
    if not (peer_dir / "models" / "retinaface.py").is_file():
        raise FileNotFoundError(f"{peer_dir} is not a Pytorch_Retinaface checkout (no models/retinaface.py)")
    sys.path.insert(0, str(peer_dir))
    try:
        import cv2  # noqa: F401

        data = importlib.import_module("data")
    except ImportError:  # its data package imports cv2; model and loss only need its config
        spec = importlib.util.spec_from_file_location("data", peer_dir / "data" / "config.py")
        data = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(data)
        sys.modules["data"] = data
    loss_mod = importlib.import_module("layers.modules.multibox_loss")
    loss_mod.GPU = False
    return types.SimpleNamespace(
        RetinaFace=importlib.import_module("models.retinaface").RetinaFace,
        MultiBoxLoss=loss_mod.MultiBoxLoss,
        PriorBox=importlib.import_module("layers.functions.prior_box").PriorBox,
        cfg=dict(data.cfg_mnet, pretrain=False),
        data=data if hasattr(data, "WiderFaceDetection") else None,
    )


@contextlib.contextmanager
def cuda_is_identity() -> Iterator[None]:
    """``Tensor.cuda`` returns the tensor itself inside the block when CUDA is absent."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def peer_images(images: torch.Tensor) -> torch.Tensor:
    """Our RGB [0, 1] (B, 3, H, W) -> the peer's input: BGR 0-255 minus its means."""
    mean = torch.tensor(PEER_BGR_MEAN).view(1, 3, 1, 1)
    return images.flip(1) * 255.0 - mean


def peer_targets(batch: dict[str, Any], size: int) -> list[torch.Tensor]:
    """Our padded detection batch -> the peer's per-image (N, 15) rows: xyxy, 5 (x, y), label, in [0, 1]."""
    rows = []
    for i in range(batch["boxes"].shape[0]):
        valid = batch["valid"][i]
        boxes = batch["boxes"][i][valid] / size
        points = batch["landmarks"][i][valid].flatten(1) / size
        has = batch["landmarks_valid"][i][valid]
        points = torch.where(has[:, None], points, torch.full_like(points, -1.0))
        label = torch.where(has, 1.0, -1.0)[:, None]
        rows.append(torch.cat((boxes, points, label), 1).float())
    return rows


# ---------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------
def ours_before(net: nn.Module) -> nn.Module:
    """The same modules run as before BatchNorm folding: every ``ConvBNAct`` as a plain
    ``nn.Sequential``, contiguous maps (the eager path before this change)."""
    from facelit.nets.fused import ConvBNAct

    for m in net.modules():
        if isinstance(m, ConvBNAct):
            m.__class__ = nn.Sequential
    net.channels_last_inference = False
    return net


def synthetic_batch(n: int, size: int, seed: int = 0) -> dict[str, Any]:
    """``n`` augmented synthetic scenes at ``size`` (our detection batch)."""
    from facelit.augment.detection import DetectionAugment
    from facelit.batch import collate_detections
    from facelit.synth import render_scenes

    augment = DetectionAugment(output_size=size)
    gen = torch.Generator().manual_seed(seed)
    samples = [augment(s, gen) for s in render_scenes(seed, list(range(n)), size, size, max_faces=16)]
    for s in samples:
        s.pop("mesh", None), s.pop("mesh_valid", None)
    return collate_detections(samples)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def alternate(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every function, interleaved: each round runs all of them once (order
    reversed every other round). The first ``warmup`` rounds are dropped. ``clock``: wall time by
    default; ``time.process_time`` (this process's CPU time) for single-threaded work on a loaded
    machine, where the wall time mostly measures the other jobs."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = clock()
            fns[name]()
            if r >= warmup:
                times[name].append(clock() - t0)
    return times


def summary(times: dict[str, list[float]], scale: float = 1000.0) -> dict[str, float]:
    return {k: round(scale * statistics.median(v), 2) for k, v in times.items()}


def part_infer(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    from facelit.nets.retinaface import RetinaFace

    torch.manual_seed(0)
    ours = RetinaFace().eval()
    before = ours_before(RetinaFace().eval())
    before.load_state_dict(ours.state_dict())
    theirs = peer.RetinaFace(peer.cfg, phase="test").eval()
    x = torch.rand(1, 3, *VGA)
    xp = peer_images(x)
    out: dict[str, Any] = {"params": {"ours": _params(ours), "peer": _params(theirs)}}
    with torch.inference_mode():
        diff = max(float((ours(x)[k] - before(x)[k]).abs().max()) for k in ("cls", "box", "landmarks"))
        out["max_abs_diff_vs_before"] = diff
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = {"ours": lambda: ours(x), "ours_before": lambda: before(x), "peer": lambda: theirs(xp)}
            med = summary(alternate(fns, args.rounds, args.warmup))
            out[f"{threads}_thread_ms"] = med
            out[f"{threads}_thread_speedup_vs_peer"] = round(med["peer"] / med["ours"], 3)
            out[f"{threads}_thread_speedup_vs_before"] = round(med["ours_before"] / med["ours"], 3)
    return out


def part_deploy(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    from facelit.nets.export import export_onnx
    from facelit.nets.retinaface import RetinaFace

    torch.manual_seed(0)
    ours = RetinaFace().eval()
    theirs = peer.RetinaFace(peer.cfg, phase="test").eval()
    x = torch.rand(1, 3, *VGA)
    xp, xn = peer_images(x), x.numpy()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(ours, Path(tmp) / "retinaface.onnx")
        for threads in args.threads:
            torch.set_num_threads(threads)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            with torch.inference_mode():
                run = session.run
                fns = {
                    "ours_onnxruntime": lambda run=run: run(None, {"images": xn}),
                    "peer": lambda: theirs(xp),
                }
                med = summary(alternate(fns, args.rounds, args.warmup))
            out[f"{threads}_thread_ms"] = med
            out[f"{threads}_thread_speedup_vs_peer"] = round(med["peer"] / med["ours_onnxruntime"], 3)
    return out


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _sgd(net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def train_steps(peer: types.SimpleNamespace, size: int) -> dict[str, Callable[[dict[str, Any]], float]]:
    """{"ours": step(batch) -> loss, "peer": step(batch) -> loss}: forward, loss, backward, SGD."""
    from lightning_modules.retinaface import RetinaFaceModule

    torch.manual_seed(0)
    module = RetinaFaceModule(image_size=size).train()
    ours_opt = _sgd(module.net)
    theirs = peer.RetinaFace(peer.cfg, phase="train").train()
    theirs_opt = _sgd(theirs)
    criterion = peer.MultiBoxLoss(*PEER_LOSS_ARGS)
    priors = peer.PriorBox(peer.cfg, image_size=(size, size)).forward()

    def ours_step(batch: dict[str, Any]) -> float:
        images = batch["image"]
        outputs = module.net(images)
        anchors = module.net.anchors_for(tuple(images.shape[-2:]), images.device)
        loss = module.criterion(outputs, batch, anchors)["total"]
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()
        return float(loss.detach())

    def peer_step(batch: dict[str, Any]) -> float:
        images, targets = batch["peer_images"], batch["peer_targets"]
        outputs = theirs(images)
        with cuda_is_identity():
            loss_l, loss_c, loss_landm = criterion(outputs, priors, targets)
        loss = PEER_LOC_WEIGHT * loss_l + loss_c + loss_landm
        theirs_opt.zero_grad(set_to_none=True)
        loss.backward()
        theirs_opt.step()
        return float(loss.detach())

    return {"ours": ours_step, "peer": peer_step}


def part_train(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.train_threads)
    batch = synthetic_batch(args.batch, TRAIN_SIZE)
    batch["peer_images"] = peer_images(batch["image"])
    batch["peer_targets"] = peer_targets(batch, TRAIN_SIZE)
    steps = train_steps(peer, TRAIN_SIZE)
    fns = {name: (lambda fn=fn: fn(batch)) for name, fn in steps.items()}
    med = summary(alternate(fns, max(3, args.rounds // 3), 2))
    return {
        "batch": args.batch,
        "size": TRAIN_SIZE,
        "threads": args.train_threads,
        "faces_in_batch": int(batch["valid"].sum()),
        "step_ms": med,
        "speedup_vs_peer": round(med["peer"] / med["ours"], 3),
    }


def part_e2e(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    from peer_retinaface_data import e2e_loaders, write_wider_tree

    if peer.data is None:
        return {"skipped": "cv2 is not importable (pip install opencv-python-headless for this part)"}
    torch.set_num_threads(args.train_threads)
    steps = train_steps(peer, TRAIN_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_wider_tree(Path(tmp), args.e2e_images)
        loaders = e2e_loaders(root, peer, TRAIN_SIZE, args.batch, args.workers)
        iters = {k: iter(v) for k, v in loaders.items()}

        def run(name: str) -> None:
            for _ in range(args.e2e_steps):
                steps[name](next(iters[name]))

        fns = {name: (lambda name=name: run(name)) for name in steps}
        times = alternate(fns, args.e2e_rounds, 1)
    per_s = {k: round(args.batch * args.e2e_steps / statistics.median(v), 2) for k, v in times.items()}
    return {
        "images_per_s": per_s,
        "speedup_vs_peer": round(per_s["ours"] / per_s["peer"], 3),
        "workers": args.workers,
        "threads": args.train_threads,
        "steps_per_round": args.e2e_steps,
    }


def part_data(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    """Data pipeline alone, one thread (one DataLoader worker's work): CPU ms per training image of our
    ``WiderFaceDataset`` + ``DetectionAugment`` vs the peer's ``WiderFaceDetection`` + cv2
    ``preproc``, on the same JPEGs, alternating rounds over all ``--e2e-images``."""
    from peer_retinaface_data import e2e_datasets, write_wider_tree

    if peer.data is None:
        return {"skipped": "cv2 is not importable (pip install opencv-python-headless for this part)"}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_wider_tree(Path(tmp), args.e2e_images)
        datasets = e2e_datasets(root, peer, TRAIN_SIZE)
        fns = {name: (lambda ds=ds: [ds[i] for i in range(len(ds))]) for name, ds in datasets.items()}
        cpu = alternate(fns, args.e2e_rounds, 1, time.process_time)
    ms = {k: round(1000 * statistics.median(v) / args.e2e_images, 2) for k, v in cpu.items()}
    return {"cpu_ms_per_image": ms, "peer_over_ours": round(ms["peer"] / ms["ours"], 3), "threads": 1}


def part_post(peer: types.SimpleNamespace, args: argparse.Namespace) -> dict[str, Any]:
    """Post-processing at VGA on a fitted detector's outputs for a synthetic scene: our ``detect``
    vs the peer's ``detect.py`` flow (decode every anchor, threshold, top-k, numpy ``py_cpu_nms``,
    keep-top-k) on the same dense outputs (same anchor order and coding), next to the network time."""
    import numpy as np

    from facelit.nets.retinaface import RetinaFace, detect
    from facelit.nets.retinaface_post import KEEP_TOP_K, NMS_THRESHOLD, SCORE_THRESHOLD, TOP_K
    from facelit.synth import render_scene

    if args.ckpt is None:
        return {
            "skipped": "needs --ckpt (a fitted RetinaFaceModule checkpoint; a random net's scores are flat)"
        }
    box_utils = importlib.import_module("utils.box_utils")
    py_cpu_nms = importlib.import_module("utils.nms.py_cpu_nms").py_cpu_nms
    torch.set_num_threads(1)
    net = RetinaFace().eval()
    state = torch.load(args.ckpt, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    image = render_scene(args.scene_seed, 0, *VGA)["image"][None]
    anchors = net.anchors_for(VGA)
    priors = peer.PriorBox(peer.cfg, image_size=VGA).forward()
    scale = torch.tensor([VGA[1], VGA[0]] * 5)

    def peer_post(out: dict[str, torch.Tensor]) -> np.ndarray:
        boxes = box_utils.decode(out["box"][0], priors, peer.cfg["variance"]) * scale[:4]
        scores = out["cls"][0].softmax(-1)[:, 1].numpy()
        landms = (box_utils.decode_landm(out["landmarks"][0], priors, peer.cfg["variance"]) * scale).numpy()
        inds = np.where(scores > SCORE_THRESHOLD)[0]
        boxes, landms, scores = boxes.numpy()[inds], landms[inds], scores[inds]
        order = scores.argsort()[::-1][:TOP_K]
        boxes, landms, scores = boxes[order], landms[order], scores[order]
        dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
        keep = py_cpu_nms(dets, NMS_THRESHOLD)
        return np.concatenate((dets[keep], landms[keep]), axis=1)[:KEEP_TOP_K]

    with torch.inference_mode():
        out = net(image)
        fns = {
            "network": lambda: net(image),
            "ours_post": lambda: detect(out, anchors),
            "peer_post": lambda: peer_post(out),
        }
        med = summary(alternate(fns, args.rounds, args.warmup))
        scores = out["cls"][0].softmax(-1)[:, 1]
        ours, theirs = detect(out, anchors)[0], peer_post(out)
    return {
        "checkpoint": str(args.ckpt),
        "ms": med,
        "ours_post_share_of_network": round(med["ours_post"] / med["network"], 3),
        "peer_post_share_of_network": round(med["peer_post"] / med["network"], 3),
        "post_speedup_vs_peer": round(med["peer_post"] / med["ours_post"], 2),
        "anchors": int(scores.numel()),
        "candidates_above_threshold": int((scores > SCORE_THRESHOLD).sum()),
        "background_score_median": round(float(scores.median()), 4),
        "detections": {"ours": int(ours["scores"].numel()), "peer": int(theirs.shape[0])},
    }


PARTS = {
    "infer": part_infer,
    "deploy": part_deploy,
    "train": part_train,
    "data": part_data,
    "e2e": part_e2e,
    "post": part_post,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-dir", type=Path, default=None, help="checkout of biubug6/Pytorch_Retinaface")
    parser.add_argument("--parts", default="infer,deploy,post,train,data,e2e")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--e2e-images", type=int, default=48)
    parser.add_argument("--e2e-steps", type=int, default=3)
    parser.add_argument("--e2e-rounds", type=int, default=5)
    parser.add_argument("--ckpt", type=Path, default=None, help="fitted RetinaFaceModule checkpoint (post)")
    parser.add_argument("--scene-seed", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU (gpu part)")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        from peer_retinaface_data import part_gpu

        print(json.dumps({"benchmark": "peer_retinaface", **part_gpu(args)}))
        return
    if args.peer_dir is None:
        print(
            "peer_retinaface: no --peer-dir given; point it to a checkout of biubug6/Pytorch_Retinaface "
            "to measure side by side (nothing measured)"
        )
        return
    peer = load_peer(args.peer_dir.resolve())
    result: dict[str, Any] = {"benchmark": "peer_retinaface", "load_avg_start": os.getloadavg()[0]}
    for name in args.parts.split(","):
        if name not in PARTS:
            raise SystemExit(f"unknown part {name!r}; known: {sorted(PARTS)}")
        result[name] = PARTS[name](peer, args)
        print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)  # progress; stdout: one object
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
