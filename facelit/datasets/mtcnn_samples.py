"""MTCNN training samples: negatives, positives, part faces and landmark faces cut from detection
images at 12/24/48 px, by random windows or by the windows an earlier cascade stage proposes.

The paper's recipe (Zhang et al. 2016, section III.B): a window is a *positive* when its IoU with a
face exceeds 0.65, a *part face* between 0.4 and 0.65, a *negative* below 0.3 (between 0.3 and 0.4
it is not used); *landmark faces* are positives of faces with five annotated points and train only
the landmark head. Mixing ratio negatives : positives : parts : landmark faces = 3 : 1 : 1 : 2.
R-Net trains on the windows P-Net proposes on the training images (hard samples), O-Net on those of
P-Net + R-Net; :func:`mine_image` takes such ``proposals`` and fills missing quotas with random windows.

Crops are taken exactly as the cascade takes them at inference (integer-truncated window clipped to
the image, area-resampled, ``facelit.nets.mtcnn_cascade.area_crops``), so train and test inputs agree.

Sample (one crop)::

    image            (3, S, S) uint8     the crop (S = 12, 24 or 48)
    kind             ()         int64    NEGATIVE | POSITIVE | PART | LANDMARK
    boxes            (4,)       float32  the matched face box xyxy in crop pixels (zeros for negatives)
    landmarks        (5, 2)     float32  its five points in crop pixels (zeros where not annotated)
    landmarks_valid  ()         bool     the landmarks are annotated (LANDMARK samples)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from facelit.geometry.boxes import box_iou
from facelit.nets.mtcnn_cascade import area_crops, crop_windows, integral_image, square_boxes

__all__ = [
    "NEGATIVE",
    "POSITIVE",
    "PART",
    "LANDMARK",
    "KIND_NAMES",
    "MiningConfig",
    "label_windows",
    "random_windows",
    "mine_image",
    "concat_samples",
]

NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, 2, 3
KIND_NAMES = ("negative", "positive", "part", "landmark")
_NOT_USED = -1  # internal only: IoU in [0.3, 0.4), never leaves this module


@dataclass(frozen=True)
class MiningConfig:
    """How samples are cut.

    Args:
        size: crop side (12 P-Net, 24 R-Net, 48 O-Net).
        samples_per_image: crops per image (split by ``ratio``).
        ratio: negatives : positives : parts : landmark faces.
        pos_iou, part_iou, neg_iou: IoU limits (positive > pos_iou >= part > part_iou; negative < neg_iou).
        min_face: faces smaller than this (max side, pixels) give no positive/part/landmark window.
        jitter: random windows around a face: centre shift up to ``jitter`` x size, side times
            [1 - jitter, 1 + jitter].
    """

    size: int = 12
    samples_per_image: int = 28
    ratio: tuple[float, float, float, float] = (3.0, 1.0, 1.0, 2.0)
    pos_iou: float = 0.65
    part_iou: float = 0.4
    neg_iou: float = 0.3
    min_face: float = 12.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if len(self.ratio) != 4 or min(self.ratio) < 0 or sum(self.ratio) <= 0:
            raise ValueError(
                f"ratio must be four non-negative weights (neg:pos:part:landmark), got {self.ratio}"
            )
        if not 0 <= self.neg_iou <= self.part_iou <= self.pos_iou <= 1:
            raise ValueError(f"need 0 <= neg_iou <= part_iou <= pos_iou <= 1, got {self}")
        if self.size < 12 or self.samples_per_image < 1:
            raise ValueError(f"size must be >= 12 and samples_per_image >= 1, got {self}")

    def quotas(self) -> list[int]:
        """Samples per kind and image (NEGATIVE, POSITIVE, PART, LANDMARK)."""
        total = sum(self.ratio)
        return [round(self.samples_per_image * r / total) for r in self.ratio]


def label_windows(windows: Tensor, faces: Tensor, cfg: MiningConfig) -> tuple[Tensor, Tensor]:
    """Kind of each window by its best IoU with a face, and that face's index.

    Args:
        windows: (K, 4) xyxy; faces: (N, 4) xyxy (N may be 0: everything is negative).

    Returns:
        kind (K,) in {NEGATIVE, POSITIVE, PART, -1 (unused band)}; face index (K,) (0 when N = 0).
    """
    if len(faces) == 0:
        return torch.full((len(windows),), NEGATIVE, dtype=torch.long), torch.zeros(
            len(windows), dtype=torch.long
        )
    best, index = box_iou(windows, faces).max(dim=1)
    kind = torch.full_like(index, _NOT_USED)
    kind[best < cfg.neg_iou] = NEGATIVE
    kind[(best >= cfg.part_iou) & (best <= cfg.pos_iou)] = PART
    kind[best > cfg.pos_iou] = POSITIVE
    return kind, index


def random_windows(
    faces: Tensor,
    height: int,
    width: int,
    num_negative: int,
    num_around: int,
    cfg: MiningConfig,
    generator: torch.Generator,
) -> Tensor:
    """Square integer windows inside the image: uniform ones (negative candidates) and ones jittered
    around each face of max side >= ``cfg.min_face`` (positive/part candidates), (K, 4) float xyxy."""
    short = min(height, width)
    if short < cfg.size:
        return torch.zeros(0, 4)
    u = torch.rand(num_negative, 3, generator=generator)
    side = (cfg.size + u[:, 0] * max(0, short // 2 - cfg.size)).floor()
    x1 = (u[:, 1] * (width - side + 1)).floor()
    y1 = (u[:, 2] * (height - side + 1)).floor()
    out = [torch.stack([x1, y1, x1 + side, y1 + side], 1)]
    wh = faces[:, 2:] - faces[:, :2]
    big = faces[wh.max(1).values >= cfg.min_face]
    if len(big) and num_around > 0:
        f = big.repeat_interleave(num_around, 0)
        u = torch.rand(len(f), 3, generator=generator) * 2 - 1
        base = (f[:, 2:] - f[:, :2]).max(1).values
        side = (base * (1 + cfg.jitter * u[:, 0])).floor().clamp(min=cfg.size)
        centre = (f[:, :2] + f[:, 2:]) / 2 + cfg.jitter * base[:, None] * u[:, 1:]
        x1, y1 = (centre[:, 0] - side / 2).floor(), (centre[:, 1] - side / 2).floor()
        win = torch.stack([x1, y1, x1 + side, y1 + side], 1)
        inside = (win[:, 0] >= 0) & (win[:, 1] >= 0) & (win[:, 2] <= width) & (win[:, 3] <= height)
        out.append(win[inside])
    return torch.cat(out)


def _take(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Up to ``count`` of the (K,) candidate indices, at random."""
    if len(candidates) <= count:
        return candidates
    return candidates[torch.randperm(len(candidates), generator=generator)[:count]]


