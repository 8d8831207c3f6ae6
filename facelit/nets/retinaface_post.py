"""RetinaFace post-processing: decoding, NMS, box voting, multi-scale and flip test-time augmentation.

Convention
----------
Boxes and landmarks are in pixels of the network input (or, after :func:`detect_multiscale`, of the
original image), pixel-area frame: boxes ``xyxy``, points ``(x, y)``, flip ``x' = W - x``,
landmarks in ``FIVE_POINT`` order (left/right swapped with its flip permutation on un-flipping).

Defaults (named once here, used by ``RetinaFaceModule`` and the benchmarks): face probability
> ``SCORE_THRESHOLD`` (0.02) among the ``TOP_K`` (5000) best anchors, NMS at IoU ``NMS_THRESHOLD``
(0.4), at most ``KEEP_TOP_K`` (750) detections per image. Test-time augmentation merges the passes
by box voting at IoU ``VOTE_THRESHOLD`` (0.4), as the paper does (sec. 4.2, "box voting [15] with
IoU 0.4"); NMS stays an option (``merge="nms"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, box_iou, nms

from facelit.geometry.anchors import AnchorSet
from facelit.geometry.coding import decode_boxes, decode_landmarks
from facelit.geometry.schemes import FIVE_POINT

if TYPE_CHECKING:
    from facelit.nets.retinaface import RetinaFace

__all__ = [
    "NUM_LANDMARKS",
    "SCORE_THRESHOLD",
    "NMS_THRESHOLD",
    "VOTE_THRESHOLD",
    "TOP_K",
    "KEEP_TOP_K",
    "decode_outputs",
    "detect",
    "detect_multiscale",
    "box_voting",
    "nms_topk",
]

NUM_LANDMARKS = FIVE_POINT.num_points
SCORE_THRESHOLD = 0.02
NMS_THRESHOLD = 0.4
VOTE_THRESHOLD = 0.4
TOP_K = 5000
KEEP_TOP_K = 750
NMS_CHUNK = 512  # candidates per block of nms_topk (fastest of 128..2048 measured on a dense score map)

Merge = Literal["vote", "nms"]


def _anchor_boxes(anchors: AnchorSet | Tensor, num: int) -> Tensor:
    boxes = anchors.boxes if isinstance(anchors, AnchorSet) else anchors
    if boxes.ndim != 2 or boxes.shape != (num, 4):
        raise ValueError(
            f"outputs have {num} anchors but anchors have shape {tuple(boxes.shape)}; "
            "use model.anchors_for(image_size) of the same input size"
        )
    return boxes


def _face_scores(outputs: dict[str, Tensor | list[Tensor]]) -> Tensor:
    """(B, A) float32 face probability of the last stage."""
    stage = "_2" if "box_2" in outputs else ""
    return outputs[f"cls{stage}"].float().softmax(-1)[..., 1]


def _decode_at(
    outputs: dict[str, Tensor | list[Tensor]], priors: Tensor, image: Tensor | None, anchor: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Boxes (..., 4) and landmarks (..., 5, 2) decoded at the (image, anchor) pairs, or at every
    anchor ((B, A, ...)) when both are None. Decoding is elementwise, so decoding a gathered subset
    gives the same values as decoding everything and gathering."""

    def take(key: str) -> Tensor:
        value = outputs[key]
        return (value if image is None else value[image, anchor]).float()

    stage = "_2" if "box_2" in outputs else ""
    priors = priors.float() if anchor is None else priors[anchor].float()
    if stage:  # cascade: stage 2 regresses from the stage-1 boxes
        priors = decode_boxes(take("box"), priors)
    boxes = decode_boxes(take(f"box{stage}"), priors)
    points = take(f"landmarks{stage}").unflatten(-1, (NUM_LANDMARKS, 2))
    return boxes, decode_landmarks(points, priors)


