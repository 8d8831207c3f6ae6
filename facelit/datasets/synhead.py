"""SynHead (Gu et al., CVPR 2017) synthetic head-pose images listed in a CSV file.

Layout: one CSV whose rows are ``path, x_min, y_min, x_max, y_max, yaw, pitch, roll`` (an optional
first header row starting with ``path`` is skipped); ``path`` is relative to the CSV's folder; the
box is xyxy in pixels; angles are degrees in the project convention (:mod:`facelit.geometry.pose`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import load_rgb
from facelit.datasets.pose_crops import pose_crop_sample

__all__ = ["read_synhead_csv", "SynHeadDataset"]


_FIELDS = ("path", "x_min", "y_min", "x_max", "y_max", "yaw", "pitch", "roll")


def read_synhead_csv(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Rows of a SynHead CSV.

    Returns:
        image paths (relative to the CSV folder), (N, 4) float32 xyxy boxes, (N, 3) float32 ypr.

    Raises:
        ValueError: naming the file and line for a wrong field count, a non-number, a NaN angle or
            an empty box.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SynHead CSV not found: {path}")
    names, values = [], []
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or (line_no == 1 and row[0].strip().lower() == "path"):
                continue
            if len(row) != len(_FIELDS):
                raise ValueError(
                    f"{path}:{line_no}: expected {len(_FIELDS)} fields {_FIELDS}, got {len(row)}"
                )
            try:
                nums = [float(v) for v in row[1:]]
            except ValueError:
                raise ValueError(f"{path}:{line_no}: non-numeric value in {row[1:]}") from None
            if any(v != v or v in (float("inf"), float("-inf")) for v in nums):
                raise ValueError(f"{path}:{line_no}: non-finite value in {row[1:]}")
            if nums[2] <= nums[0] or nums[3] <= nums[1]:
                raise ValueError(f"{path}:{line_no}: empty box {nums[:4]}")
            names.append(row[0].strip())
            values.append(nums)
    if not names:
        raise ValueError(f"{path}: no rows")
    table = torch.tensor(values, dtype=torch.float32)
    return names, table[:, :4], table[:, 4:]


class SynHeadDataset(Dataset):
    """Face crops of SynHead images (face-crop samples, no landmarks); ``poses`` (N, 3) without I/O.

    Args:
        csv_file: the label CSV.
        size: crop side.
        margin: fraction of the longer box side added on each side of the (squared) box.
        indices: optional subset of rows (e.g. a train/validation split).
    """

    def __init__(
        self, csv_file: str | Path, size: int = 224, margin: float = 0.0, indices: list[int] | None = None
    ) -> None:
        self.csv_file = Path(csv_file)
        names, boxes, poses = read_synhead_csv(self.csv_file)
        rows = list(range(len(names))) if indices is None else list(indices)
        self.names = [names[i] for i in rows]
        self.boxes, self.poses = boxes[rows], poses[rows]
        self.size, self.margin = int(size), float(margin)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = load_rgb(self.csv_file.parent / self.names[index])
        face = self.boxes[index]
        return pose_crop_sample(image, face, self.poses[index], self.size, self.margin, self.names[index])
