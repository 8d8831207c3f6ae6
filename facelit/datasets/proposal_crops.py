"""Face / non-face crops from detector proposals, the tiny-face GAN's training pairs (Bai et al., 2018).

A proposal is a box a detector returned (true or false positive). It is a **face** when its IoU
with some ground-truth face is >= 0.5 and a **non-face** when its IoU is < 0.5 to every face (the
paper's rule). Each crop is the square box around the proposal (side = longer side x
(1 + 2 * margin)) resampled to ``hr_size`` (the HR image, 128 in the paper); the LR image is its
bicubic down-sampling by ``scale`` (4: 32x32), the paper's pairing. At test time the LR image is
taken directly from the image (``lr_crops``): a tiny proposal already is low-resolution.

Proposal sources:

- ``read_proposals``: our detectors' JSON lines (``predictions.rank*.jsonl``: one object per image
  with ``event``, ``file``, ``boxes`` (xyxy, original pixels), ``scores``, optional ``landmarks``;
  written by ``facelit.metrics.widerface.write_detection_results``);
- ``synthetic_proposals``: jittered ground-truth boxes (true positives and near misses) plus
  random boxes (mostly false positives), for data without a detector run.

Convention: boxes xyxy in the pixel-area frame of the image (pixel i covers [i, i + 1)).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from facelit.datasets.crops import crop_and_resize, square_box
from facelit.geometry.boxes import box_iou

__all__ = [
    "FACE_IOU",
    "SEED_STRIDE",
    "Proposals",
    "read_proposals",
    "label_proposals",
    "synthetic_proposals",
    "hr_lr_pair",
    "lr_crops",
    "ProposalCropDataset",
    "RescoreDataset",
    "collate_proposal_crops",
]

FACE_IOU = 0.5  # face if IoU >= 0.5 with a face, non-face if IoU < 0.5 to every face
_MIN_SIDE = 1e-3  # proposals with a side below this (pixels) are degenerate and skipped
SEED_STRIDE = 1_000_003  # the draws of image i under seed s are seeded by s * SEED_STRIDE + i (+ a stream)


@dataclass(frozen=True)
class Proposals:
    """One image's detector output: ``boxes`` (P, 4) xyxy float32, ``scores`` (P,) float32 and, when
    read from a file, the image's ``key`` (event, file) there."""

    boxes: torch.Tensor
    scores: torch.Tensor
    key: tuple[str, str] | None = None


def _proposal_files(pred_dir: Path) -> list[Path]:
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"proposal folder not found: {pred_dir}")
    files = sorted(pred_dir.glob("predictions.rank*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"{pred_dir}: no predictions.rank*.jsonl file (run a detector's predict first)"
        )
    return files


def _parse_record(path: Path, line_no: int, line: str) -> tuple[tuple[str, str], Proposals]:
    where = f"{path}, line {line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg}): {line[:80]!r}") from None
    missing = [k for k in ("event", "file", "boxes", "scores") if k not in record]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    try:
        boxes = torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)
        scores = torch.tensor(record["scores"], dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where}: boxes must be (P, 4) numbers and scores (P,): {err}") from None
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{where}: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
        raise ValueError(f"{where}: non-finite box or score")
    key = (str(record["event"]), str(record["file"]))
    return key, Proposals(boxes, scores, key)


def read_proposals(pred_dir: str | Path) -> dict[tuple[str, str], Proposals]:
    """Read every ``predictions.rank*.jsonl`` of ``pred_dir`` (DDP ranks merged).

    Returns:
        {(event, file): Proposals}, in file order of the sorted rank files.

    Raises:
        FileNotFoundError: no folder or no JSON lines file.
        ValueError: a malformed line (file and line number named) or an image listed twice.
    """
    out: dict[tuple[str, str], Proposals] = {}
    origin: dict[tuple[str, str], str] = {}
    for path in _proposal_files(Path(pred_dir)):
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            key, props = _parse_record(path, line_no, line)
            if key in out:
                raise ValueError(
                    f"{path}, line {line_no}: image {key[0]}/{key[1]} already listed at {origin[key]}"
                )
            out[key] = props
            origin[key] = f"{path.name}:{line_no}"
    return out


