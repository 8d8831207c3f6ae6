"""Anchor-to-face matching by IoU, batched over padded targets and chunked for crowded images.

Convention
----------
Anchors and faces are ``xyxy`` boxes in pixels (pixel-area frame, DESIGN.md). Targets are padded
(B, M, 4) with a (B, M) ``valid`` mask. The result gives, per (image, anchor), the index of the
matched face in ``[0, M)`` or one of two named sentinels (as in torchvision's ``Matcher``):

- ``BELOW_LOW_THRESHOLD = -1``: negative (background) anchor;
- ``BETWEEN_THRESHOLDS = -2``: ignored anchor (counts neither as positive nor as negative).

Rules, in order:

1. every anchor takes the valid face it overlaps most (ties: the lower face index);
2. IoU ``>= pos_threshold`` (0.5) -> positive, ``< neg_threshold`` (0.3) -> negative, else ignored;
3. a positive anchor whose face is flagged ``ignore`` (WIDER "invalid") becomes ignored;
4. low-quality matches: every valid, non-ignored face whose best IoU is ``>= low_quality_min_iou``
   (0.2, Pytorch_Retinaface's rule; ``0`` disables forcing, as the authors' mxnet release does)
   keeps the anchor(s) it overlaps most (all anchors tied at its best IoU), even below
   ``pos_threshold``. Unlike torchvision, such an anchor is assigned to *that* face; when two faces
   share a best anchor, the one with the larger IoU wins (ties: the lower face index). A 3 px face
   (IoU 0.035 with a 16 px anchor) forces nothing.
5. every face keeps an anchor: a face of rule 4 left without any positive anchor (its best anchors
   went to a neighbour in rule 4, and every anchor it passes ``pos_threshold`` with prefers a
   neighbour) takes its best anchor among those not yet forced, if that IoU is still
   ``>= low_quality_min_iou``. Repeated until no such face can be served (each round serves at
   least one face, so at most M rounds; on typical images there is none and no round runs). Two
   faces (10, 10, 26, 26) and (11, 11, 27, 27) on the mnet anchors thus both keep an anchor.

Padded faces (``valid`` False) never match. The work is chunked over faces so that the (B, M, A)
IoU matrix never exists at once: the peak extra memory is a few times ``B * chunk * A`` floats.
Stage-2 (cascade) matching passes per-image anchors (B, A, 4), e.g. the stage-1 decoded boxes, with
its own thresholds (``CASCADE_THRESHOLDS``: stage 1 ``(0.7, 0.3)``, stage 2 ``(0.5, 0.4)``, the
paper's and the authors' release ``RPN_POSITIVE_OVERLAP = 0.7``, ``CASCADE_OVERLAP = [0.4, 0.5]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from facelit.geometry.boxes import box_iou, check_boxes

__all__ = [
    "BELOW_LOW_THRESHOLD",
    "BETWEEN_THRESHOLDS",
    "DEFAULT_THRESHOLDS",
    "CASCADE_THRESHOLDS",
    "LOW_QUALITY_MIN_IOU",
    "MAX_CHUNK_ELEMENTS",
    "MatchResult",
    "match_anchors",
]

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2

DEFAULT_THRESHOLDS: tuple[float, float] = (0.5, 0.3)  # (positive >=, negative <), single stage
# RetinaFace cascade, ((stage-1 positive >=, negative <), (stage-2 positive >=, negative <)): stage 1
# on the regular anchors is stricter (0.7); stage 2, on the stage-1 regressed boxes, uses 0.5 / 0.4.
CASCADE_THRESHOLDS: tuple[tuple[float, float], tuple[float, float]] = ((0.7, 0.3), (0.5, 0.4))
# A face forces its best anchor(s) only at this IoU or more (Pytorch_Retinaface); 0 disables forcing.
LOW_QUALITY_MIN_IOU = 0.2

# Default chunk: at most this many IoU entries (B * faces_per_chunk * A) at a time (32 MB float32).
MAX_CHUNK_ELEMENTS = 2**23


@dataclass(frozen=True)
class MatchResult:
    """Result of :func:`match_anchors`.

    Attributes:
        matches: (B, A) int64 face index in [0, M) for positive anchors, ``BELOW_LOW_THRESHOLD``
            for negatives, ``BETWEEN_THRESHOLDS`` for ignored anchors.
        iou: (B, A) largest IoU of the anchor with any valid face (0 when the image has none).
    """

    matches: Tensor
    iou: Tensor

    @property
    def positive(self) -> Tensor:
        """(B, A) bool."""
        return self.matches >= 0

    @property
    def negative(self) -> Tensor:
        """(B, A) bool."""
        return self.matches == BELOW_LOW_THRESHOLD

    @property
    def ignored(self) -> Tensor:
        """(B, A) bool."""
        return self.matches == BETWEEN_THRESHOLDS

    def positive_indices(self) -> tuple[Tensor, Tensor, Tensor]:
        """(batch_idx, anchor_idx, face_idx), each (P,) int64, of the positive anchors."""
        batch_idx, anchor_idx = self.positive.nonzero(as_tuple=True)
        return batch_idx, anchor_idx, self.matches[batch_idx, anchor_idx]


def _check_inputs(
    anchors: Tensor, boxes: Tensor, valid: Tensor, ignore: Tensor | None, pos: float, neg: float, floor: float
) -> None:
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, M, 4), got {tuple(boxes.shape)}")
    if valid.shape != boxes.shape[:2] or valid.dtype != torch.bool:
        raise ValueError(
            f"valid must be a bool (B, M) = {tuple(boxes.shape[:2])} mask, got "
            f"{valid.dtype} {tuple(valid.shape)}"
        )
    if ignore is not None and (ignore.shape != valid.shape or ignore.dtype != torch.bool):
        raise ValueError(
            f"ignore must be a bool {tuple(valid.shape)} mask, got {ignore.dtype} {tuple(ignore.shape)}"
        )
    if anchors.shape[-1] != 4 or anchors.ndim not in (2, 3):
        raise ValueError(f"anchors must be (A, 4) or (B, A, 4), got {tuple(anchors.shape)}")
    if anchors.ndim == 3 and anchors.shape[0] != boxes.shape[0]:
        raise ValueError(f"per-image anchors {tuple(anchors.shape)} do not match batch size {boxes.shape[0]}")
    if not 0.0 <= neg <= pos <= 1.0:
        raise ValueError(f"need 0 <= neg_threshold <= pos_threshold <= 1, got neg={neg}, pos={pos}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"low_quality_min_iou must be in [0, 1] (0 disables forcing), got {floor}")


@torch.no_grad()
def match_anchors(
    anchors: Tensor,
    boxes: Tensor,
    valid: Tensor,
    ignore: Tensor | None = None,
    pos_threshold: float = DEFAULT_THRESHOLDS[0],
    neg_threshold: float = DEFAULT_THRESHOLDS[1],
    low_quality_min_iou: float = LOW_QUALITY_MIN_IOU,
    chunk_size: int | None = None,
) -> MatchResult:
    """Match anchors to padded ground-truth faces (see the module docstring for the rules).

    Args:
        anchors: (A, 4) xyxy shared by the batch, or (B, A, 4) per image.
        boxes: (B, M, 4) xyxy faces; valid ones must not be degenerate (``ValueError`` otherwise).
        valid: (B, M) bool, False for padding.
        ignore: (B, M) bool, faces whose anchors are ignored instead of positive; None = none.
        pos_threshold: IoU at or above which an anchor is positive.
        neg_threshold: IoU below which an anchor is negative.
        low_quality_min_iou: a face forces its best anchor(s) when that IoU is at least this
            (rules 4 and 5); 0 disables forcing.
        chunk_size: faces per chunk; None picks ``MAX_CHUNK_ELEMENTS // (B * A)`` (at least 1).

    Returns:
        :class:`MatchResult` with (B, A) ``matches`` and ``iou``.
    """
    _check_inputs(anchors, boxes, valid, ignore, pos_threshold, neg_threshold, low_quality_min_iou)
    check_boxes(boxes, valid, name="boxes")
    b, m = valid.shape
    a = anchors.shape[-2]
    if chunk_size is None:
        chunk_size = max(1, MAX_CHUNK_ELEMENTS // max(1, b * a))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ignore = torch.zeros_like(valid) if ignore is None else ignore
    anchors_b = anchors if anchors.ndim == 3 else anchors.unsqueeze(0)
    boxes = boxes.to(anchors.dtype)
    forcing = low_quality_min_iou > 0
    eligible = valid & ~ignore

    best_iou = anchors.new_full((b, a), -1.0)
    best_face = torch.zeros((b, a), dtype=torch.long, device=anchors.device)
    lq_iou = anchors.new_full((b, a), -1.0)
    lq_face = torch.zeros_like(best_face)
    face_best = anchors.new_full((b, m), -1.0)  # best IoU of each face with any anchor
    for start in range(0, m, chunk_size):
        stop = min(start + chunk_size, m)
        iou = box_iou(boxes[:, start:stop], anchors_b)  # (B, Mc, A)
        iou.masked_fill_(~valid[:, start:stop, None], -1.0)
        _update_running_max(iou, start, best_iou, best_face)
        if forcing:
            face_best[:, start:stop] = iou.amax(dim=2)
            _update_running_max(
                _best_anchors_only(iou, eligible[:, start:stop], low_quality_min_iou), start, lq_iou, lq_face
            )

    matches = torch.where(
        best_iou >= pos_threshold,
        best_face,
        torch.where(best_iou < neg_threshold, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS),
    )
    if m > 0:
        to_ignore = (matches >= 0) & ignore.gather(1, best_face)
        matches = matches.masked_fill(to_ignore, BETWEEN_THRESHOLDS)
    if forcing and m > 0:
        forced = lq_iou >= low_quality_min_iou
        matches = torch.where(forced, lq_face, matches)
        matches = _serve_robbed_faces(
            anchors_b,
            boxes,
            matches,
            forced,
            eligible & (face_best >= low_quality_min_iou),
            low_quality_min_iou,
            chunk_size,
        )
    return MatchResult(matches=matches, iou=best_iou.clamp(min=0))


def _best_anchors_only(iou: Tensor, eligible: Tensor, floor: float) -> Tensor:
    """In place: keep, per face, only its anchors tied at its best IoU, where that IoU >= ``floor``
    and the face is ``eligible``; every other entry becomes -1.

    Args:
        iou: (B, Mc, A) IoU (masked entries -1); modified and returned.
        eligible: (B, Mc) bool.
    """
    best = iou.amax(dim=2, keepdim=True)  # (B, Mc, 1)
    usable = (best >= floor) & eligible[..., None]
    return iou.masked_fill_((iou < best) | ~usable, -1.0)


def _faces_with_positives(matches: Tensor, m: int) -> Tensor:
    """(B, M) bool: the face has at least one positive anchor in ``matches`` (B, A)."""
    served = torch.zeros((matches.shape[0], m + 1), dtype=torch.bool, device=matches.device)
    served.scatter_(1, torch.where(matches >= 0, matches, m), True)
    return served[:, :m]


def _serve_robbed_faces(
    anchors_b: Tensor,
    boxes: Tensor,
    matches: Tensor,
    forced: Tensor,
    eligible: Tensor,
    floor: float,
    chunk_size: int,
) -> Tensor:
    """Rule 5: faces left without a positive anchor take their best anchor not yet forced.

    Args:
        anchors_b: (1 or B, A, 4); boxes: (B, M, 4); matches: (B, A); forced: (B, A) bool, anchors
            already forced to a face (never taken again); eligible: (B, M) bool, faces that must
            keep an anchor (valid, not ignored, best IoU >= ``floor``).

    Returns:
        (B, A) updated matches. Each round serves at least one face or stops, so at most M rounds.
    """
    m = boxes.shape[1]
    forced = forced.clone()
    for _ in range(m):
        todo = eligible & ~_faces_with_positives(matches, m)
        if not todo.any():
            break
        r_iou = anchors_b.new_full(matches.shape, -1.0)
        r_face = torch.zeros_like(matches)
        for start in range(0, m, chunk_size):
            stop = min(start + chunk_size, m)
            if not todo[:, start:stop].any():
                continue
            iou = box_iou(boxes[:, start:stop], anchors_b).masked_fill_(forced[:, None, :], -1.0)
            _update_running_max(_best_anchors_only(iou, todo[:, start:stop], floor), start, r_iou, r_face)
        new = r_iou >= floor
        if not new.any():
            break
        matches = torch.where(new, r_face, matches)
        forced |= new
    return matches


def _update_running_max(iou: Tensor, offset: int, best: Tensor, index: Tensor) -> None:
    """In place: ``best``/``index`` (B, A) <- max over faces of ``iou`` (B, Mc, A) where larger.

    Strict ``>`` keeps the earlier (lower-index) face on ties across chunks; ``max`` does within one.
    """
    if iou.shape[1] == 1:  # torch's CPU max over a size-1 dim is pathologically slow
        value, idx = iou[:, 0], torch.zeros_like(index)
    else:
        value, idx = iou.max(dim=1)
    better = value > best
    best.copy_(torch.where(better, value, best))
    index.copy_(torch.where(better, idx + offset, index))