def mine_image(
    image: Tensor,
    faces: Tensor,
    cfg: MiningConfig,
    generator: torch.Generator,
    landmarks: Tensor | None = None,
    landmarks_valid: Tensor | None = None,
    ignore: Tensor | None = None,
    proposals: Tensor | None = None,
) -> dict[str, Tensor]:
    """Cut the training samples of one image.

    Args:
        image: (3, H, W) float [0, 1].
        faces: (N, 4) xyxy face boxes; landmarks (N, 5, 2) and landmarks_valid (N,) optional.
        ignore: (N,) faces that must not become positives (WIDER 'invalid'): windows on them are dropped.
        proposals: (P, 4) windows of an earlier cascade stage (hard samples); random windows fill
            the quotas they leave open.

    Returns:
        the samples stacked: ``image`` (K, 3, S, S) uint8, ``kind`` (K,), ``boxes`` (K, 4),
        ``landmarks`` (K, 5, 2), ``landmarks_valid`` (K,) (see the module docstring).
    """
    h, w = image.shape[-2:]
    faces = faces.float().reshape(-1, 4)
    quotas = cfg.quotas()
    n_faces = max(1, len(faces))
    rand = random_windows(
        faces,
        h,
        w,
        4 * quotas[NEGATIVE],
        4 * (quotas[POSITIVE] + quotas[PART] + quotas[LANDMARK]) // n_faces + 1,
        cfg,
        generator,
    )
    pools = [rand] if proposals is None else [square_boxes(proposals.float()).round(), rand]
    chosen: list[tuple[Tensor, Tensor, Tensor]] = []  # (windows, kind, face index)
    left = list(quotas)
    for windows in pools:  # proposals first, then random windows for what is still missing
        kind, face = label_windows(windows, faces, cfg)
        if ignore is not None and len(faces):
            kind[(kind != NEGATIVE) & ignore[face]] = _NOT_USED
        for k in (NEGATIVE, POSITIVE, PART):
            idx = _take((kind == k).nonzero().flatten(), left[k], generator)
            left[k] -= len(idx)
            chosen.append((windows[idx], kind[idx], face[idx]))
        if landmarks is not None and landmarks_valid is not None and len(faces):
            cand = ((kind == POSITIVE) & landmarks_valid[face]).nonzero().flatten()
            idx = _take(cand, left[LANDMARK], generator)
            left[LANDMARK] -= len(idx)
            chosen.append((windows[idx], torch.full_like(idx, LANDMARK), face[idx]))
    windows = torch.cat([c[0] for c in chosen])
    kind = torch.cat([c[1] for c in chosen])
    face = torch.cat([c[2] for c in chosen])
    return _cut(image, windows, kind, face, faces, landmarks, cfg.size)


def _cut(
    image: Tensor,
    windows: Tensor,
    kind: Tensor,
    face: Tensor,
    faces: Tensor,
    landmarks: Tensor | None,
    size: int,
) -> dict[str, Tensor]:
    """Crops of ``windows`` (as the cascade crops them) with their targets in crop pixels."""
    zero = torch.zeros(1, dtype=torch.long)
    x0, y0, x1, y1, ok = crop_windows(windows, zero.expand(len(windows)), torch.tensor([image.shape[-2:]]))
    windows, kind, face, x0, y0, x1, y1 = (t[ok] for t in (windows, kind, face, x0, y0, x1, y1))
    crops = (
        area_crops(integral_image(image[None]), zero.expand(len(windows)), x0, y0, x1, y1, size)
        if len(windows)
        else torch.zeros(0, 3, size, size)
    )
    side = (windows[:, 2] - windows[:, 0]).clamp(min=1)[:, None]
    scale = size / side
    positive = kind != NEGATIVE
    boxes = torch.zeros(len(windows), 4)
    pts = torch.zeros(len(windows), 5, 2)
    if len(faces):
        boxes = torch.where(positive[:, None], (faces[face] - windows[:, :2].repeat(1, 2)) * scale, boxes)
        if landmarks is not None:
            pts = (landmarks[face].float() - windows[:, None, :2]) * scale[:, :, None]
    is_landmark = kind == LANDMARK
    return {
        "image": (crops.clamp(0, 1) * 255).round().to(torch.uint8).contiguous(),
        "kind": kind,
        "boxes": boxes.float(),
        "landmarks": torch.where(is_landmark[:, None, None], pts, torch.zeros_like(pts)).float(),
        "landmarks_valid": is_landmark,
    }


def concat_samples(parts: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack the sample dicts of several images."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
