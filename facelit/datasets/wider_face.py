"""WIDER FACE readers (official split files, RetinaFace label files) and a torch Dataset.

Official layout read by ``WiderFaceDataset(root, split)``::

    root/
      WIDER_train/images/<event>/<file>.jpg
      WIDER_val/images/<event>/<file>.jpg
      wider_face_split/
        wider_face_train_bbx_gt.txt
        wider_face_val_bbx_gt.txt
        wider_face_val.mat, wider_easy_val.mat,          (val only: the eval_tools ground truth,
        wider_medium_val.mat, wider_hard_val.mat          for the easy/medium/hard masks)
      train/label.txt                                     (optional: RetinaFace release, landmarks)

Convention
----------
Boxes are xyxy in pixels of the pixel-area frame (pixel i covers [i, i + 1)); the files give
``x y w h`` and are converted at read time to ``(x, y, x + w, y + h)``. Boxes with ``w <= 0`` or
``h <= 0`` are dropped and counted. Landmarks are (x, y) pixels as written in ``label.txt``, in the
``facelit.geometry.schemes.FIVE_POINT`` order (left eye, right eye, nose tip, left and right mouth
corner, "left" = image left). Validity and visibility are bool masks; a face whose fifteen landmark
values are all -1 has ``landmarks_valid = False`` and zero landmarks (never -1 in arrays).

Difficulty (N, 3) bool = kept in the (easy, medium, hard) WIDER evaluation settings. Val: the
``gt_list`` of the official ``wider_{easy,medium,hard}_val.mat``. Train has no official settings:
we mark every face (False, False, not invalid), since the official hard setting keeps no invalid
face (checked on val) and easy/medium are not defined for train.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import load_rgb
from facelit.geometry.schemes import FIVE_POINT
from facelit.parsing import check_number_tokens

__all__ = [
    "ATTRIBUTE_NAMES",
    "WiderRecord",
    "WiderStats",
    "parse_bbx_gt",
    "parse_retinaface_labels",
    "merge_landmarks",
    "wider_stats",
    "WiderFaceDataset",
]

logger = logging.getLogger(__name__)

ATTRIBUTE_NAMES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_INVALID = ATTRIBUTE_NAMES.index("invalid")
_NUM_POINTS = FIVE_POINT.num_points
_BBX_VALUES = 4 + len(ATTRIBUTE_NAMES)  # 10 per face in wider_face_*_bbx_gt.txt
_RETINA_VALUES = (4, 4 + 3 * _NUM_POINTS + 1)  # val/test: x y w h; train: + 5 x (lx ly flag) + blur


@dataclass(frozen=True)
class WiderRecord:
    """One image's annotation after reading (N faces kept).

    Attributes:
        path: ``"<event>/<file>.jpg"`` as written in the annotation file.
        line: 1-based line number of the path line.
        boxes: (N, 4) float32 xyxy.
        ignore: (N,) bool, the WIDER ``invalid`` flag (all False in RetinaFace label files).
        attributes: (N, 6) int16 blur, expression, illumination, invalid, occlusion, pose (bbx_gt
            files); (N, 0) for RetinaFace label files.
        landmarks: (N, 5, 2) float32, zeros where ``landmarks_valid`` is False.
        landmarks_valid: (N,) bool.
        landmarks_visible: (N, 5) bool (label flag 0.0 = visible, 1.0 = occluded).
        source_index: (N,) int64 row of each kept face in its image's block of the file (the index
            the official ``gt_list`` refers to, 0-based).
        degenerate: boxes of this image dropped for ``w <= 0`` or ``h <= 0``.
        zero_row: the image was written as one all-zero face row (read as zero faces).
    """

    path: str
    line: int
    boxes: np.ndarray
    ignore: np.ndarray
    attributes: np.ndarray
    landmarks: np.ndarray
    landmarks_valid: np.ndarray
    landmarks_visible: np.ndarray
    source_index: np.ndarray
    degenerate: int = 0
    zero_row: bool = False

    @property
    def event(self) -> str:
        return self.path.split("/")[0]

    @property
    def file(self) -> str:
        """Image name without folder and ``.jpg`` (the name the evaluation files use)."""
        name = self.path.split("/")[-1]
        return name[:-4] if name.lower().endswith(".jpg") else name

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class WiderStats:
    """What a reader saw; logged once by ``WiderFaceDataset``."""

    images: int = 0
    faces: int = 0
    zero_face_images: int = 0
    all_zero_rows: int = 0
    degenerate_boxes: int = 0
    invalid_faces: int = 0
    faces_without_landmarks: int = 0

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def wider_stats(records: list[WiderRecord]) -> WiderStats:
    """Count images, kept faces, zero-face images, dropped degenerate boxes, invalid faces, ..."""
    return WiderStats(
        images=len(records),
        faces=sum(r.num_faces for r in records),
        zero_face_images=sum(r.num_faces == 0 for r in records),
        all_zero_rows=sum(r.zero_row for r in records),
        degenerate_boxes=sum(r.degenerate for r in records),
        invalid_faces=int(sum(r.ignore.sum() for r in records)),
        faces_without_landmarks=int(sum((~r.landmarks_valid).sum() for r in records)),
    )


# ----------------------------------------------------------------------------------------------
# Line parsing (one helper for both formats)
# ----------------------------------------------------------------------------------------------


def _parse_block(path: Path, numbered: list[tuple[int, str]], allowed: tuple[int, ...]) -> np.ndarray:
    """Parse (line number, text) face lines into (K, C) float64, C one of ``allowed`` (same for all).

    Raises ValueError naming the file, the line number and the offending value.
    """
    if not numbered:
        return np.zeros((0, allowed[0]))
    try:
        rows = np.array([text.split() for _, text in numbered], dtype=np.float64)
        if rows.ndim == 2 and rows.shape[1] in allowed and np.isfinite(rows).all():
            return rows
    except ValueError:
        pass
    width = len(numbered[0][1].split())
    for line_no, text in numbered:  # slow path, only to name the offending line
        tokens = text.split()
        where = f"{path}, line {line_no}"
        if len(tokens) not in allowed:
            raise ValueError(
                f"{where}: expected {' or '.join(map(str, allowed))} numbers, got {text.strip()!r}"
            )
        if len(tokens) != width:
            raise ValueError(
                f"{where}: {len(tokens)} numbers where the previous lines have {width}: {text.strip()!r}"
            )
        check_number_tokens(tokens, where)
    raise AssertionError("unreachable: the fast parse failed on valid lines")  # pragma: no cover


def _xywh_faces(xywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) x, y, w, h -> (xyxy (K, 4) float32, kept (K,) bool where w > 0 and h > 0)."""
    kept = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1).astype(np.float32)
    return xyxy, kept


