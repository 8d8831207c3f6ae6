"""BIWI Kinect Head Pose database: pose files, Biwi+ label files, the fixed split, face crops.

Layout (as distributed; ``root`` is the ``hpdb`` folder)::

    root/NN/frame_XXXXX_rgb.png     640x480 RGB frames, NN = 01 ... 24 (one sequence per folder)
    root/NN/frame_XXXXX_pose.txt    3 rows of the head rotation R_file, a blank line, head centre (mm)

Labels come either from the pose files with the benchmark conversion
(``facelit.geometry.pose.ypr_from_biwi_pose_matrix``) or from a Biwi+ label file
(``Biwi_plus.npz``: ``images`` paths like ``01/frame_00003_rgb.png``, ``ypr``/``pyr`` degrees and
square ``bbox`` x, y, w, h), which also gives the face box to crop.

Split: the common "70/30" protocol (FSA-Net) draws an unseeded permutation of the sequences, so
nobody can reproduce it. We fix one and publish it here: :data:`BIWI_TEST_SEQUENCES` (8 sequences,
5,118 of the 15,678 Biwi+ frames = 32.6 %) and :data:`BIWI_TRAIN_SEQUENCES` (the other 16).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import load_rgb
from facelit.datasets.pose_crops import pose_crop_sample
from facelit.geometry.pose import ypr_from_biwi_pose_matrix

__all__ = [
    "BIWI_SEQUENCES",
    "BIWI_TEST_SEQUENCES",
    "BIWI_TRAIN_SEQUENCES",
    "ORTHONORMAL_TOL",
    "read_biwi_pose",
    "load_biwi_plus",
    "scan_biwi",
    "BiwiDataset",
]

log = logging.getLogger(__name__)

BIWI_SEQUENCES = tuple(f"{i:02d}" for i in range(1, 25))
BIWI_TEST_SEQUENCES = ("02", "05", "08", "11", "14", "17", "20", "23")
BIWI_TRAIN_SEQUENCES = tuple(s for s in BIWI_SEQUENCES if s not in BIWI_TEST_SEQUENCES)
ORTHONORMAL_TOL = 1e-3
"""Largest allowed |R R^T - I| entry of a pose-file rotation (the files carry 6 decimals)."""


def read_biwi_pose(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (3, 3) as written in a ``frame_*_pose.txt`` and the head centre (3,) in mm.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: naming the file for a wrong row count, a non-number, NaN or a matrix that is not
            orthonormal within :data:`ORTHONORMAL_TOL`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BIWI pose file not found: {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != 4 or any(len(r) != 3 for r in rows):
        raise ValueError(
            f"{path}: expected 3 rotation rows and 1 centre row of 3 numbers, got {len(rows)} rows "
            f"of lengths {[len(r) for r in rows]}"
        )
    try:
        values = torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)
    except ValueError as err:
        raise ValueError(f"{path}: not a number ({err})") from None
    if not torch.isfinite(values).all():
        raise ValueError(f"{path}: non-finite value in {values.tolist()}")
    rot, centre = values[:3], values[3]
    deviation = float((rot @ rot.T - torch.eye(3, dtype=rot.dtype)).abs().max())
    if deviation > ORTHONORMAL_TOL:
        raise ValueError(f"{path}: rotation is not orthonormal (max |R R^T - I| = {deviation:.3g})")
    return rot, centre


def load_biwi_plus(path: str | Path) -> dict[str, Any]:
    """Read a Biwi+ label file.

    Returns:
        ``images`` list[str] (N,) relative paths, ``ypr`` (N, 3) float64 degrees, ``boxes`` (N, 4)
        float32 xyxy (from the square x, y, w, h boxes).

    Raises:
        ValueError: naming the file for missing arrays, mismatched lengths, NaN angles or empty boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Biwi+ label file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"images", "ypr", "bbox"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {data.files})")
        images = [str(s) for s in data["images"]]
        ypr = torch.from_numpy(np.asarray(data["ypr"], dtype=np.float64))
        bbox = torch.from_numpy(np.asarray(data["bbox"], dtype=np.float32))
    if ypr.shape != (len(images), 3) or bbox.shape != (len(images), 4):
        raise ValueError(f"{path}: {len(images)} images, ypr {tuple(ypr.shape)}, bbox {tuple(bbox.shape)}")
    bad = (~torch.isfinite(ypr)).any(1).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{path}: NaN/inf angle for {images[i]}: {ypr[i].tolist()}")
    empty = (bbox[:, 2:] <= 0).any(1).nonzero()
    if len(empty):
        i = int(empty[0])
        raise ValueError(f"{path}: empty box for {images[i]}: {bbox[i].tolist()}")
    boxes = torch.cat([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], dim=1)
    return {"images": images, "ypr": ypr, "boxes": boxes}


