"""300W-LP and AFLW2000-3D readers (the 3DDFA releases): 68 landmarks and head pose.

Layouts, exactly as distributed::

    300W_LP/                                   <- ``root`` of W300LPDataset
        AFW/AFW_134212_1_0.jpg                 450x450 image
        AFW/AFW_134212_1_0.mat                 pt2d (2, 68), Pose_Para (1, 7), roi, Shape_Para, Exp_Para
        AFW_Flip/AFW_134212_1_0.jpg, .mat      mirrored copies (same names)
        HELEN/, HELEN_Flip/, IBUG/, IBUG_Flip/, LFPW/, LFPW_Flip/
        landmarks/AFW/AFW_134212_1_0_pts.mat   pts_2d (68, 2), pts_3d (68, 2)  (no *_Flip folders)

    AFLW2000/                                  <- ``root`` of AFLW2000Dataset
        image00002.jpg, image00002.mat         pt3d_68 (3, 68), pt2d (2, 21), Pose_Para (1, 7), ...

Landmark sources (documented choices):

* 300W-LP, unflipped subsets: ``pts_2d`` of ``landmarks/<subset>/<name>_pts.mat`` when that file
  exists (the 68 2D landmarks the release provides per image), else ``pt2d`` of the image's ``.mat``.
* 300W-LP, ``*_Flip`` subsets (no landmark files in the release): with ``flip_landmarks="mirror"``
  (default) the unflipped image's landmarks (same source as above) mirrored with ``x' = W - x`` and
  re-indexed with the iBUG-68 flip permutation, so point i keeps its meaning (falls back to the
  Flip ``pt2d`` when the unflipped annotation is absent); with
  ``flip_landmarks="pt2d"`` the ``pt2d`` of the Flip image's own ``.mat`` as stored.
* AFLW2000-3D: x, y rows of ``pt3d_68`` (the common evaluation protocol; ``pt2d`` there has 21 points).

Splits (no checkpoint is ever chosen on the test set):

* 300W-LP has no validation split in the release. ``split="train"`` / ``"val"`` hold out a share of
  the **source faces** (:mod:`facelit.datasets.holdout`): the source face of ``AFW_134212_1_7`` is
  ``AFW_134212_1`` (the name without its trailing view index), and every synthesised view of it,
  in ``AFW/`` and in ``AFW_Flip/``, falls on the same side. The validation side reads the unflipped
  folders only (the ``_Flip`` images are mirrored copies of the same views).
* AFLW2000-3D is the test set, scored once. The landmark protocol of 3DDFA, PRNet and 3DDFA-V2
  scores **all 2,000 images** (yaw bins [0, 30], (30, 60], (60, 90]: 1,312 / 383 / 305); the
  ``|yaw|, |pitch|, |roll| <= 99`` filter (1,969 images) belongs to the head-pose benchmarks and is
  the explicit option ``max_abs_angle=99``.

Pose: ``Pose_Para[:3]`` (pitch, yaw, roll in radians) through
:func:`facelit.geometry.pose.ypr_from_300wlp_pose_para`.

Convention
----------
The ``.mat`` points come from MATLAB (3DDFA) and are 1-based with integers at pixel centres; they
are converted to the pixel-area frame with ``x - 0.5`` (:data:`facelit.datasets.crops.MATLAB_TO_AREA`).
Samples follow :func:`facelit.datasets.crops.make_crop_sample`: a square crop around the landmarks
(``margin`` of the face size on each side), resized to ``size``; all 68 points are visible (the
3DDFA fits place self-occluded points on the face contour, and the protocols score all of them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import MATLAB_TO_AREA, crop_box_from_points, load_rgb, make_crop_sample
from facelit.datasets.holdout import holdout_split
from facelit.geometry.pose import ypr_from_300wlp_pose_para
from facelit.geometry.schemes import IBUG68

__all__ = [
    "W300LP_SUBSETS", "W300LP_SPLITS", "HEAD_POSE_MAX_ABS_ANGLE", "read_mat_array", "source_face",
    "W300LPDataset", "AFLW2000Dataset",
]

log = logging.getLogger(__name__)

W300LP_SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW")
W300LP_SPLITS = ("train", "val")
FLIP_SUFFIX = "_Flip"
NUM_POINTS = IBUG68.num_points
HEAD_POSE_MAX_ABS_ANGLE = 99.0  # the head-pose benchmarks' AFLW2000 filter (1,969 of 2,000 images)


def source_face(stem: str) -> str:
    """The 300W face a 300W-LP image was synthesised from: its name without the view index
    (``HELEN_100032540_1_3`` -> ``HELEN_100032540_1``, ``LFPW_image_test_0001_0`` -> ``LFPW_image_test_0001``)."""
    head, sep, view = stem.rpartition("_")
    if not sep or not head or not view.isdigit():
        raise ValueError(f"300W-LP image name {stem!r} does not end with _<view index>")
    return head


def read_mat_array(path: Path, key: str, shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Read one numeric array from a ``.mat`` file and check its shape.

    Args:
        path: the ``.mat`` file.
        key: variable name.
        shapes: accepted shapes; ``-1`` in a shape matches any size.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file, the key and the offending shape or value.
    """
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = scipy.io.loadmat(str(path), variable_names=[key])
    except Exception as err:  # scipy raises several types for corrupt files
        raise ValueError(f"cannot read {path}: {err}") from err
    if key not in data:
        raise ValueError(f"{path}: missing variable {key!r}")
    arr = np.asarray(data[key])
    ok = any(
        len(s) == arr.ndim and all(e in (-1, a) for e, a in zip(s, arr.shape, strict=True)) for s in shapes
    )
    if not ok or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"{path}: {key!r} has shape {arr.shape} dtype {arr.dtype}, expected one of {list(shapes)}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)].ravel()[0]
        raise ValueError(f"{path}: {key!r} contains a non-finite value ({bad})")
    return arr


