"""Face recognition data: identity folders (CASIA-WebFace), 5-point landmark files, LFW pairs.

Layouts
-------
- Training set (CASIA-WebFace as distributed): ``root/<identity>/<image>.jpg``, one folder per
  identity (10,575 folders); labels are the sorted folder names' positions.
- Landmark file (one line per image, whitespace separated): ``<relative path> [label] x1 y1 ... x5 y5``
  with the points in the order left eye, right eye, nose, left mouth corner, right mouth corner
  (the SphereFace ``casia_landmark.txt`` layout has the label; LFW lists may omit it). ``frame``
  says which pixel frame the file uses: ``matlab`` (1-based centres, the official MTCNN MATLAB
  output), ``zero_based`` (0-based centres, Python MTCNN ports) or ``area`` (ours).
- Verification pairs in the LFW ``pairs.txt`` format: a header ``<folds><TAB><n>``, then per fold n
  matched lines ``name<TAB>i<TAB>j`` and n mismatched lines ``name1<TAB>i<TAB>name2<TAB>j``; the
  fold of pair line l (1-based, header excluded) is ceil(l / 2n). Images are
  ``<name>/<name>_<iiii>.jpg`` below the set's root.

Images are aligned to the recognition template when read (:func:`facelit.geometry.align.align_faces`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import MATLAB_TO_AREA, ZERO_BASED_TO_AREA, load_rgb
from facelit.datasets.images import IMAGE_SUFFIXES
from facelit.geometry.align import TemplateName, align_faces
from facelit.parsing import check_number_tokens

__all__ = [
    "Pair",
    "read_pairs",
    "LandmarkFrame",
    "read_landmark_file",
    "scan_identity_folders",
    "AlignedFaceDataset",
    "PairDataset",
]

log = logging.getLogger(__name__)

LandmarkFrame = Literal["matlab", "zero_based", "area"]
_FRAME_SHIFT = {"matlab": MATLAB_TO_AREA, "zero_based": ZERO_BASED_TO_AREA, "area": 0.0}
_POINTS = 5


@dataclass(frozen=True)
class Pair:
    """One verification pair of a ``pairs.txt`` file (image numbers are 1-based, as in LFW)."""

    name1: str
    index1: int
    name2: str
    index2: int
    fold: int
    line: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    def paths(self, ext: str = ".jpg") -> tuple[str, str]:
        """Relative image paths of both sides, ``<name>/<name>_<iiii><ext>``."""
        return (
            f"{self.name1}/{self.name1}_{self.index1:04d}{ext}",
            f"{self.name2}/{self.name2}_{self.index2:04d}{ext}",
        )


def _int(token: str, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{where}: not an integer: {token!r}") from None


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW-format ``pairs.txt`` (view 2: 10 folds of 300 matched + 300 mismatched pairs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    header = lines[0].split()
    if len(header) != 2:
        raise ValueError(f"{path}:1: expected '<folds> <pairs per fold>', got {lines[0]!r}")
    folds, per_fold = _int(header[0], f"{path}:1"), _int(header[1], f"{path}:1")
    body = [(n, line.split()) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(body) != 2 * folds * per_fold:
        raise ValueError(
            f"{path}: header announces {folds} folds x 2 x {per_fold} pairs, found {len(body)} lines"
        )
    pairs = []
    for k, (n, tok) in enumerate(body, start=1):
        where = f"{path}:{n}"
        fold = -(-k // (2 * per_fold))
        matched = (k - 1) % (2 * per_fold) < per_fold
        if len(tok) == 3:
            pair = Pair(tok[0], _int(tok[1], where), tok[0], _int(tok[2], where), fold, n)
        elif len(tok) == 4:
            pair = Pair(tok[0], _int(tok[1], where), tok[2], _int(tok[3], where), fold, n)
        else:
            raise ValueError(f"{where}: expected 3 (matched) or 4 (mismatched) fields, got {len(tok)}")
        if pair.same != matched:
            kind = "matched" if matched else "mismatched"
            raise ValueError(
                f"{where}: expected a {kind} pair at this position of fold {fold}, got {' '.join(tok)!r}"
            )
        pairs.append(pair)
    return pairs


def read_landmark_file(
    path: str | Path, frame: LandmarkFrame = "matlab"
) -> dict[str, tuple[int | None, torch.Tensor]]:
    """``{relative path: (label or None, (5, 2) landmarks in our frame)}`` from a landmark file."""
    path = Path(path)
    if frame not in _FRAME_SHIFT:
        raise ValueError(f"unknown landmark frame {frame!r}; use one of {list(_FRAME_SHIFT)}")
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path}")
    out: dict[str, tuple[int | None, torch.Tensor]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        where = f"{path}:{n}"
        if len(tok) not in (1 + 2 * _POINTS, 2 + 2 * _POINTS):
            raise ValueError(f"{where}: expected '<path> [label] x1 y1 ... x5 y5', got {len(tok)} fields")
        label = _int(tok[1], where) if len(tok) == 2 + 2 * _POINTS else None
        check_number_tokens(tok[-2 * _POINTS :], where)
        if tok[0] in out:
            raise ValueError(f"{where}: duplicate entry for {tok[0]!r}")
        pts = torch.tensor([float(t) for t in tok[-2 * _POINTS :]]).view(_POINTS, 2) + _FRAME_SHIFT[frame]
        out[tok[0]] = (label, pts)
    return out


def scan_identity_folders(root: str | Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Images below ``root/<identity>/`` as (relative path, label), and the sorted identity names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identity folder root not found: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise FileNotFoundError(f"no identity folder below {root}")
    items = [
        (f"{name}/{f.name}", label)
        for label, name in enumerate(names)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    return items, names


class AlignedFaceDataset(Dataset):
    """Images aligned to the template by their 5 landmarks.

    Items: ``image`` (3, h, w) float, ``identity`` () int64, ``landmarks`` (5, 2) in the crop,
    ``index`` () int64 (position in this dataset).

    Args:
        root: image root; items: (relative path, label); landmarks: ``read_landmark_file`` output.
        size: (height, width) of the aligned crop; template: template name.
        source: what to name in errors (e.g. the landmark file).

    Images without landmarks are counted, reported once in the log and left out (``missing``).
    """

    def __init__(
        self,
        root: str | Path,
        items: Sequence[tuple[str, int]],
        landmarks: dict[str, tuple[int | None, torch.Tensor]],
        size: tuple[int, int] = (112, 96),
        template: TemplateName = "112x96",
        source: str = "landmarks",
    ) -> None:
        self.root, self.size, self.template = Path(root), (int(size[0]), int(size[1])), template
        self.items = [(p, y) for p, y in items if p in landmarks]
        self.missing = [p for p, _ in items if p not in landmarks]
        self.landmarks = {p: landmarks[p][1] for p, _ in self.items}
        if self.missing:
            log.warning(
                "%d of %d images below %s have no landmarks in %s and are left out, e.g. %s",
                len(self.missing),
                len(items),
                self.root,
                source,
                self.missing[0],
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel, label = self.items[index]
        image = load_rgb(self.root / rel)
        aligned, _, points = align_faces(image[None], self.landmarks[rel][None], self.size, self.template)
        return {
            "image": aligned[0].clamp(0, 1),
            "identity": torch.tensor(label),
            "landmarks": points[0],
            "index": torch.tensor(index),
        }


class PairDataset(Dataset):
    """Verification pairs over an image dataset (each image read once per pair that uses it).

    Items: ``image`` (3, h, w) left image, ``image_right`` (3, h, w), ``same`` () bool, ``fold`` ()
    int64, ``index`` () int64 (pair number, for de-duplication under DDP).

    Args:
        images: a dataset whose items hold ``image``; left, right: (P,) positions in it;
        same: (P,) bool; fold: (P,) int.
    """

    def __init__(
        self, images: Dataset, left: torch.Tensor, right: torch.Tensor, same: torch.Tensor, fold: torch.Tensor
    ) -> None:
        p = left.shape[0]
        if not (right.shape == same.shape == fold.shape == (p,)):
            raise ValueError("left, right, same and fold must all be (P,)")
        self.images, self.left, self.right, self.same, self.fold = (
            images,
            left,
            right,
            same.bool(),
            fold.long(),
        )

    def __len__(self) -> int:
        return int(self.left.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[int(self.left[index])]["image"],
            "image_right": self.images[int(self.right[index])]["image"],
            "same": self.same[index],
            "fold": self.fold[index],
            "index": torch.tensor(index),
        }

    @classmethod
    def from_pairs(
        cls,
        root: str | Path,
        pairs: Sequence[Pair],
        landmarks: dict[str, tuple[int | None, torch.Tensor]],
        size: tuple[int, int] = (112, 96),
        template: TemplateName = "112x96",
        ext: str = ".jpg",
        source: str = "landmarks",
    ) -> PairDataset:
        """Pairs of an LFW-format list over the images below ``root``; every image needs landmarks."""
        paths = sorted({p for pair in pairs for p in pair.paths(ext)})
        missing = [p for p in paths if p not in landmarks]
        if missing:
            raise ValueError(
                f"{source}: {len(missing)} of {len(paths)} pair images have no landmarks, "
                f"e.g. {missing[0]!r}; the protocol scores every pair"
            )
        position = {p: i for i, p in enumerate(paths)}
        images = AlignedFaceDataset(root, [(p, -1) for p in paths], landmarks, size, template, source)
        left = torch.tensor([position[pr.paths(ext)[0]] for pr in pairs])
        right = torch.tensor([position[pr.paths(ext)[1]] for pr in pairs])
        return cls(
            images,
            left,
            right,
            torch.tensor([pr.same for pr in pairs]),
            torch.tensor([pr.fold for pr in pairs]),
        )