def decode_outputs(
    outputs: dict[str, Tensor | list[Tensor]], anchors: AnchorSet | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores and decoded boxes/landmarks of every anchor (the cascade stage when present).

    Args:
        outputs: ``RetinaFace.forward`` output (``cls``, ``box``, ``landmarks`` (B, A, ...)).
        anchors: ``AnchorSet`` or (A, 4) boxes of the same input size.

    Returns:
        float32 scores (B, A) face probability, boxes (B, A, 4) xyxy, landmarks (B, A, 5, 2) in pixels.
    """
    priors = _anchor_boxes(anchors, outputs["cls"].shape[1])
    boxes, landmarks = _decode_at(outputs, priors, None, None)
    return _face_scores(outputs), boxes, landmarks


@dataclass
class _Candidates:
    """Flat pre-NMS detections of a batch: all fields (N, ...)."""

    image: Tensor
    anchor_index: Tensor
    boxes: Tensor
    scores: Tensor
    landmarks: Tensor
    source: Tensor | None = None  # test-time-augmentation pass, see detect_multiscale


def _candidates(
    outputs: dict[str, Tensor | list[Tensor]], anchors: AnchorSet | Tensor, score_threshold: float, top_k: int
) -> _Candidates:
    """Per image the ``top_k`` best anchors with face probability > ``score_threshold``, decoded
    only there (scores first, then box and landmark decoding of the few survivors)."""
    scores = _face_scores(outputs)
    priors = _anchor_boxes(anchors, scores.shape[1])
    top_scores, top_idx = scores.topk(min(top_k, scores.shape[1]), dim=1)
    keep = top_scores > score_threshold
    image = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(top_idx)[keep]
    anchor = top_idx[keep]
    boxes, landmarks = _decode_at(outputs, priors, image, anchor)
    return _Candidates(image, anchor, boxes, top_scores[keep], landmarks)


def _float32_below(value: float) -> float:
    """The largest float32 <= ``value``: for a float32 ``v``, ``v > value`` iff ``v > result``."""
    below = torch.tensor(value, dtype=torch.float32)
    if float(below) > value:
        below = torch.nextafter(below, torch.tensor(-math.inf))
    return float(below)


def _overlaps_any(kept: Tensor, boxes: Tensor, iou_threshold: float) -> Tensor:
    """(N,) bool: box n has IoU > ``iou_threshold`` with some ``kept`` box ((K, 4), (N, 4) xyxy).

    The IoU arithmetic of torchvision's NMS kernel (``inter / (area_k + area_n - inter)``), on
    contiguous (K, N) coordinate planes; the float32 IoU is compared as torchvision compares it
    with its double threshold."""
    kx1, ky1, kx2, ky2 = (c[:, None] for c in kept.unbind(1))
    x1, y1, x2, y2 = boxes.unbind(1)
    w = (torch.minimum(kx2, x2) - torch.maximum(kx1, x1)).clamp_(min=0)
    h = (torch.minimum(ky2, y2) - torch.maximum(ky1, y1)).clamp_(min=0)
    inter = w.mul_(h)
    union = ((kx2 - kx1) * (ky2 - ky1)) + ((x2 - x1) * (y2 - y1)) - inter
    return (inter / union > _float32_below(iou_threshold)).any(0)


def nms_topk(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int, chunk: int = NMS_CHUNK
) -> Tensor:
    """Greedy NMS (``torchvision.ops.nms``: descending score, suppress IoU > ``iou_threshold``) that
    stops once ``max_keep`` boxes are kept.

    Greedy NMS of a score-ordered prefix is the prefix of greedy NMS of the whole list (a box is
    suppressed only by kept boxes scoring higher), so the candidates are processed in blocks of
    ``chunk``: a block first loses the boxes that overlap an already kept box, then runs NMS on its
    remaining boxes. The result equals ``nms(boxes, scores, iou_threshold)[:max_keep]``, at a
    fraction of the cost when far more than ``max_keep`` boxes would survive (dense, weak score maps).

    Args:
        boxes: (N, 4) xyxy; scores: (N,).
        iou_threshold: suppression IoU; max_keep: at most this many kept; chunk: block size.

    Returns:
        (K,) int64 indices into ``boxes``, K <= max_keep, in descending score order.
    """
    order = scores.argsort(descending=True, stable=True)
    kept: list[Tensor] = []
    kept_boxes = boxes[:0]
    count = 0
    for start in range(0, order.numel(), chunk):
        idx = order[start : start + chunk]
        if count:
            idx = idx[~_overlaps_any(kept_boxes, boxes[idx], iou_threshold)]
        idx = idx[nms(boxes[idx], scores[idx], iou_threshold)]
        kept.append(idx)
        kept_boxes = torch.cat((kept_boxes, boxes[idx]))
        count += idx.numel()
        if count >= max_keep:
            break
    return torch.cat(kept)[:max_keep] if kept else order[:0]


def _nms_per_image(
    c: _Candidates, num_images: int, nms_threshold: float, keep_top_k: int
) -> list[dict[str, Tensor]]:
    fields = {
        "boxes": c.boxes,
        "scores": c.scores,
        "landmarks": c.landmarks,
        "anchor_index": c.anchor_index,
    }
    if c.source is not None:
        fields["source"] = c.source
    out = []
    for i in range(num_images):  # a loop over images, not faces: NMS is per image
        sel = (c.image == i).nonzero(as_tuple=True)[0]
        keep = sel[nms_topk(c.boxes[sel], c.scores[sel], nms_threshold, keep_top_k)]
        out.append({name: value[keep] for name, value in fields.items()})
    return out


def _check_detect_args(score_threshold: float, nms_threshold: float, top_k: int, keep_top_k: int) -> None:
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if top_k < 1 or keep_top_k < 1:
        raise ValueError(f"top_k and keep_top_k must be >= 1, got {top_k}, {keep_top_k}")
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")


@torch.no_grad()
def detect(
    outputs: dict[str, Tensor | list[Tensor]],
    anchors: AnchorSet | Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
) -> list[dict[str, Tensor]]:
    """Decode, threshold, NMS per image (batched over images on the device).

    Per image: anchors with face probability > ``score_threshold`` among the ``top_k`` best, NMS at
    IoU ``nms_threshold``, then the ``keep_top_k`` best.

    Returns:
        per image a dict: ``boxes`` (P, 4) xyxy, ``scores`` (P,), ``landmarks`` (P, 5, 2),
        ``anchor_index`` (P,) int64 (for ``RetinaFace.mesh_at``), sorted by score, descending.
    """
    _check_detect_args(score_threshold, nms_threshold, top_k, keep_top_k)
    cands = _candidates(outputs, anchors, score_threshold, top_k)
    return _nms_per_image(cands, outputs["cls"].shape[0], nms_threshold, keep_top_k)


def _unflip(c: _Candidates, flipped: Tensor, width: int) -> None:
    """In place: map candidates detected on the horizontally flipped image back (x' = W - x, swap
    left/right landmarks with ``FIVE_POINT.flip_perm``)."""
    boxes = torch.stack((width - c.boxes[:, 2], c.boxes[:, 1], width - c.boxes[:, 0], c.boxes[:, 3]), dim=-1)
    lm = c.landmarks[:, FIVE_POINT.flip_tensor(c.landmarks.device)]
    lm = torch.stack((width - lm[..., 0], lm[..., 1]), dim=-1)
    c.boxes = torch.where(flipped[:, None], boxes, c.boxes)
    c.landmarks = torch.where(flipped[:, None, None], lm, c.landmarks)


def box_voting(
    boxes: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    iou_threshold: float = VOTE_THRESHOLD,
    keep_top_k: int = KEEP_TOP_K,
) -> dict[str, Tensor]:
    """Box voting (Gidaris and Komodakis 2015, as RetinaFace merges its test-time passes).

    Greedy clusters in descending score order: the best remaining candidate heads a cluster of every
    remaining candidate overlapping it at IoU > ``iou_threshold`` (exactly the boxes greedy NMS
    would suppress with it). Each cluster gives one detection: the score-weighted mean of its boxes
    and of its landmarks, with the head's (largest) score. Unlike the SSH-style ``bbox_vote`` of
    the authors' mxnet code, a cluster of one candidate is kept, not dropped.

    Args:
        boxes: (N, 4) xyxy; scores: (N,); landmarks: (N, 5, 2).
        iou_threshold: cluster IoU (0.4 in the paper).
        keep_top_k: at most this many clusters (the best heads).

    Returns:
        ``boxes`` (P, 4), ``scores`` (P,), ``landmarks`` (P, 5, 2), ``head`` (P,) int64 index of each
        cluster's head in the input, sorted by score, descending.
    """
    heads = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), iou_threshold)[:keep_top_k]
    if heads.numel() == 0:
        return {"boxes": boxes[:0], "scores": scores[:0], "landmarks": landmarks[:0], "head": heads}
    overlap = box_iou(boxes[heads], boxes) > iou_threshold  # (K, N), the heads in score order
    overlap[torch.arange(heads.numel(), device=heads.device), heads] = True
    member = overlap.any(0)
    cluster = overlap.int().argmax(0)  # first (best) head each candidate overlaps: greedy NMS's suppressor
    weight = torch.zeros(heads.numel(), member.numel(), dtype=scores.dtype, device=scores.device)
    idx = member.nonzero(as_tuple=True)[0]
    weight[cluster[idx], idx] = scores[idx]
    weight = weight / weight.sum(1, keepdim=True)
    return {
        "boxes": weight @ boxes,
        "scores": scores[heads],
        "landmarks": (weight @ landmarks.flatten(1)).unflatten(1, landmarks.shape[1:]),
        "head": heads,
    }


@torch.no_grad()
def detect_multiscale(
    model: RetinaFace,
    image: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
    merge: Merge = "vote",
    vote_threshold: float = VOTE_THRESHOLD,
) -> dict[str, Tensor]:
    """Test-time augmentation: run ``model`` on resized (and horizontally flipped) copies of one
    image, map every pre-NMS candidate back to the original frame, then merge them once.

    Args:
        model: a RetinaFace (put it in eval mode first).
        image: (3, H, W) or (1, 3, H, W) RGB in [0, 1].
        scales: resize factors; the input of scale ``s`` is ``(round(H s), round(W s))`` pixels
            (bilinear, antialiased when shrinking), and coordinates map back by the exact size ratio.
        flip: also run the mirrored image of every scale (same batch).
        merge: ``"vote"`` (box voting at ``vote_threshold``, the paper) or ``"nms"`` (at
            ``nms_threshold``).

    Returns:
        dict as in :func:`detect` (``anchor_index`` of the kept/heading candidate) plus ``source``
        (P,) int64: the pass of that candidate, ``scale_index * (2 if flip else 1) + flipped``;
        ``anchor_index`` refers to that pass's anchors.
    """
    _check_detect_args(score_threshold, nms_threshold, top_k, keep_top_k)
    if merge not in ("vote", "nms"):
        raise ValueError(f"merge must be 'vote' or 'nms', got {merge!r}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"detect_multiscale takes one (3, H, W) image, got {tuple(image.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    h, w = image.shape[-2:]
    passes = 2 if flip else 1
    parts: list[_Candidates] = []
    for si, s in enumerate(scales):
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = image[None]
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
        batch = torch.cat((x, x.flip(-1))) if flip else x
        c = _candidates(model(batch), model.anchors_for(size, image.device), score_threshold, top_k)
        if flip:
            _unflip(c, c.image == 1, size[1])
        ratio = torch.tensor([w / size[1], h / size[0]], device=image.device, dtype=c.boxes.dtype)
        c.boxes = c.boxes * ratio.repeat(2)
        c.landmarks = c.landmarks * ratio
        c.source = si * passes + c.image
        c.image = torch.zeros_like(c.image)
        parts.append(c)
    merged = _Candidates(
        *(torch.cat([getattr(p, f) for p in parts]) for f in _Candidates.__dataclass_fields__)
    )
    if merge == "nms":
        return _nms_per_image(merged, 1, nms_threshold, keep_top_k)[0]
    voted = box_voting(merged.boxes, merged.scores, merged.landmarks, vote_threshold, keep_top_k)
    head = voted.pop("head")
    return {**voted, "anchor_index": merged.anchor_index[head], "source": merged.source[head]}