def _record(
    path: str,
    line: int,
    xywh: np.ndarray,
    attributes: np.ndarray,
    landmarks: np.ndarray | None = None,
    landmarks_valid: np.ndarray | None = None,
    landmarks_visible: np.ndarray | None = None,
    zero_row: bool = False,
) -> WiderRecord:
    """Build a record from K parsed rows, dropping degenerate boxes (one place for both formats)."""
    k = xywh.shape[0]
    xyxy, kept = _xywh_faces(xywh)
    if landmarks is None:
        landmarks = np.zeros((k, _NUM_POINTS, 2), dtype=np.float32)
        landmarks_valid = np.zeros(k, dtype=bool)
        landmarks_visible = np.zeros((k, _NUM_POINTS), dtype=bool)
    attributes = attributes.astype(np.int16)
    ignore = attributes[:, _INVALID] == 1 if attributes.shape[1] else np.zeros(k, dtype=bool)
    return WiderRecord(
        path=path,
        line=line,
        boxes=xyxy[kept],
        ignore=ignore[kept],
        attributes=attributes[kept],
        landmarks=landmarks[kept],
        landmarks_valid=landmarks_valid[kept],  # type: ignore[index]
        landmarks_visible=landmarks_visible[kept],  # type: ignore[index]
        source_index=np.flatnonzero(kept).astype(np.int64),
        degenerate=int(k - kept.sum()),
        zero_row=zero_row,
    )