def scan_biwi(root: str | Path, sequences: tuple[str, ...]) -> tuple[list[str], torch.Tensor, int]:
    """Frames of ``sequences`` under ``root`` with their pose-file labels.

    Returns:
        relative image paths ``NN/frame_XXXXX_rgb.png``, (N, 3) ``ypr`` degrees, and the number of
        frames skipped because the image or the pose file is missing.
    """
    root = Path(root)
    names, rots, skipped = [], [], 0
    for seq in sequences:
        folder = root / seq
        if not folder.is_dir():
            raise FileNotFoundError(f"BIWI sequence folder not found: {folder}")
        stems = {p.name[: -len("_rgb.png")] for p in folder.glob("frame_*_rgb.png")}
        stems |= {p.name[: -len("_pose.txt")] for p in folder.glob("frame_*_pose.txt")}
        for stem in sorted(stems):
            image, pose = folder / f"{stem}_rgb.png", folder / f"{stem}_pose.txt"
            if not (image.is_file() and pose.is_file()):
                skipped += 1
                continue
            rots.append(read_biwi_pose(pose)[0])
            names.append(f"{seq}/{stem}_rgb.png")
    ypr = ypr_from_biwi_pose_matrix(torch.stack(rots)) if rots else torch.zeros(0, 3, dtype=torch.float64)
    return names, ypr, skipped


class BiwiDataset(Dataset):
    """Face crops of BIWI frames with (yaw, pitch, roll) labels (face-crop samples, no landmarks).

    Args:
        root: the ``hpdb`` folder (``NN/frame_XXXXX_rgb.png``).
        sequences: sequence folders to use (:data:`BIWI_TRAIN_SEQUENCES`, :data:`BIWI_TEST_SEQUENCES`).
        labels: a Biwi+ label file (labels and square face boxes). ``None`` reads the labels from
            the pose files, which carry no face box: the centred square of the frame is cropped
            then (a quick look, not the benchmark protocol).
        size: crop side in pixels.
        margin: fraction of the box side added on each side of the Biwi+ box (0: the box itself).

    Frames listed in the label file whose image is missing are skipped, counted and logged once.
    ``poses`` is the (N, 3) float32 label tensor (no image read).
    """

    def __init__(
        self,
        root: str | Path,
        sequences: tuple[str, ...] = BIWI_TEST_SEQUENCES,
        labels: str | Path | None = None,
        size: int = 224,
        margin: float = 0.0,
    ) -> None:
        self.root, self.size, self.margin = Path(root), int(size), float(margin)
        unknown = sorted(set(sequences) - set(BIWI_SEQUENCES))
        if unknown:
            raise ValueError(f"unknown BIWI sequences {unknown}; known: {BIWI_SEQUENCES}")
        keep = set(sequences)
        if labels is not None:
            table = load_biwi_plus(labels)
            rows = [i for i, n in enumerate(table["images"]) if n.split("/")[0] in keep]
            present = [i for i in rows if (self.root / table["images"][i]).is_file()]
            self.missing = len(rows) - len(present)
            self.names = [table["images"][i] for i in present]
            self.poses = table["ypr"][present].float()
            self.boxes: torch.Tensor | None = table["boxes"][present]
        else:
            self.names, ypr, self.missing = scan_biwi(self.root, tuple(sequences))
            self.poses, self.boxes = ypr.float(), None
        if self.missing:
            log.warning(
                "BIWI %s: %d labelled frames skipped (image or pose file missing)", self.root, self.missing
            )
        if not self.names:
            raise ValueError(f"no BIWI frames found under {self.root} for sequences {sorted(keep)}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_rgb(self.root / self.names[index])
        if self.boxes is not None:
            face = self.boxes[index]
        else:
            h, w = image.shape[-2:]
            side = min(h, w)
            face = torch.tensor([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])
        return pose_crop_sample(image, face, self.poses[index], self.size, self.margin, self.names[index])