def label_proposals(boxes: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Face labels of (P, 4) proposals against (G, 4) ground-truth faces: (P,) bool, IoU >= 0.5."""
    if boxes.shape[0] == 0 or faces.shape[0] == 0:
        return torch.zeros(boxes.shape[0], dtype=torch.bool)
    return box_iou(boxes.float(), faces.float()).max(dim=1).values >= FACE_IOU


def synthetic_proposals(
    faces: torch.Tensor,
    image_size: tuple[int, int],
    generator: torch.Generator,
    per_face: int = 2,
    jitter: float = 0.2,
    false_positives: int = 4,
    size_range: tuple[float, float] = (8.0, 64.0),
) -> Proposals:
    """Detector-like proposals where no detector run is given.

    Args:
        faces: (G, 4) ground-truth boxes.
        image_size: (H, W).
        generator: the random stream (seeded per image by the caller: deterministic).
        per_face: jittered copies of each face (centre moved by up to ``jitter`` x size, size scaled by
            up to 1 +/- ``jitter``): mostly IoU >= 0.5 (faces), some near misses (non-faces).
        false_positives: uniformly placed square boxes with side in ``size_range``.

    Returns:
        Proposals with scores 1 for jittered boxes and 0.5 for random ones (only their order matters).
    """
    h, w = image_size
    parts = []
    if faces.shape[0] and per_face:
        base = faces.float().repeat_interleave(per_face, dim=0)
        wh = base[:, 2:] - base[:, :2]
        u = torch.rand(base.shape[0], 3, generator=generator) * 2 - 1
        centre = (base[:, :2] + base[:, 2:]) / 2 + u[:, :2] * jitter * wh
        half = wh / 2 * (1 + u[:, 2:] * jitter)
        parts.append((torch.cat([centre - half, centre + half], 1), torch.ones(base.shape[0])))
    if false_positives:
        u = torch.rand(false_positives, 3, generator=generator)
        side = size_range[0] + u[:, 2] * (size_range[1] - size_range[0])
        x1 = u[:, 0] * (w - side).clamp(min=0)
        y1 = u[:, 1] * (h - side).clamp(min=0)
        boxes = torch.stack([x1, y1, x1 + side, y1 + side], 1)
        parts.append((boxes, torch.full((false_positives,), 0.5)))
    if not parts:
        return Proposals(torch.zeros(0, 4), torch.zeros(0))
    return Proposals(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def hr_lr_pair(
    image: torch.Tensor, box: torch.Tensor, hr_size: int, scale: int, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """HR crop (3, S, S) of the square box around ``box`` and its LR (3, S/scale, S/scale).

    LR = bicubic down-sampling (antialiased) of the HR crop, clamped to [0, 1].
    """
    if hr_size % scale:
        raise ValueError(f"hr_size {hr_size} must be a multiple of scale {scale}")
    hr, _ = crop_and_resize(image, square_box(box, margin), hr_size)
    hr = hr.clamp(0.0, 1.0)
    lr = F.interpolate(hr[None], size=hr_size // scale, mode="bicubic", align_corners=False, antialias=True)[
        0
    ]
    return hr, lr.clamp(0.0, 1.0)


def lr_crops(image: torch.Tensor, boxes: torch.Tensor, lr_size: int, margin: float) -> torch.Tensor:
    """Test-time LR inputs: (P, 3, lr_size, lr_size) crops of the square boxes around (P, 4) proposals."""
    if boxes.shape[0] == 0:
        return image.new_zeros((0, 3, lr_size, lr_size))
    return torch.stack([crop_and_resize(image, square_box(b, margin), lr_size)[0] for b in boxes]).clamp(
        0.0, 1.0
    )


def _sides(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values


ProposalSource = Callable[[int, dict[str, Any]], Proposals]


class ProposalCropDataset(Dataset):
    """Item i: up to ``crops_per_image`` HR/LR crops of image i of a detection dataset.

    Candidates are the ground-truth faces (labelled faces) and the image's proposals (labelled by
    :func:`label_proposals`); candidates whose longer side is below ``min_size`` pixels are dropped
    (an HR target must not itself be an up-sampled blur). Then up to ``round(face_fraction * K)``
    faces and the rest non-faces are drawn without replacement by a generator seeded by
    ``(seed, i)``, so an item is deterministic.

    Args:
        images: detection dataset (items with ``image`` (3, H, W) and ``boxes`` (G, 4); ``ignore``
            (G,) faces are left out of the face candidates, not of the IoU labelling).
        proposals: ``(index, sample) -> Proposals``.
        hr_size, scale, margin: see :func:`hr_lr_pair`.
        crops_per_image: K.
        face_fraction: share of faces among the K crops (fewer when the image has fewer).
        min_size: smallest candidate side (pixels of the image).
        seed: seed of the draws.

    Item: ``hr`` (K', 3, S, S), ``lr`` (K', 3, S/scale, S/scale), ``is_face`` (K',) bool,
    ``boxes`` (K', 4) (image pixels), ``meta`` (the image's meta, plus ``index``); K' <= K.
    """

    def __init__(
        self,
        images: Dataset,
        proposals: ProposalSource,
        hr_size: int = 128,
        scale: int = 4,
        margin: float = 0.1,
        crops_per_image: int = 8,
        face_fraction: float = 0.5,
        min_size: float = 16.0,
        seed: int = 0,
    ) -> None:
        if crops_per_image < 1 or not 0.0 <= face_fraction <= 1.0:
            raise ValueError(
                f"crops_per_image must be >= 1 and face_fraction in [0, 1], got "
                f"{crops_per_image}, {face_fraction}"
            )
        if hr_size % scale:
            raise ValueError(f"hr_size {hr_size} must be a multiple of scale {scale}")
        self.images, self.proposals = images, proposals
        self.hr_size, self.scale, self.margin = hr_size, scale, margin
        self.crops_per_image, self.face_fraction = crops_per_image, face_fraction
        self.min_size, self.seed = min_size, seed

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * SEED_STRIDE + index)

    def candidates(self, index: int, sample: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, 4) candidate boxes and (C,) face labels of image ``index`` (before the size filter)."""
        faces = sample["boxes"].float().reshape(-1, 4)
        keep = (
            ~sample["ignore"].bool() if "ignore" in sample else torch.ones(faces.shape[0], dtype=torch.bool)
        )
        props = self.proposals(index, sample).boxes.float().reshape(-1, 4)
        props = props[_sides(props) > _MIN_SIDE] if props.shape[0] else props
        boxes = torch.cat([faces[keep], props])
        labels = torch.cat([torch.ones(int(keep.sum()), dtype=torch.bool), label_proposals(props, faces)])
        return boxes, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.images[index]
        boxes, labels = self.candidates(index, sample)
        big = _sides(boxes) >= self.min_size if boxes.shape[0] else torch.zeros(0, dtype=torch.bool)
        boxes, labels = boxes[big], labels[big]
        g = self._generator(index)
        want_faces = round(self.face_fraction * self.crops_per_image)
        face_idx = labels.nonzero().squeeze(1)
        other_idx = (~labels).nonzero().squeeze(1)
        face_idx = face_idx[torch.randperm(face_idx.numel(), generator=g)][:want_faces]
        other_idx = other_idx[torch.randperm(other_idx.numel(), generator=g)][
            : self.crops_per_image - face_idx.numel()
        ]
        chosen = torch.cat([face_idx, other_idx])
        s, lo = self.hr_size, self.hr_size // self.scale
        hr, lr = torch.zeros(chosen.numel(), 3, s, s), torch.zeros(chosen.numel(), 3, lo, lo)
        for k, j in enumerate(chosen.tolist()):
            hr[k], lr[k] = hr_lr_pair(sample["image"], boxes[j], s, self.scale, self.margin)
        meta = dict(sample.get("meta", {}))
        meta["index"] = index
        return {"hr": hr, "lr": lr, "is_face": labels[chosen], "boxes": boxes[chosen], "meta": meta}


def collate_proposal_crops(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate the crops of several images: ``hr`` (N, 3, S, S), ``lr``, ``is_face`` (N,),
    ``boxes`` (N, 4), ``image_index`` (N,) (position of the crop's image in the batch), ``meta``."""
    out: dict[str, Any] = {k: torch.cat([s[k] for s in samples]) for k in ("hr", "lr", "is_face", "boxes")}
    out["image_index"] = torch.cat(
        [torch.full((s["is_face"].shape[0],), i, dtype=torch.long) for i, s in enumerate(samples)]
    )
    out["meta"] = [s["meta"] for s in samples]
    return out


class RescoreDataset(Dataset):
    """Item i: image i's proposals with the LR crops of those to re-score (test-time use).

    Args:
        images: detection dataset (``image`` (3, H, W), ``meta`` with ``event``/``file``; ``boxes``
            and ``difficulty`` when annotated, passed on as ``gt_boxes`` / ``gt_difficulty`` so
            that the change of AP can be measured).
        proposals: ``(index, sample) -> Proposals`` (the detector's output for image i).
        lr_size: side of the LR crops (the generator's input, 32 in the paper).
        margin: crop margin (see :func:`hr_lr_pair`).
        rescore_below: proposals whose longer side is below this (pixels) are re-scored; ``None``
            re-scores all.
        rescore_min_score: only proposals with a detector score of at least this are re-scored (a
            detector's low-score tail can hold hundreds of boxes per image).

    Item: ``boxes`` (P, 4), ``scores`` (P,), ``rescore`` (P,) bool, ``lr`` (R, 3, l, l) crops of the
    R re-scored proposals (in box order), ``meta`` ({"event", "file", ...}: the detector's names for
    the image when the proposals were read from a file) and, when annotated,
    ``gt_boxes`` (G, 4), ``gt_difficulty`` (G, 3).
    """

    def __init__(
        self,
        images: Dataset,
        proposals: ProposalSource,
        lr_size: int = 32,
        margin: float = 0.1,
        rescore_below: float | None = 20.0,
        rescore_min_score: float = 0.0,
    ) -> None:
        self.images, self.proposals = images, proposals
        self.lr_size, self.margin, self.rescore_below = lr_size, margin, rescore_below
        self.rescore_min_score = rescore_min_score

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.images[index]
        props = self.proposals(index, sample)
        boxes, scores = props.boxes.float().reshape(-1, 4), props.scores.float().reshape(-1)
        rescore = torch.ones(boxes.shape[0], dtype=torch.bool)
        if self.rescore_below is not None and boxes.shape[0]:
            rescore = _sides(boxes) < self.rescore_below
        if boxes.shape[0]:
            rescore &= (_sides(boxes) > _MIN_SIDE) & (scores >= self.rescore_min_score)
        item: dict[str, Any] = {
            "boxes": boxes,
            "scores": scores,
            "rescore": rescore,
            "lr": lr_crops(sample["image"], boxes[rescore], self.lr_size, self.margin),
            "meta": dict(sample.get("meta", {})),
        }
        if props.key is not None:  # write the re-scored image under the detector's name for it
            item["meta"].update(event=props.key[0], file=props.key[1])
        if "boxes" in sample and "difficulty" in sample:
            item["gt_boxes"], item["gt_difficulty"] = sample["boxes"].float(), sample["difficulty"].bool()
        return item