def _read_lines(path: str | Path) -> tuple[Path, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE annotation file not found: {path}")
    return path, path.read_text().splitlines()


def _is_image_path(text: str) -> bool:
    return text.strip().lower().endswith((".jpg", ".jpeg", ".png"))


# ----------------------------------------------------------------------------------------------
# wider_face_{train,val}_bbx_gt.txt
# ----------------------------------------------------------------------------------------------


def parse_bbx_gt(path: str | Path) -> list[WiderRecord]:
    """Read an official ``wider_face_{train,val}_bbx_gt.txt``.

    Format: image path line, face count line, then ``x1 y1 w h blur expression illumination
    invalid occlusion pose`` per face. A count of 0 is followed by one line of ten zeros (consumed);
    a count of 1 with an all-zero row is read as an image with zero faces (``zero_row``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a malformed line (file, line number and value named) or a truncated file.
    """
    path, lines = _read_lines(path)
    records: list[WiderRecord] = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        image, image_line = lines[i].strip(), i + 1
        if not _is_image_path(image):
            raise ValueError(f"{path}, line {image_line}: expected an image path, got {image!r}")
        if i + 1 >= n:
            raise ValueError(f"{path}: file ends after the image path on line {image_line}")
        try:
            count = int(lines[i + 1].strip())
        except ValueError:
            raise ValueError(
                f"{path}, line {i + 2}: face count is not an integer: {lines[i + 1].strip()!r}"
            ) from None
        if count < 0:
            raise ValueError(f"{path}, line {i + 2}: negative face count {count}")
        start = i + 2
        rows_in_block = count
        if count == 0 and start < n and lines[start].strip() and not _is_image_path(lines[start]):
            rows_in_block = 1  # the line of ten zeros that follows a zero count
        if start + rows_in_block > n:
            raise ValueError(f"{path}: file ends inside the {count} faces of {image} (line {image_line})")
        numbered = [(start + k + 1, lines[start + k]) for k in range(rows_in_block)]
        rows = _parse_block(path, numbered, (_BBX_VALUES,))
        i = start + rows_in_block
        all_zero = rows.shape[0] > 0 and not rows.any()
        if count == 0:
            if not all_zero and rows.shape[0]:
                raise ValueError(
                    f"{path}, line {start + 1}: face count 0 must be followed by ten zeros, "
                    f"got {lines[start].strip()!r}"
                )
            rows = rows[:0]
        zero_row = count == 1 and all_zero
        if zero_row:
            rows = rows[:0]
        records.append(_record(image, image_line, rows[:, :4], rows[:, 4:], zero_row=zero_row))
    return records


# ----------------------------------------------------------------------------------------------
# RetinaFace label.txt
# ----------------------------------------------------------------------------------------------


def _landmarks_from_rows(path: Path, numbered: list[tuple[int, str]], rows: np.ndarray):
    """(K, 20) train rows -> landmarks (K, 5, 2), valid (K,), visible (K, 5); checks the flags."""
    k = rows.shape[0]
    if rows.shape[1] == _RETINA_VALUES[0]:
        return (
            np.zeros((k, _NUM_POINTS, 2), dtype=np.float32),
            np.zeros(k, dtype=bool),
            np.zeros((k, _NUM_POINTS), dtype=bool),
        )
    packed = rows[:, 4 : 4 + 3 * _NUM_POINTS].reshape(k, _NUM_POINTS, 3)
    valid = ~(packed == -1.0).all(axis=(1, 2))
    flags = packed[..., 2]
    bad = valid[:, None] & (flags != 0.0) & (flags != 1.0)
    if bad.any():
        r, p = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}, line {numbered[r][0]}: landmark {FIVE_POINT.point_names[p]} flag must be 0.0 (visible) "
            f"or 1.0 (occluded), or all fifteen values -1.0; got {flags[r, p]!r}"
        )
    landmarks = np.where(valid[:, None, None], packed[..., :2], 0.0).astype(np.float32)
    visible = valid[:, None] & (flags == 0.0)
    return landmarks, valid, visible


