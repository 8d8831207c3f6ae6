"""Landmark tracking over a video: the crop of frame t + 1 comes from frame t's landmarks.

The tracker is model-agnostic: it takes a ``predict`` callable (a crop in, landmarks and per-point
confidence in crop pixels out, plus an opaque state carried between frames, e.g. RED-Net's LSTM
state) and an optional ``detect`` callable (a frame in, face boxes and scores out: RetinaFace's or
MTCNN's ``detect`` through :func:`module_detector`).

Per frame t:

1. If there is no track (first frame, or lost at t - 1), ``detect`` the frame and start a track at
   the highest-scoring box, made square (side ``max(w, h) * detection_scale``, same centre), with a
   fresh predictor state. No detector: the track keeps its last box (or ``initial_box``).
2. Crop the track box to ``crop_size`` (:func:`facelit.augment.crop.crop_resize`), predict, map the
   points back to frame pixels.
3. The track is lost when the mean landmark confidence falls below ``lost_threshold`` or the
   points collapse (their box is under ``MIN_BOX_SIDE`` pixels); otherwise the next box is
   :func:`box_from_landmarks` of this frame's points. A lost track without a detector keeps its box.

Convention: frames (3, H, W) float in [0, 1]; boxes xyxy and points (x, y) in frame pixels of the
pixel-area frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from facelit.augment.crop import crop_resize
from facelit.datasets.video import decode_video
from facelit.geometry.schemes import LandmarkScheme

__all__ = [
    "BOX_SCALE",
    "eye_mouth_groups",
    "box_from_landmarks",
    "square_box",
    "TrackResult",
    "track_video",
    "module_detector",
    "read_frames",
]

# Side of the tracking square in units of the eye-centre-to-mouth-centre distance (RED-Net).
BOX_SCALE = 3.0
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MIN_BOX_SIDE = 1.0  # pixels; a smaller box from the landmarks (collapsed points) loses the track

Predictor = Callable[[Tensor, Any], tuple[Tensor, Tensor, Any]]
Detector = Callable[[Tensor], tuple[Tensor, Tensor]]


def eye_mouth_groups(scheme: LandmarkScheme) -> tuple[list[int], list[int]]:
    """Indices of the eye points and of the mouth points of ``scheme`` (by point name)."""
    eyes = [i for i, n in enumerate(scheme.point_names) if n.startswith(("left_eye", "right_eye"))]
    mouth = [i for i, n in enumerate(scheme.point_names) if n.startswith("mouth")]
    if not eyes or not mouth:
        raise ValueError(f"scheme {scheme.name!r} has no eye or no mouth points to place a tracking box")
    return eyes, mouth


def box_from_landmarks(points: Tensor, scheme: LandmarkScheme, scale: float = BOX_SCALE) -> Tensor:
    """Square box of side ``scale`` x |eye centre - mouth centre| centred between the two centres.

    Args:
        points: (N, K, 2) landmarks in pixels.

    Returns:
        (N, 4) xyxy boxes.
    """
    eyes, mouth = eye_mouth_groups(scheme)
    eye_c, mouth_c = points[:, eyes].mean(1), points[:, mouth].mean(1)
    centre = 0.5 * (eye_c + mouth_c)
    half = 0.5 * scale * torch.linalg.vector_norm(eye_c - mouth_c, dim=-1, keepdim=True)
    return torch.cat([centre - half, centre + half], dim=-1)


def square_box(boxes: Tensor, scale: float = 1.0) -> Tensor:
    """(N, 4) xyxy -> squares of side ``max(w, h) * scale`` with the same centres."""
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    half = 0.5 * scale * (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True)
    return torch.cat([centre - half, centre + half], dim=-1)


@dataclass
class TrackResult:
    """Per frame (F frames, K points): ``landmarks`` (F, K, 2) in frame pixels (NaN where no
    track), ``confidence`` (F,), ``boxes`` (F, 4) the crop boxes used (NaN where none),
    ``detected`` (F,) bool: a detection (re)started the track at that frame."""

    landmarks: list[Tensor] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    boxes: list[Tensor] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)

    def stacked(self) -> dict[str, Tensor]:
        """The lists as tensors."""
        return {
            "landmarks": torch.stack(self.landmarks),
            "confidence": torch.tensor(self.confidence),
            "boxes": torch.stack(self.boxes),
            "detected": torch.tensor(self.detected),
        }


def track_video(
    frames: Iterable[Tensor],
    predict: Predictor,
    scheme: LandmarkScheme,
    crop_size: int,
    detect: Detector | None = None,
    initial_box: Tensor | None = None,
    lost_threshold: float = 0.3,
    detection_scale: float = 1.0,
    progress: bool = False,
) -> TrackResult:
    """Track one face through ``frames``.

    Args:
        frames: (3, H, W) float frames in [0, 1].
        predict: ``(crop (3, S, S), state) -> (points (K, 2) crop pixels, confidence (K,), state)``;
            ``state`` is None at the start of a track.
        scheme: the K-point scheme (its eye and mouth points place the next box).
        crop_size: S.
        detect: ``frame -> (boxes (M, 4), scores (M,))``; None: no re-detection.
        initial_box: (4,) xyxy box of the first frame; None: detect it.
        lost_threshold: mean landmark confidence below which the track is lost.
        detection_scale: detected box side multiplier to match the training crops' framing.
        progress: show a tqdm bar.

    Raises:
        ValueError: neither ``initial_box`` nor ``detect`` is given.
    """
    if initial_box is None and detect is None:
        raise ValueError("track_video needs an initial_box or a detect callable to find the face")
    box = None if initial_box is None else initial_box.reshape(1, 4).float()
    state: Any = None
    result = TrackResult()
    nan_points = torch.full((scheme.num_points, 2), float("nan"))
    for frame in tqdm(frames, desc="tracking", disable=not progress):
        started = False
        if box is None and detect is not None:  # no track: (re-)detect
            boxes, scores = detect(frame)
            if len(boxes):
                box = square_box(boxes[scores.argmax()].reshape(1, 4).float().cpu(), detection_scale)
                state, started = None, True
            else:
                box = None
        if box is None:
            result.landmarks.append(nan_points)
            result.confidence.append(0.0)
            result.boxes.append(torch.full((4,), float("nan")))
            result.detected.append(False)
            continue
        crop = crop_resize(frame.float(), box[0].to(frame.device), crop_size)
        points, conf, state = predict(crop, state)
        side = (box[0, 2:] - box[0, :2]) / crop_size
        points = points.detach().float().cpu() * side + box[0, :2]
        mean_conf = float(conf.float().mean())
        result.landmarks.append(points)
        result.confidence.append(mean_conf)
        result.boxes.append(box[0].clone())
        result.detected.append(started)
        next_box = box_from_landmarks(points[None], scheme)
        side_next = float(next_box[0, 2] - next_box[0, 0])
        degenerate = not math.isfinite(side_next) or side_next < MIN_BOX_SIDE
        if mean_conf < lost_threshold or degenerate:
            if detect is not None:
                box, state = None, None  # lost: re-detect on the next frame
            # without a detector a lost track keeps its box (and its state)
        else:
            box = next_box
    return result


def module_detector(module: Any) -> Detector:
    """Wrap a detector with RetinaFace's/MTCNN's ``detect`` (per image dicts with ``boxes`` (M, 4)
    and ``scores`` (M,)) as a :data:`Detector` of one frame."""

    def run(frame: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            det = module.detect(frame[None])[0]
        return det["boxes"], det["scores"]

    return run


def read_frames(path: str | Path) -> Iterable[Tensor]:
    """Frames (3, H, W) float in [0, 1] of a frame folder (images sorted by name) or a video file.

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no image.
    """
    from torchvision.io import ImageReadMode, read_image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no frame folder or video at {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path} holds no frame image ({', '.join(FRAME_SUFFIXES)})")
        return (read_image(str(p), ImageReadMode.RGB).float() / 255.0 for p in files)
    return (frame.float() / 255.0 for frame in decode_video(path))
