"""300W reader over the CSV annotation layout of the HRNet facial-landmark code.

CSV layout (one header line, then one face per line)::

    image_name, scale, center_w, center_h, original_0_x, original_0_y, ..., original_67_y

``image_name`` is relative to the image root (e.g. ``ibug/image_003_1.jpg``, ``Test/01_Indoor/...``),
``scale = max(w, h) / 200`` and ``center`` the centre of the landmark box (the iBUG ``.pts`` points,
rounded). The HRNet splits: ``300w_test`` (600), ``valid`` (689 = ``valid_common`` 554 +
``valid_challenge`` 135). NME: normaliser ``"inter_ocular"`` (points 36 and 45).

HRNet's ``valid`` files are the 300W *test* sets of the literature (common, challenging, full), so
they are not a validation split: with ``val_fraction > 0``, :class:`W300Dataset` holds out that
share of the training photos instead (``split="val"``, by image name, :mod:`facelit.datasets.holdout`).

Convention
----------
The points are the iBUG ``.pts`` values: 1-based with integers at pixel centres (MATLAB), converted
to the pixel-area frame with ``x - 0.5`` (:data:`facelit.datasets.crops.MATLAB_TO_AREA`); the centre,
computed from the same points, shifts with them. The crop is HRNet's: a square of side
``200 * scale * scale_factor`` (``scale_factor`` = 1.25) centred on ``center``; ``box`` is the square
of side ``200 * scale`` around the same centre, in crop pixels.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import MATLAB_TO_AREA, load_rgb, make_crop_sample
from facelit.datasets.holdout import holdout_split
from facelit.geometry.schemes import IBUG68

__all__ = ["W300Record", "read_300w_csv", "W300Dataset", "HRNET_BOX_UNIT", "W300_SPLITS"]

log = logging.getLogger(__name__)

HRNET_BOX_UNIT = 200.0  # HRNet's scale unit: box side = 200 * scale
_HEADER = ("image_name", "scale", "center_w", "center_h")
W300_SPLITS = ("all", "train", "val")
_NUM_FIELDS = len(_HEADER) + 2 * IBUG68.num_points


@dataclass(frozen=True)
class W300Record:
    """One face of a 300W CSV, in the pixel-area frame.

    Attributes:
        image_name: path relative to the image root.
        scale: box side / 200.
        center: (2,) box centre (x, y).
        landmarks: (68, 2) iBUG-68 points.
        line: line number in the CSV (1-based, header = 1).
    """

    image_name: str
    scale: float
    center: torch.Tensor
    landmarks: torch.Tensor
    line: int


def _parse_float(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: column {column!r} has non-numeric value {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{path}:{line}: column {column!r} has non-finite value {text!r}")
    return value


def read_300w_csv(path: str | Path) -> list[W300Record]:
    """Parse a 300W CSV of the HRNet layout (see the module docstring).

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file, the line and the value for a malformed header or row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"300W annotation file not found: {path}")
    records: list[W300Record] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        if tuple(h.strip() for h in header[: len(_HEADER)]) != _HEADER or len(header) != _NUM_FIELDS:
            raise ValueError(
                f"{path}:1: header must start with {list(_HEADER)} and have {_NUM_FIELDS} columns, "
                f"got {len(header)} columns starting {header[:4]}"
            )
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != _NUM_FIELDS:
                raise ValueError(f"{path}:{line}: expected {_NUM_FIELDS} fields, got {len(row)}")
            values = [_parse_float(path, line, header[i], row[i]) for i in range(1, _NUM_FIELDS)]
            if values[0] <= 0:
                raise ValueError(f"{path}:{line}: column 'scale' must be > 0, got {row[1]!r}")
            points = torch.tensor(values[3:], dtype=torch.float32).view(IBUG68.num_points, 2)
            records.append(
                W300Record(
                    image_name=row[0].strip(),
                    scale=values[0],
                    center=torch.tensor(values[1:3], dtype=torch.float32) + MATLAB_TO_AREA,
                    landmarks=points + MATLAB_TO_AREA,
                    line=line,
                )
            )
    return records


def _square(center: torch.Tensor, side: float) -> torch.Tensor:
    half = side / 2
    return torch.cat([center - half, center + half])


class W300Dataset(Dataset):
    """300W face crops (iBUG-68, all points visible, no pose) from a CSV of the HRNet layout.

    Args:
        root: image root; images are read from ``root / image_name``.
        csv_path: the annotation CSV.
        size: crop side in pixels.
        scale_factor: crop side = ``200 * scale * scale_factor`` (HRNet: 1.25).
        split: ``"all"`` rows of the CSV, or ``"train"`` / ``"val"``: the rows outside / inside the
            hold-out of ``val_fraction`` of the photos (for the training CSV).
        val_fraction: share of the photos held out by ``"train"`` / ``"val"``.
    """

    def __init__(
        self,
        root: str | Path,
        csv_path: str | Path,
        size: int = 256,
        scale_factor: float = 1.25,
        split: str = "all",
        val_fraction: float = 0.05,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if scale_factor <= 0:
            raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
        self.root = Path(root)
        self.csv_path = Path(csv_path)
        self.size = size
        self.scale_factor = scale_factor
        if split not in W300_SPLITS:
            raise ValueError(f"unknown 300W split {split!r}; known: {W300_SPLITS}")
        self.records = read_300w_csv(self.csv_path)
        if split != "all":
            train, val = holdout_split([r.image_name for r in self.records], val_fraction)
            self.records = [self.records[i] for i in (train if split == "train" else val)]
        log.info("300W %s: %d faces from %s", split, len(self.records), self.csv_path)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        side = HRNET_BOX_UNIT * rec.scale
        path = self.root / rec.image_name
        meta = {"file": str(path), "image_name": rec.image_name, "csv_line": rec.line}
        return make_crop_sample(
            load_rgb(path),
            rec.landmarks,
            torch.ones(IBUG68.num_points, dtype=torch.bool),
            _square(rec.center, side * self.scale_factor),
            self.size,
            face_box=_square(rec.center, side),
            meta=meta,
        )