def _points_2xk(path: Path, key: str, rows: int = 2) -> torch.Tensor:
    """(68, 2) area-frame points from a (rows, 68) MATLAB array (x, y in the first two rows)."""
    arr = read_mat_array(path, key, [(rows, NUM_POINTS)])
    return torch.from_numpy(arr[:2].T.copy()).float() + MATLAB_TO_AREA


def _pose(path: Path) -> torch.Tensor:
    """(3,) yaw, pitch, roll in degrees from ``Pose_Para``."""
    para = read_mat_array(path, "Pose_Para", [(1, -1), (-1, 1), (-1,)]).ravel()
    if para.size < 3:
        raise ValueError(f"{path}: 'Pose_Para' has {para.size} values, expected >= 3")
    return ypr_from_300wlp_pose_para(torch.from_numpy(para)).float()


class _MatFaceDataset(Dataset):
    """Common crop/sample logic of the 3DDFA-format readers."""

    def __init__(self, size: int, margin: float) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.size = size
        self.margin = margin

    def _sample(
        self, image_path: Path, points: torch.Tensor, pose: torch.Tensor, meta: dict[str, Any], image=None
    ) -> dict[str, Any]:
        image = load_rgb(image_path) if image is None else image
        visible = torch.ones(NUM_POINTS, dtype=torch.bool)
        box = crop_box_from_points(points, visible, self.margin)
        meta = {"file": str(image_path), **meta}
        return make_crop_sample(image, points, visible, box, self.size, pose=pose, meta=meta)


