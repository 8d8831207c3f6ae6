"""The official WIDER FACE evaluation (easy / medium / hard AP): the vectorised core.

This reproduces, number for number, the widely used Python port of the official MATLAB
``eval_tools`` (``widerface_evaluate/evaluation.py`` of the RetinaFace PyTorch repositories):

1. Scores are min-max normalised over **all** predictions handed in (also those of images that are
   not in the ground truth), with the port's starting values ``min = 1`` and ``max = 0``, so that
   for scores in [0, 1] the range is exactly [min(scores), max(scores)]. When the range is empty
   (every prediction has one score) the port divides 0 by 0: nothing passes any threshold and every
   AP is 0; this module does the same and logs a warning. (The MATLAB code uses the plain
   min and max; both agree for scores in [0, 1].)
2. Each image's predictions are taken in descending score order (a stable sort: a file already
   sorted, as the official submissions are, keeps its order).
3. Each prediction takes the ground-truth face of highest IoU (the first one on ties); when that
   IoU is >= 0.5 and the face is kept in the setting (``gt_list``), the face is recalled (once);
   when the face is not kept, the prediction counts neither as a proposal nor as a recall
   (proposal -1). Otherwise the prediction is a proposal that recalls nothing.
4. For 1000 thresholds ``1 - (t + 1) / 1000`` (t = 0..999), over the predictions with normalised
   score >= threshold: ``proposals`` (predictions not matched to a non-kept face) and ``recalled``
   (distinct kept faces found) are summed over the images. Images with no ground-truth box or no
   prediction are skipped, but their kept faces still count in the recall denominator, which is
   the number of ``gt_list`` entries of all images. Precision = recalled / proposals, recall =
   recalled / kept faces (the official definition: precision counts recalled faces, not matches).
5. AP is the VOC all-point interpolated area under that curve.

The per-prediction loops of the port are replaced by array logic: the matching is independent of
the setting and is computed once; a face's first recall is the first occurrence of its index among
the score-sorted matched predictions (``np.unique(..., return_index=True)``); the per-threshold
counts are ``searchsorted`` on sorted scores.

Convention
----------
Files (``facelit.metrics.wider_files``) and the functions ``read_predictions``,
``write_predictions``, ``evaluate`` and
``wider_face_average_precision`` use the official WIDER layout ``x y w h`` (pixels) and the
official ``+1`` overlap convention of ``bbox_overlaps``: a box covers ``[x, x + w] x [y, y + h]``
*inclusive* integer pixels, area ``(w + 1) * (h + 1)``. The torchmetrics ``WiderFaceAP`` takes
the project convention (xyxy in the pixel-area frame, facelit/batch.py) and converts each box to
``x1, y1, x2 - x1, y2 - y1``, exactly what the official code would read from a written file.

Modules: ``wider_core`` (this one: ground-truth container, AP core, ``evaluate``; numpy only),
``wider_files`` (reading the ``.mat`` ground truth, reading and writing prediction files),
``wider_ap`` (the torchmetrics ``WiderFaceAP``) and ``wider_eval`` (the command). The façade
``facelit.metrics.widerface`` re-exports all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SETTINGS",
    "IOU_THRESHOLD",
    "NUM_THRESHOLDS",
    "PredictionKey",
    "WiderGroundTruth",
    "official_score_range",
    "official_iou",
    "voc_ap",
    "wider_face_average_precision",
    "evaluate",
]

logger = logging.getLogger(__name__)

SETTINGS: tuple[str, str, str] = ("easy", "medium", "hard")
IOU_THRESHOLD = 0.5
NUM_THRESHOLDS = 1000
_PAIR_BUDGET = 1 << 21  # prediction x face pairs per IoU block (bounds memory to ~100 MB)

PredictionKey = tuple[str, str]  # (event, image name without ".jpg")


@dataclass(frozen=True)
class WiderGroundTruth:
    """The WIDER FACE validation ground truth, one entry per image (I images).

    Attributes:
        events: I event folder names, e.g. ``"0--Parade"``.
        names: I image names without ``.jpg``.
        boxes: I arrays (G_i, 4) int32 ``x, y, w, h`` exactly as in ``wider_face_val.mat`` (the four
            images annotated with an all-zero row keep that row, as the official evaluation does).
        keep: I arrays (G_i, 3) bool: face kept in the (easy, medium, hard) setting (``gt_list``).
    """

    events: tuple[str, ...]
    names: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    keep: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        n = len(self.events)
        if not (len(self.names) == len(self.boxes) == len(self.keep) == n):
            raise ValueError("events, names, boxes and keep must have one entry per image")
        for i, (b, k) in enumerate(zip(self.boxes, self.keep, strict=True)):
            if b.ndim != 2 or b.shape[1] != 4 or k.shape != (b.shape[0], len(SETTINGS)):
                raise ValueError(
                    f"image {self.events[i]}/{self.names[i]}: boxes {b.shape} / keep {k.shape} "
                    f"are not (G, 4) / (G, {len(SETTINGS)})"
                )

    def __len__(self) -> int:
        return len(self.events)

    def keys(self) -> list[PredictionKey]:
        """(event, name) per image, in ground-truth order."""
        return list(zip(self.events, self.names, strict=True))

    def subset(self, indices: Sequence[int]) -> WiderGroundTruth:
        """The ground truth of some images only (the recall denominator then counts only those)."""
        idx = list(indices)
        return WiderGroundTruth(
            tuple(self.events[i] for i in idx),
            tuple(self.names[i] for i in idx),
            tuple(self.boxes[i] for i in idx),
            tuple(self.keep[i] for i in idx),
        )

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated boxes (G, 4) float64 xywh, per-image counts (I,) int64, keep (G, 3) bool."""
        counts = np.array([b.shape[0] for b in self.boxes], dtype=np.int64)
        if not self.boxes:
            return np.zeros((0, 4)), counts, np.zeros((0, len(SETTINGS)), dtype=bool)
        return (
            np.concatenate(self.boxes).astype(np.float64),
            counts,
            np.concatenate(self.keep).astype(bool),
        )


