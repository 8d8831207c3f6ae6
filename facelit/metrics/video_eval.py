"""Offline 300-VW evaluation of a predictions folder: NME, AUC@0.08 and FR@0.08 per test category
over frames (the 300-VW protocol: inter-ocular normalisation by the outer eye corners, CED up to
0.08), plus the mean temporal jitter of the videos.

    python -m facelit.metrics.video_eval --pred PRED_DIR --gt 300VW_ROOT [--categories 1 2 3]
                                         [--scheme ibug68|rednet7] [--threshold 0.08]

Predictions mirror the annotations: ``PRED_DIR/<clip>/<frame>.pts`` (or ``PRED_DIR/<clip>/annot/
<frame>.pts``), one .pts per annotated frame with the scheme's K points, in the same 1-based
image coordinates as the ground truth. A missing prediction or a wrong point count is an error
naming the file (every frame is scored, as the benchmark does). Prints one JSON line per category
and one for all of them together (``category: "all"``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from facelit.datasets.w300vw import W300VW_CATEGORIES, read_pts, scan_clip
from facelit.geometry.schemes import IBUG68, get_scheme, subset_from_ibug68

from .landmarks import auc_from_nmes, failure_rate
from .video import DEFAULT_VIDEO_THRESHOLD, nme_per_frame, temporal_jitter

__all__ = ["load_video", "evaluate_300vw"]


def _pred_path(pred_root: Path, clip: str, frame: int) -> Path:
    name = f"{frame + 1:06d}.pts"
    flat = pred_root / clip / name
    return flat if flat.is_file() else pred_root / clip / "annot" / name


def load_video(pred_root: Path, gt_root: Path, clip: str, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and ground-truth points (1, N, K, 2) of every annotated frame of one video."""
    video = scan_clip(gt_root / clip, need_frames=False)  # annotations are enough
    s = get_scheme(scheme)
    gt = torch.stack([read_pts(video.pts_path(f)) for f in range(video.num_frames)])
    if s.name != IBUG68.name:
        gt = subset_from_ibug68(gt, s)
    pred = torch.stack(
        [read_pts(_pred_path(pred_root, clip, f), s.num_points) for f in range(video.num_frames)]
    )
    return pred[None], gt[None]


def evaluate_300vw(
    pred_root: str | Path,
    gt_root: str | Path,
    categories: Sequence[int] = (1, 2, 3),
    scheme: str = IBUG68.name,
    threshold: float = DEFAULT_VIDEO_THRESHOLD,
) -> list[dict[str, Any]]:
    """One result dict per category (and ``"all"``): ``nme``, ``auc@T``, ``fr@T``, ``jitter``
    (mean over videos), ``frames``, ``videos``."""
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    results, pooled, pooled_jitter = [], [], []
    for category in categories:
        if category not in W300VW_CATEGORIES:
            raise ValueError(f"unknown 300-VW category {category}; known: {sorted(W300VW_CATEGORIES)}")
        nmes, jitters = [], []
        for clip in W300VW_CATEGORIES[category]:
            pred, gt = load_video(pred_root, gt_root, clip, scheme)
            nmes.append(nme_per_frame(pred, gt, scheme=scheme).flatten())
            jitters.append(temporal_jitter(pred, gt, scheme=scheme))
        frames, jit = torch.cat(nmes), torch.cat(jitters)
        pooled.append(frames), pooled_jitter.append(jit)
        results.append(_summary(category, frames, jit, threshold, len(W300VW_CATEGORIES[category])))
    if len(results) > 1:
        results.append(
            _summary(
                "all",
                torch.cat(pooled),
                torch.cat(pooled_jitter),
                threshold,
                sum(r["videos"] for r in results),
            )
        )
    return results


def _summary(
    category: int | str, frames: torch.Tensor, jitter: torch.Tensor, threshold: float, videos: int
) -> dict[str, Any]:
    defined = frames[~torch.isnan(frames)]
    return {
        "category": category,
        "nme": float(defined.double().mean()),
        f"auc@{threshold:g}": auc_from_nmes(defined, threshold),
        f"fr@{threshold:g}": failure_rate(defined, threshold),
        "jitter": float(torch.nanmean(jitter.double())),
        "frames": int(defined.numel()),
        "undefined_frames": int(frames.numel() - defined.numel()),
        "videos": videos,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="300-VW evaluation of a predictions folder (JSON lines)")
    parser.add_argument("--pred", required=True, help="predictions: <pred>/<clip>/<frame>.pts")
    parser.add_argument("--gt", required=True, help="300-VW root: <gt>/<clip>/annot/<frame>.pts")
    parser.add_argument("--categories", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--scheme", default=IBUG68.name, help="ibug68 or an iBUG-68 subset such as rednet7")
    parser.add_argument("--threshold", type=float, default=DEFAULT_VIDEO_THRESHOLD)
    args = parser.parse_args(argv)
    results = evaluate_300vw(args.pred, args.gt, args.categories, args.scheme, args.threshold)
    for row in results:
        print(json.dumps(row))
    return results


if __name__ == "__main__":
    main()
