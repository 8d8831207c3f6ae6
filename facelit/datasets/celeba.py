"""CelebA (Liu et al., ICCV 2015) in-the-wild images with one face box and five landmarks each,
read from the official layout, as a landmark-face source for MTCNN training::

    <root>/Img/img_celeba/000001.jpg ...
    <root>/Anno/list_bbox_celeba.txt        count line, header line, then ``000001.jpg x_1 y_1 width height``
    <root>/Anno/list_landmarks_celeba.txt   count line, header line, then ``000001.jpg`` + 10 integers:
                                            lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y
                                            leftmouth_x leftmouth_y rightmouth_x rightmouth_y
    <root>/Eval/list_eval_partition.txt     ``000001.jpg 0`` (0 train, 1 val, 2 test)

The points are in facelit's five-point order (``FIVE_POINT``: the image-left eye first). CelebA
gives integer pixel indices; a point at index i is the pixel's centre, i + 0.5 in the pixel-area
frame of DESIGN.md. Boxes ``x y w h`` become ``x, y, x + w, y + h``.

Item: ``image`` (3, H, W) float [0, 1]; ``boxes`` (1, 4); ``landmarks`` (1, 5, 2);
``landmarks_valid`` (1,) True; ``meta`` {"file", "path"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import load_rgb

__all__ = ["CELEBA_SPLITS", "read_celeba_table", "CelebALandmarks"]

CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}
_PIXEL_CENTRE = 0.5


def read_celeba_table(path: str | Path, columns: int, header_lines: int = 2) -> dict[str, list[int]]:
    """``name v1 .. v_columns`` rows of a CelebA annotation file (after ``header_lines`` lines).

    Raises:
        FileNotFoundError: naming the file; ValueError: naming the file, line and value of a bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CelebA annotation file not found: {path}")
    table: dict[str, list[int]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if number <= header_lines or not line.strip():
            continue
        parts = line.split()
        if len(parts) != columns + 1:
            raise ValueError(f"{path}:{number}: expected a name and {columns} integers, got {line!r}")
        try:
            table[parts[0]] = [int(v) for v in parts[1:]]
        except ValueError as err:
            raise ValueError(f"{path}:{number}: not an integer in {line!r}") from err
    return table


class CelebALandmarks(Dataset):
    """The face box and five landmarks of each CelebA image of ``split`` (official partition).

    Args:
        root: CelebA root in the layout above.
        split: ``train`` | ``val`` | ``test``.
        limit: use only the first ``limit`` images of the split (None: all).
    """

    def __init__(self, root: str | Path, split: str = "train", limit: int | None = None) -> None:
        if split not in CELEBA_SPLITS:
            raise ValueError(f"split must be one of {sorted(CELEBA_SPLITS)}, got {split!r}")
        self.root = Path(root)
        boxes = read_celeba_table(self.root / "Anno" / "list_bbox_celeba.txt", 4)
        points = read_celeba_table(self.root / "Anno" / "list_landmarks_celeba.txt", 10)
        partition = read_celeba_table(self.root / "Eval" / "list_eval_partition.txt", 1, header_lines=0)
        names = sorted(n for n, (p,) in partition.items() if p == CELEBA_SPLITS[split])
        missing = [n for n in names if n not in boxes or n not in points]
        if missing:
            raise ValueError(
                f"{len(missing)} {split} image(s) of list_eval_partition.txt lack a box or landmarks, "
                f"e.g. {missing[0]}"
            )
        self.names = names[:limit] if limit is not None else names
        self.boxes, self.points = boxes, points

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        path = self.root / "Img" / "img_celeba" / name
        x, y, w, h = self.boxes[name]
        pts = torch.tensor(self.points[name], dtype=torch.float32).view(5, 2) + _PIXEL_CENTRE
        return {
            "image": load_rgb(path),
            "boxes": torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32),
            "landmarks": pts[None],
            "landmarks_valid": torch.ones(1, dtype=torch.bool),
            "meta": {"file": Path(name).stem, "path": str(path)},
        }