class W300LPDataset(_MatFaceDataset):
    """300W-LP face crops with 68 landmarks and head pose (see the module docstring).

    Args:
        root: the ``300W_LP`` folder (holding ``AFW/``, ``AFW_Flip/``, ..., ``landmarks/``).
        subsets: subsets among :data:`W300LP_SUBSETS`.
        flip_subsets: also read the ``*_Flip`` folders.
        size: crop side in pixels.
        margin: crop margin, fraction of the landmark box side added on each side.
        flip_landmarks: ``"mirror"`` or ``"pt2d"``: landmark source of the Flip images.
        split: ``"train"`` (every image but those of the held-out source faces) or ``"val"`` (the
            held-out source faces, unflipped folders only); see the module docstring.
        val_fraction: share of the source faces held out (0: none, ``"train"`` is the whole release).
    """

    def __init__(
        self,
        root: str | Path,
        subsets: Sequence[str] = W300LP_SUBSETS,
        flip_subsets: bool = True,
        size: int = 256,
        margin: float = 0.25,
        flip_landmarks: str = "mirror",
        split: str = "train",
        val_fraction: float = 0.0,
    ) -> None:
        super().__init__(size, margin)
        self.root = Path(root)
        if flip_landmarks not in ("mirror", "pt2d"):
            raise ValueError(f"flip_landmarks must be 'mirror' or 'pt2d', got {flip_landmarks!r}")
        if split not in W300LP_SPLITS:
            raise ValueError(f"unknown 300W-LP split {split!r}; known: {W300LP_SPLITS}")
        self.split = split
        self.flip_landmarks = flip_landmarks
        unknown = [s for s in subsets if s not in W300LP_SUBSETS]
        if unknown:
            raise ValueError(f"unknown 300W-LP subsets {unknown}; known: {W300LP_SUBSETS}")
        self.items: list[tuple[str, str, bool]] = []  # (subset, stem, flipped)
        for subset in subsets:
            for flipped in (False, True) if flip_subsets else (False,):
                folder = self.root / (subset + FLIP_SUFFIX if flipped else subset)
                if not folder.is_dir():
                    hint = (
                        " (root should be the 300W_LP folder itself)"
                        if (self.root / "300W_LP").is_dir()
                        else ""
                    )
                    raise FileNotFoundError(f"300W-LP folder not found: {folder}{hint}")
                stems = sorted(p.stem for p in folder.glob("*.jpg"))
                missing = [s for s in stems if not (folder / f"{s}.mat").is_file()]
                if missing:
                    example = folder / f"{missing[0]}.mat"
                    raise FileNotFoundError(
                        f"{len(missing)} images in {folder} have no .mat annotation, e.g. {example}"
                    )
                self.items += [(subset, s, flipped) for s in stems]
        if val_fraction == 0 and split == "val":
            raise ValueError("the 300W-LP 'val' split needs val_fraction > 0 (the release has no validation split)")
        if val_fraction != 0:
            train, val = holdout_split([source_face(stem) for _, stem, _ in self.items], val_fraction)
            keep = train if split == "train" else [i for i in val if not self.items[i][2]]
            self.items = [self.items[i] for i in keep]
        log.info("300W-LP %s: %d images from %s", split, len(self.items), self.root)

    def __len__(self) -> int:
        return len(self.items)

    def _landmark_file(self, subset: str, stem: str) -> Path:
        return self.root / "landmarks" / subset / f"{stem}_pts.mat"

    def _has_unflipped(self, subset: str, stem: str) -> bool:
        return self._landmark_file(subset, stem).is_file() or (self.root / subset / f"{stem}.mat").is_file()

    def _unflipped_points(self, subset: str, stem: str) -> tuple[torch.Tensor, str]:
        pts_file = self._landmark_file(subset, stem)
        if pts_file.is_file():
            arr = read_mat_array(pts_file, "pts_2d", [(NUM_POINTS, 2)])
            return torch.from_numpy(arr.copy()).float() + MATLAB_TO_AREA, f"{pts_file}:pts_2d"
        mat = self.root / subset / f"{stem}.mat"
        return _points_2xk(mat, "pt2d"), f"{mat}:pt2d"

    def __getitem__(self, index: int) -> dict[str, Any]:
        subset, stem, flipped = self.items[index]
        folder = self.root / (subset + FLIP_SUFFIX if flipped else subset)
        mat = folder / f"{stem}.mat"
        image_path = folder / f"{stem}.jpg"
        image = load_rgb(image_path)
        if not flipped:
            points, source = self._unflipped_points(subset, stem)
        elif self.flip_landmarks == "pt2d" or not self._has_unflipped(subset, stem):
            points, source = _points_2xk(mat, "pt2d"), f"{mat}:pt2d"
        else:
            points, source = self._unflipped_points(subset, stem)
            width = image.shape[-1]
            points = torch.stack([width - points[:, 0], points[:, 1]], dim=-1)[IBUG68.flip_tensor()]
            source = f"mirror of {source}"
        meta = {"subset": subset + (FLIP_SUFFIX if flipped else ""), "name": stem, "landmark_source": source}
        return self._sample(image_path, points, _pose(mat), meta, image=image)


class AFLW2000Dataset(_MatFaceDataset):
    """AFLW2000-3D face crops with 68 landmarks (``pt3d_68``) and head pose.

    The landmark protocol scores all 2,000 images (``max_abs_angle=None``, the default) with the
    ``"landmark_box"`` NME normaliser and yaw bins (:class:`facelit.metrics.landmarks.LandmarkMetrics`).
    The head-pose benchmarks drop the images whose yaw, pitch or roll exceeds
    :data:`HEAD_POSE_MAX_ABS_ANGLE` (99) degrees in absolute value (1,969 remain): pass
    ``max_abs_angle`` for that; the count is logged and kept in ``num_filtered``.

    Args:
        root: folder holding ``image*.jpg`` and the same-name ``.mat`` files.
        size: crop side in pixels.
        margin: crop margin, fraction of the landmark box side added on each side.
        max_abs_angle: pose filter in degrees (``None``: all images, the landmark protocol).
    """

    def __init__(
        self, root: str | Path, size: int = 256, margin: float = 0.25, max_abs_angle: float | None = None
    ) -> None:
        super().__init__(size, margin)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"AFLW2000-3D folder not found: {self.root}")
        mats = sorted(self.root.glob("*.mat"))
        if not mats:
            raise FileNotFoundError(f"no .mat annotation in {self.root}")
        self.items: list[tuple[str, torch.Tensor]] = []
        self.num_filtered = 0
        for mat in mats:
            pose = _pose(mat)
            if max_abs_angle is not None and bool((pose.abs() > max_abs_angle).any()):
                self.num_filtered += 1
                continue
            self.items.append((mat.stem, pose))
        log.info(
            "AFLW2000-3D: %d images kept, %d dropped by |angle| > %s deg (%s)",
            len(self.items),
            self.num_filtered,
            max_abs_angle,
            self.root,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem, pose = self.items[index]
        mat = self.root / f"{stem}.mat"
        points = _points_2xk(mat, "pt3d_68", rows=3)
        return self._sample(self.root / f"{stem}.jpg", points, pose, {"name": stem})