def official_score_range(scores: np.ndarray) -> tuple[float, float]:
    """(min, max) of the score normalisation, as the official Python port computes it.

    The port starts from ``min = 1, max = 0``: the range is [min(scores, 1), max(scores, 0)].
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return 1.0, 0.0
    return float(min(scores.min(), 1.0)), float(max(scores.max(), 0.0))


def official_iou(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU of ``bbox_overlaps`` with the official ``+1`` convention, same float64 operation order.

    Args:
        pred_xyxy: (P, 4) ``x, y, x + w, y + h``.
        gt_xyxy: (G, 4) same layout.

    Returns:
        (P, G) float64; 0 where the boxes do not overlap (``iw <= 0`` or ``ih <= 0``).
    """
    p = pred_xyxy[:, None, :]
    g = gt_xyxy[None, :, :]
    iw = np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + 1
    ih = np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + 1
    overlap = (iw > 0) & (ih > 0)
    inter = iw * ih
    area_p = (pred_xyxy[:, 2] - pred_xyxy[:, 0] + 1) * (pred_xyxy[:, 3] - pred_xyxy[:, 1] + 1)
    area_g = (gt_xyxy[:, 2] - gt_xyxy[:, 0] + 1) * (gt_xyxy[:, 3] - gt_xyxy[:, 1] + 1)
    union = area_p[:, None] + area_g[None, :] - inter
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (NaN propagates exactly as in the official loop)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _best_gt(
    pred_xyxy: np.ndarray,
    pred_off: np.ndarray,
    gt_xyxy: np.ndarray,
    gt_off: np.ndarray,
    images: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: best IoU (P,) and the global index of its first best face (P,), -1 if none.

    One IoU block per evaluated image (split into blocks of at most ``_PAIR_BUDGET`` pairs);
    predictions of skipped images keep (-inf, -1).
    """
    best_iou = np.full(pred_xyxy.shape[0], -np.inf)
    best_idx = np.full(pred_xyxy.shape[0], -1, dtype=np.int64)
    for i in images.tolist():
        p0, p1, g0, g1 = pred_off[i], pred_off[i + 1], gt_off[i], gt_off[i + 1]
        step = max(1, _PAIR_BUDGET // (g1 - g0))
        for q0 in range(p0, p1, step):
            q1 = min(q0 + step, p1)
            iou = official_iou(pred_xyxy[q0:q1], gt_xyxy[g0:g1])
            j = iou.argmax(axis=1)
            best_iou[q0:q1] = iou[np.arange(q1 - q0), j]
            best_idx[q0:q1] = j + g0
    return best_iou, best_idx


def _count_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T,) number of ``values`` >= each threshold."""
    ordered = np.sort(values)
    return ordered.size - np.searchsorted(ordered, thresholds, side="left")


def wider_face_average_precision(
    pred: np.ndarray,
    pred_counts: np.ndarray,
    gt: np.ndarray,
    gt_counts: np.ndarray,
    keep: np.ndarray,
    score_range: tuple[float, float] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    num_thresholds: int = NUM_THRESHOLDS,
) -> np.ndarray:
    """Official WIDER FACE AP of flat, image-major arrays (I images, S settings).

    Args:
        pred: (P, 5) ``x, y, w, h, score``, the predictions of image 0, then image 1, ...
        pred_counts: (I,) predictions per image.
        gt: (G, 4) ``x, y, w, h`` ground-truth boxes, image-major.
        gt_counts: (I,) ground-truth boxes per image.
        keep: (G, S) bool, face kept in setting s (S = 3 for easy, medium, hard).
        score_range: (min, max) of the score normalisation; default ``official_score_range`` of
            ``pred`` (``evaluate`` passes the range over every prediction file it read).
        iou_threshold: match threshold (official 0.5).
        num_thresholds: score thresholds (official 1000).

    Returns:
        (S,) float64 APs (NaN for a setting that keeps no face).
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 5)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    keep = np.asarray(keep, dtype=bool)
    pred_counts = np.asarray(pred_counts, dtype=np.int64).ravel()
    gt_counts = np.asarray(gt_counts, dtype=np.int64).ravel()
    if keep.ndim != 2 or keep.shape[0] != gt.shape[0]:
        raise ValueError(f"keep must be (G, S) with G = {gt.shape[0]}, got {keep.shape}")
    if pred_counts.shape != gt_counts.shape:
        raise ValueError(f"pred_counts {pred_counts.shape} and gt_counts {gt_counts.shape} differ in images")
    if pred_counts.sum() != pred.shape[0] or gt_counts.sum() != gt.shape[0]:
        raise ValueError("pred_counts / gt_counts do not add up to the number of rows of pred / gt")
    if (pred_counts < 0).any() or (gt_counts < 0).any():
        raise ValueError("negative per-image counts")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("predictions and ground truth must be finite")

    # 1. normalise scores (0/0 -> NaN when the range is empty: nothing passes a threshold, as in the port)
    lo, hi = official_score_range(pred[:, 4]) if score_range is None else score_range
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (pred[:, 4] - lo) / (hi - lo)
    if pred.shape[0] and hi == lo:
        logger.warning("WIDER FACE eval: all %d predictions share one score; every AP is 0", pred.shape[0])
    score = np.where(np.isnan(score), -np.inf, score)

    # 2. image-major order, descending score within each image (stable)
    image_of_pred = np.repeat(np.arange(pred_counts.size), pred_counts)
    order = np.lexsort((-score, image_of_pred))
    score = score[order]
    xyxy = pred[order, :4].copy()
    xyxy[:, 2] += xyxy[:, 0]
    xyxy[:, 3] += xyxy[:, 1]
    gt_xyxy = gt.copy()
    gt_xyxy[:, 2] += gt_xyxy[:, 0]
    gt_xyxy[:, 3] += gt_xyxy[:, 1]

    # 3. match once (independent of the setting), on images with >= 1 box and >= 1 prediction
    evaluated = np.flatnonzero((pred_counts > 0) & (gt_counts > 0))
    pred_off, gt_off = _offsets(pred_counts), _offsets(gt_counts)
    best_iou, best_idx = _best_gt(xyxy, pred_off, gt_xyxy, gt_off, evaluated)
    in_evaluated = best_idx >= 0
    matched = np.flatnonzero(best_iou >= iou_threshold)
    _, first = np.unique(best_idx[matched], return_index=True)
    first_hit = np.zeros(pred.shape[0], dtype=bool)
    first_hit[matched[first]] = True

    # 4. per-setting counts at every threshold
    thresholds = 1 - (np.arange(num_thresholds) + 1) / num_thresholds
    aps = np.empty(keep.shape[1])
    for s in range(keep.shape[1]):
        matched_kept = keep[best_idx[matched], s]
        proposal = in_evaluated.copy()
        proposal[matched[~matched_kept]] = False
        hit = first_hit.copy()
        hit[matched[~matched_kept]] = False
        n_proposals = _count_at_least(score[proposal], thresholds)
        n_recalled = _count_at_least(score[hit], thresholds)
        count_face = int(keep[:, s].sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = n_recalled / n_proposals
            recall = n_recalled / np.float64(count_face)
        aps[s] = voc_ap(recall, precision)
    return aps


def evaluate(
    preds: Mapping[PredictionKey, np.ndarray],
    gt: WiderGroundTruth,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, float]:
    """Official WIDER FACE AP of predictions against the validation ground truth.

    Args:
        preds: {(event, image name): (P, 5) ``x, y, w, h, score``} as ``read_predictions`` gives.
            An image without an entry counts as an image without predictions (the official code
            would crash on it); entries for images outside ``gt`` only widen the score range, as
            in the official code. Both cases are logged.
        gt: ``load_wider_val_gt(...)`` (or a ``subset`` of it).

    Returns:
        {"easy": AP, "medium": AP, "hard": AP}
    """
    keys = gt.keys()
    empty = np.zeros((0, 5))
    rows = [np.asarray(preds.get(k, empty), dtype=np.float64).reshape(-1, 5) for k in keys]
    missing = sum(k not in preds for k in keys)
    extra = len(preds) - (len(keys) - missing)
    if missing:
        logger.warning("WIDER FACE eval: %d of %d images have no prediction file", missing, len(keys))
    if extra:
        logger.warning("WIDER FACE eval: %d prediction files name images outside the ground truth", extra)
    all_scores = [np.asarray(v, dtype=np.float64).reshape(-1, 5)[:, 4] for v in preds.values()]
    score_range = official_score_range(np.concatenate(all_scores) if all_scores else np.zeros(0))
    gt_boxes, gt_counts, keep = gt.flat()
    aps = wider_face_average_precision(
        np.concatenate(rows) if rows else empty,
        np.array([r.shape[0] for r in rows], dtype=np.int64),
        gt_boxes,
        gt_counts,
        keep,
        score_range=score_range,
        iou_threshold=iou_threshold,
    )
    return {name: float(ap) for name, ap in zip(SETTINGS, aps, strict=True)}
