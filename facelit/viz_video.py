"""Overlays for clips: predicted (green) and ground-truth (red) landmarks drawn on every frame, as a
frame strip (one image, one row per clip, for W&B image logging) or as a video file (PyAV).

Inputs follow :mod:`facelit.datasets.clips`: frames (T, 3, H, W) float in [0, 1], points (T, K, 2)
in the pixel-area frame, ``mask`` (T,) False on padding frames (never drawn). Drawing reuses
:func:`facelit.viz.draw_overlay`; outputs are uint8 (H, W, 3) arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from facelit.viz import draw_overlay, grid

__all__ = ["overlay_frames", "clip_strip", "batch_strips", "write_video"]

_LABEL_COLOUR = (255, 255, 0)


def _pick(length: int, mask: torch.Tensor | None, max_frames: int | None) -> list[int]:
    """Valid frame indices, evenly thinned to at most ``max_frames``."""
    valid = list(range(length)) if mask is None else mask.nonzero().flatten().tolist()
    if max_frames is None or len(valid) <= max_frames:
        return valid
    picks = torch.linspace(0, len(valid) - 1, max_frames).round().long().tolist()
    return [valid[i] for i in picks]


def overlay_frames(
    images: torch.Tensor,
    pred: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    max_frames: int | None = None,
    scale: int = 1,
) -> np.ndarray:
    """Frames with overlays as (N, H * scale, W * scale, 3) uint8, N = valid frames (at most
    ``max_frames``, evenly spaced).

    Args:
        images: (T, 3, H, W). pred, target: (T, K, 2) or None. mask: (T,) bool or None (all valid).
        labels: T short texts drawn in the top-left corner (e.g. per-frame NME), or None.
        max_frames: keep at most this many frames. scale: integer upscaling of small crops.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected frames (T, 3, H, W), got {tuple(images.shape)}")
    t = images.shape[0]
    for name, value in (("pred", pred), ("target", target)):
        if value is not None and (value.ndim != 3 or value.shape[0] != t or value.shape[-1] != 2):
            raise ValueError(f"{name} must be (T={t}, K, 2), got {tuple(value.shape)}")
    if labels is not None and len(labels) != t:
        raise ValueError(f"labels must have T={t} entries, got {len(labels)}")
    out = []
    for i in _pick(t, mask, max_frames):
        items: dict[str, torch.Tensor] = {}
        if pred is not None:
            items["landmarks"] = pred[i]
        if target is not None:
            items["gt_landmarks"] = target[i]
        frame = draw_overlay(images[i], items, scale)
        if labels is not None:
            pil = Image.fromarray(frame)
            ImageDraw.Draw(pil).text((1, 1), labels[i], fill=_LABEL_COLOUR)
            frame = np.asarray(pil)
        out.append(frame)
    if not out:
        raise ValueError("no valid frame to draw")
    return np.stack(out)


def clip_strip(
    images: torch.Tensor,
    pred: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    max_frames: int = 16,
    scale: int = 1,
) -> np.ndarray:
    """One row of the clip's frames with overlays (arguments of :func:`overlay_frames`)."""
    frames = overlay_frames(images, pred, target, mask, labels, max_frames, scale)
    return grid(list(frames), columns=len(frames))


def batch_strips(
    batch: Mapping[str, Any],
    pred: torch.Tensor,
    max_clips: int = 4,
    max_frames: int = 16,
    scale: int = 1,
    frame_nme: torch.Tensor | None = None,
) -> np.ndarray:
    """Frame strips of the first ``max_clips`` clips of a clip batch, one row each.

    Args:
        batch: clip batch (``image`` (B, T, 3, H, W), ``landmarks`` (B, T, K, 2), ``frame_mask`` (B, T)).
        pred: (B, T, K, 2) predictions. frame_nme: (B, T) per-frame NME printed on each frame, or None.
    """
    rows = []
    masks = batch.get("frame_mask")
    for b in range(min(max_clips, pred.shape[0])):
        labels = None if frame_nme is None else [f"{float(v):.3f}" for v in frame_nme[b]]
        mask = None if masks is None else masks[b]
        rows.append(
            clip_strip(batch["image"][b], pred[b], batch["landmarks"][b], mask, labels, max_frames, scale)
        )
    return grid(rows, columns=1)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 30.0, codec: str = "mpeg4") -> Path:
    """Encode (N, H, W, 3) uint8 frames into a video file with PyAV (``mpeg4`` in .mp4/.avi by
    default; ``png`` for a lossless .avi). Odd sizes are padded to even ones (yuv420p needs them)."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    path = Path(path)
    n, h, w, _ = frames.shape
    lossless = codec == "png"
    if not lossless and (h % 2 or w % 2):
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = h + h % 2, w + w % 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        for frame in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