def parse_retinaface_labels(path: str | Path) -> list[WiderRecord]:
    """Read a RetinaFace release ``label.txt`` (``# path`` lines, then one line per face).

    Face lines: ``x y w h`` (val/test) or 20 numbers (train): ``x y w h`` + five
    ``(lx, ly, flag)`` + blur, landmarks in FIVE_POINT order; flag 0.0 visible, 1.0 occluded; all
    fifteen values -1.0 = no landmarks. Degenerate boxes are dropped and counted.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a malformed line (file, line number and value named).
    """
    path, lines = _read_lines(path)
    heads = [k for k, text in enumerate(lines) if text.startswith("#")]
    if any(text.strip() for text in lines[: heads[0] if heads else len(lines)]):
        first = next(k for k, text in enumerate(lines) if text.strip())
        raise ValueError(f"{path}, line {first + 1}: expected '# <image path>', got {lines[first].strip()!r}")
    records: list[WiderRecord] = []
    for h, head in enumerate(heads):
        image = lines[head][1:].strip()
        if not _is_image_path(image):
            raise ValueError(
                f"{path}, line {head + 1}: expected '# <image path>', got {lines[head].strip()!r}"
            )
        end = heads[h + 1] if h + 1 < len(heads) else len(lines)
        numbered = [(k + 1, lines[k]) for k in range(head + 1, end) if lines[k].strip()]
        rows = _parse_block(path, numbered, _RETINA_VALUES)
        landmarks, valid, visible = _landmarks_from_rows(path, numbered, rows)
        records.append(
            _record(image, head + 1, rows[:, :4], np.zeros((rows.shape[0], 0)), landmarks, valid, visible)
        )
    return records


def merge_landmarks(record: WiderRecord, labels: WiderRecord) -> WiderRecord:
    """Copy the landmarks of ``labels`` (RetinaFace file) onto the faces of ``record`` (bbx_gt file).

    Faces are paired by identical box; the k-th copy of a box pairs with the k-th copy in the other
    file. Faces without a partner keep ``landmarks_valid = False``.
    """
    a, b = record.boxes, labels.boxes
    if a.shape[0] == 0 or b.shape[0] == 0:
        return record
    same_a = (a[:, None] == a[None]).all(-1)
    same_b = (b[:, None] == b[None]).all(-1)
    rank_a = np.tril(same_a, -1).sum(1)  # earlier copies of the same box
    rank_b = np.tril(same_b, -1).sum(1)
    pair = (a[:, None] == b[None]).all(-1) & (rank_a[:, None] == rank_b[None, :])  # (N, L), <= 1 per row
    has = pair.any(1)
    j = pair.argmax(1)
    return replace(
        record,
        landmarks=np.where(has[:, None, None], labels.landmarks[j], record.landmarks),
        landmarks_valid=np.where(has, labels.landmarks_valid[j], record.landmarks_valid),
        landmarks_visible=np.where(has[:, None], labels.landmarks_visible[j], record.landmarks_visible),
    )


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


class WiderFaceDataset(Dataset):
    """WIDER FACE in its official layout; items are unbatched detection samples (facelit/batch.py).

    Args:
        root: dataset root (see the module docstring for the tree).
        split: ``"train"`` or ``"val"``.
        landmarks: serve ``landmarks`` (N, 5, 2), ``landmarks_valid`` (N,), ``landmarks_visible``
            (N, 5); train landmarks come from ``root/train/label.txt`` when present (else every
            face has ``landmarks_valid = False``; val has no landmark annotation).
        transform: called on the sample dict, its result is returned.
        gt_dir: folder of the val ``.mat`` files (default ``root/wider_face_split``).

    Item::

        image              (3, H, W) float32 RGB in [0, 1]
        boxes              (N, 4)    float32 xyxy
        landmarks          (N, 5, 2) float32            (only with landmarks=True)
        landmarks_valid    (N,)      bool               (only with landmarks=True)
        landmarks_visible  (N, 5)    bool               (only with landmarks=True)
        ignore             (N,)      bool  WIDER 'invalid'
        difficulty         (N, 3)    bool  kept in (easy, medium, hard)
        meta               {"event", "file" (name without .jpg), "path", "orig_size": (H, W)}

    No mesh keys (no mesh ground truth). Degenerate boxes are dropped; the counts are logged once.
    """

    SPLITS = ("train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        landmarks: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        gt_dir: str | Path | None = None,
    ) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.landmarks = landmarks
        self.transform = transform
        self.image_dir = self.root / f"WIDER_{split}" / "images"
        records = parse_bbx_gt(self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
        label_file = self.root / "train" / "label.txt"
        if split == "train" and landmarks:
            if label_file.is_file():
                by_path = {r.path: r for r in parse_retinaface_labels(label_file)}
                records = [merge_landmarks(r, by_path[r.path]) if r.path in by_path else r for r in records]
            else:
                logger.warning("WIDER FACE train: %s not found, no face has landmarks", label_file)
        if split == "val":
            self.difficulty = self._val_difficulty(
                records, Path(gt_dir) if gt_dir else self.root / "wider_face_split"
            )
        else:
            self.difficulty = [
                np.stack([np.zeros_like(r.ignore), np.zeros_like(r.ignore), ~r.ignore], 1) for r in records
            ]
        self.records = records
        self.stats = wider_stats(records)
        logger.info("WIDER FACE %s (%s): %s", split, self.root, self.stats)

    @staticmethod
    def _val_difficulty(records: list[WiderRecord], gt_dir: Path) -> list[np.ndarray]:
        """(N, 3) keep masks per record from the official .mat files, checking boxes agree."""
        from facelit.metrics.widerface import load_wider_val_gt

        gt = load_wider_val_gt(gt_dir)
        index = {key: i for i, key in enumerate(gt.keys())}
        masks = []
        for r in records:
            i = index.get((r.event, r.file))
            if i is None:
                raise ValueError(
                    f"{gt_dir}: image {r.path} of the split file is not in the .mat ground truth"
                )
            mat_xyxy = gt.boxes[i][r.source_index].astype(np.float32)
            mat_xyxy[:, 2:] += mat_xyxy[:, :2]
            if not np.array_equal(mat_xyxy, r.boxes):
                raise ValueError(
                    f"{gt_dir}: boxes of {r.path} differ between the split file and the .mat files"
                )
            masks.append(gt.keep[i][r.source_index])
        return masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        image_path = self.image_dir / r.path
        if not image_path.is_file():
            raise FileNotFoundError(f"WIDER FACE image not found: {image_path}")
        image = load_rgb(image_path)
        sample: dict[str, Any] = {
            "image": image,
            "boxes": torch.from_numpy(r.boxes.copy()),
            "ignore": torch.from_numpy(r.ignore.copy()),
            "difficulty": torch.from_numpy(self.difficulty[index].copy()),
            "meta": {"event": r.event, "file": r.file, "path": r.path, "orig_size": tuple(image.shape[1:])},
        }
        if self.landmarks:
            sample["landmarks"] = torch.from_numpy(r.landmarks.copy())
            sample["landmarks_valid"] = torch.from_numpy(r.landmarks_valid.copy())
            sample["landmarks_visible"] = torch.from_numpy(r.landmarks_visible.copy())
        return self.transform(sample) if self.transform is not None else sample
