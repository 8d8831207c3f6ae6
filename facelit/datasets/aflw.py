"""AFLW readers: the original ``aflw.sqlite`` (21 points, pose) and the AFLW-19 benchmark release.

(a) Original AFLW (Koestinger et al. 2011), as distributed::

    aflw/data/                 <- ``root`` of AFLWSqliteDataset
        aflw.sqlite
        flickr/0/image00002.jpg, flickr/2/..., flickr/3/...

    Tables read (schema of the release; other tables are ignored):
        FaceImages(image_id, db_id, file_id, filepath, bw, width, height)   filepath relative to flickr/
        Faces(face_id, file_id, db_id)
        FaceRect(face_id, x, y, w, h, annot_type_id)                        face box, xywh pixels
        FacePose(face_id, roll, pitch, yaw, annot_type_id)                  radians
        FeatureCoords(face_id, feature_id, x, y)                            annotated points only
        FeatureCoordTypes(feature_id, descr, code, x, y, z)                 point names

    One sample per face. AFLW names its 21 points (``FeatureCoordTypes.descr``, feature ids 1-21)
    with the image sides of a frontal face ("Left" = image left, as in facelit's schemes):
    LeftBrowLeftCorner, LeftBrowCenter, LeftBrowRightCorner, RightBrowLeftCorner, RightBrowCenter,
    RightBrowRightCorner, LeftEyeLeftCorner, LeftEyeCenter, LeftEyeRightCorner, RightEyeLeftCorner,
    RightEyeCenter, RightEyeRightCorner, LeftEar, NoseLeft, NoseCenter, NoseRight, RightEar,
    MouthLeftCorner, MouthCenter, MouthRightCorner, ChinCenter. They map by name, in this order, onto
    :data:`facelit.geometry.schemes.AFLW21`; points a face lacks are ``visible=False`` (coordinates 0).
    Names outside this list are ignored. The pose is ``(yaw, pitch, roll)`` converted to degrees with
    AFLW's own signs (not re-derived against :mod:`facelit.geometry.pose`).

(b) AFLW-19 (Zhu et al., CVPR 2016 release used by SAN, HRNet, 3FabRec ...)::

    AFLW/                      <- ``root`` of AFLW19Dataset
        AFLWinfo_release.mat   bbox (N, 4) x1 x2 y1 y2; data (N, 38) 19 x then 19 y; mask_new (N, 19);
                               nameList (N, 1) cell of paths relative to flickr/; ra (1, N) 1-based order
        flickr/0/..., flickr/2/..., flickr/3/...

    Splits: ``train`` = the first 20,000 entries of ``ra``, ``test`` = the rest (4,386 in the release),
    ``frontal`` = the test faces whose 19 ``mask_new`` flags are all 1 (1,165 in the release). The
    release has no validation split: with ``val_fraction > 0``, ``val`` holds out that share of the
    training *photos* (all faces of a photo on one side, :mod:`facelit.datasets.holdout`) and
    ``train`` keeps the rest; checkpoints are chosen on ``val``, and ``test``/``frontal`` are scored
    once. The coordinates of all 19 points are given; the benchmark scores all of them (``visible``
    all True); ``use_mask=True`` makes ``visible`` follow ``mask_new`` instead. NME: normaliser
    ``"face_box"`` with the sample's ``boxes`` (the dataset box, ``sqrt(w * h)``).

Convention
----------
Output points are in the pixel-area frame of :mod:`facelit.datasets.crops`. ``AFLWinfo_release.mat``
is MATLAB-made (1-based, integers at pixel centres): points and boxes shift by -0.5. The AFLW
annotation tool stores 0-based pixel positions (integers at pixel centres): points shift by +0.5;
``FaceRect`` is taken as pixel edges (``x, y, x + w, y + h``).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset

from facelit.datasets.crops import (
    MATLAB_TO_AREA,
    ZERO_BASED_TO_AREA,
    crop_box_from_points,
    load_rgb,
    make_crop_sample,
    square_box,
)
from facelit.datasets.holdout import holdout_split
from facelit.geometry.schemes import AFLW19, AFLW21

__all__ = [
    "AFLW_FEATURE_NAMES",
    "AFLW19_NUM_TRAIN",
    "AFLW19_SPLITS",
    "AFLWSqliteDataset",
    "AFLW19Dataset",
]

log = logging.getLogger(__name__)

# AFLW point name (FeatureCoordTypes.descr) -> facelit AFLW-21 point name, in AFLW's feature-id order.
AFLW_FEATURE_NAMES: dict[str, str] = {
    "LeftBrowLeftCorner": "left_brow_left",
    "LeftBrowCenter": "left_brow_center",
    "LeftBrowRightCorner": "left_brow_right",
    "RightBrowLeftCorner": "right_brow_left",
    "RightBrowCenter": "right_brow_center",
    "RightBrowRightCorner": "right_brow_right",
    "LeftEyeLeftCorner": "left_eye_left",
    "LeftEyeCenter": "left_eye_center",
    "LeftEyeRightCorner": "left_eye_right",
    "RightEyeLeftCorner": "right_eye_left",
    "RightEyeCenter": "right_eye_center",
    "RightEyeRightCorner": "right_eye_right",
    "LeftEar": "left_ear",
    "NoseLeft": "nose_left",
    "NoseCenter": "nose_center",
    "NoseRight": "nose_right",
    "RightEar": "right_ear",
    "MouthLeftCorner": "mouth_left",
    "MouthCenter": "mouth_center",
    "MouthRightCorner": "mouth_right",
    "ChinCenter": "chin_center",
}

AFLW19_NUM_TRAIN = 20000
AFLW19_SPLITS = ("train", "val", "test", "frontal")

_REQUIRED_TABLES = ("FaceImages", "Faces", "FaceRect", "FacePose", "FeatureCoords", "FeatureCoordTypes")

# One row per face: its image, first FaceRect and first FacePose (LEFT JOIN: both may be absent).
_FACES_SQL = """
SELECT f.face_id, i.filepath, r.x, r.y, r.w, r.h, p.yaw, p.pitch, p.roll
FROM Faces AS f
JOIN FaceImages AS i ON i.file_id = f.file_id
LEFT JOIN FaceRect AS r ON r.rowid = (SELECT MIN(rowid) FROM FaceRect WHERE face_id = f.face_id)
LEFT JOIN FacePose AS p ON p.rowid = (SELECT MIN(rowid) FROM FacePose WHERE face_id = f.face_id)
ORDER BY f.face_id
"""
_COORDS_SQL = """
SELECT c.face_id, t.descr, c.x, c.y
FROM FeatureCoords AS c JOIN FeatureCoordTypes AS t ON t.feature_id = c.feature_id
"""


def _check_size_margin(size: int, margin: float) -> None:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")


class AFLWSqliteDataset(Dataset):
    """Original AFLW faces from ``aflw.sqlite`` (AFLW-21 scheme, pose, face rectangle).

    The crop is a square around the visible points (``margin`` of their box side on each side);
    faces with fewer than two distinct visible points are cropped around their ``FaceRect``; faces
    with neither are skipped and counted in ``num_skipped``. ``box`` is the ``FaceRect`` when the face
    has one, else the box of its visible points.

    Args:
        root: folder holding ``aflw.sqlite`` and ``flickr/``.
        size: crop side in pixels.
        margin: crop margin.
        sqlite_name: file name of the database inside ``root``.
    """

    def __init__(
        self, root: str | Path, size: int = 256, margin: float = 0.25, sqlite_name: str = "aflw.sqlite"
    ) -> None:
        _check_size_margin(size, margin)
        self.root = Path(root)
        self.size = size
        self.margin = margin
        self.db_path = self.root / sqlite_name
        if not self.db_path.is_file():
            raise FileNotFoundError(f"AFLW database not found: {self.db_path}")
        faces, coords = self._query()
        self._build(faces, coords)

    def _query(self) -> tuple[list[tuple], list[tuple]]:
        uri = f"file:{self.db_path}?mode=ro"
        try:
            with sqlite3.connect(uri, uri=True) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                missing = [t for t in _REQUIRED_TABLES if t not in tables]
                if missing:
                    raise ValueError(f"{self.db_path}: missing tables {missing}")
                return conn.execute(_FACES_SQL).fetchall(), conn.execute(_COORDS_SQL).fetchall()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.db_path}: cannot read the AFLW database: {err}") from err

    def _build(self, faces: list[tuple], coords: list[tuple]) -> None:
        n = len(faces)
        face_ids = np.array([f[0] for f in faces], dtype=np.int64)
        points = np.zeros((n, AFLW21.num_points, 2), dtype=np.float32)
        visible = np.zeros((n, AFLW21.num_points), dtype=bool)
        name_to_k = {aflw: AFLW21.index(ours) for aflw, ours in AFLW_FEATURE_NAMES.items()}
        if coords and n:
            fid = np.array([c[0] for c in coords], dtype=np.int64)
            kk = np.array([name_to_k.get(c[1], -1) for c in coords], dtype=np.int64)
            try:
                xy = np.array([(c[2], c[3]) for c in coords], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{self.db_path}: non-numeric FeatureCoords value: {err}") from err
            bad = ~np.isfinite(xy).all(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{self.db_path}: FeatureCoords of face {coords[i][0]} has value {coords[i][2:]}"
                )
            row = np.searchsorted(face_ids, fid).clip(max=n - 1)
            keep = (kk >= 0) & (face_ids[row] == fid)
            points[row[keep], kk[keep]] = xy[keep] + ZERO_BASED_TO_AREA
            visible[row[keep], kk[keep]] = True
        rect = np.array(
            [[np.nan if v is None else v for v in f[2:6]] for f in faces], dtype=np.float64
        ).reshape(n, 4)
        pose = np.array(
            [[np.nan if v is None else v for v in f[6:9]] for f in faces], dtype=np.float64
        ).reshape(n, 3)
        has_rect = np.isfinite(rect).all(axis=1) & (rect[:, 2] > 0) & (rect[:, 3] > 0)
        hi = np.where(visible[..., None], points, -np.inf).max(axis=1)
        lo = np.where(visible[..., None], points, np.inf).min(axis=1)
        extent = np.where(visible.any(axis=1)[:, None], hi - lo, 0.0)
        has_points = (visible.sum(axis=1) >= 2) & (extent.max(axis=1) > 0)
        usable = has_points | has_rect
        self.num_skipped = int((~usable).sum())
        if self.num_skipped:
            log.warning(
                "AFLW: %d faces have neither landmarks nor a face rectangle; skipped", self.num_skipped
            )
        idx = np.flatnonzero(usable)
        self.face_ids = face_ids[idx]
        self.filepaths = [faces[i][1] for i in idx]
        self.points = torch.from_numpy(points[idx])
        self.visible = torch.from_numpy(visible[idx])
        xyxy = np.concatenate([rect[:, :2], rect[:, :2] + rect[:, 2:]], axis=1)
        self.rects = torch.from_numpy(xyxy[idx]).float()
        self.has_rect = torch.from_numpy(has_rect[idx])
        self.has_points = torch.from_numpy(has_points[idx])
        self.poses = torch.from_numpy(np.degrees(pose[idx])).float()
        log.info("AFLW: %d faces from %s", len(self.face_ids), self.db_path)

    def __len__(self) -> int:
        return len(self.face_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points, visible = self.points[index], self.visible[index]
        rect = self.rects[index] if bool(self.has_rect[index]) else None
        if bool(self.has_points[index]):
            crop_box = crop_box_from_points(points, visible, self.margin)
        else:
            crop_box = square_box(rect, self.margin)  # type: ignore[arg-type]
        pose = self.poses[index]
        has_pose = bool(torch.isfinite(pose).all())
        path = self.root / "flickr" / self.filepaths[index]
        meta = {"file": str(path), "face_id": int(self.face_ids[index])}
        return make_crop_sample(
            load_rgb(path),
            points,
            visible,
            crop_box,
            self.size,
            pose=pose if has_pose else None,
            face_box=rect,
            meta=meta,
        )


def _load_aflw19_mat(path: Path) -> dict[str, Any]:
    """Read and validate ``AFLWinfo_release.mat``; errors name the file and the key."""
    if not path.is_file():
        raise FileNotFoundError(f"AFLW-19 annotation file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several types for corrupt files
        raise ValueError(f"cannot read {path}: {err}") from err
    for key in ("bbox", "data", "mask_new", "nameList", "ra"):
        if key not in mat:
            raise ValueError(f"{path}: missing variable {key!r}")
    bbox = np.asarray(mat["bbox"], dtype=np.float64)
    n = bbox.shape[0]
    expected = {"bbox": (n, 4), "data": (n, 2 * AFLW19.num_points), "mask_new": (n, AFLW19.num_points)}
    arrays = {}
    for key, shape in expected.items():
        arr = np.asarray(mat[key], dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"{path}: {key!r} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ValueError(f"{path}: {key!r} has a non-finite value at row {row}")
        arrays[key] = arr
    bad_mask = ~np.isin(arrays["mask_new"], (0.0, 1.0))
    if bad_mask.any():
        r, c = np.argwhere(bad_mask)[0]
        raise ValueError(
            f"{path}: 'mask_new' row {r} column {c} has value {arrays['mask_new'][r, c]}, expected 0 or 1"
        )
    ra = np.asarray(mat["ra"]).ravel()
    if ra.size != n or not np.array_equal(np.sort(ra.astype(np.int64)), np.arange(1, n + 1)):
        raise ValueError(f"{path}: 'ra' must be a permutation of 1..{n} (1-based), got {ra.size} values")
    names_cell = np.asarray(mat["nameList"]).ravel()
    if names_cell.size != n:
        raise ValueError(f"{path}: 'nameList' has {names_cell.size} entries, expected {n}")
    names = []
    for i, entry in enumerate(names_cell):
        flat = np.asarray(entry).ravel()
        if flat.size != 1 or not isinstance(flat[0], str):
            raise ValueError(f"{path}: 'nameList' entry {i} is not a string: {entry!r}")
        names.append(flat[0])
    arrays["order"] = ra.astype(np.int64) - 1
    arrays["names"] = names
    return arrays


class AFLW19Dataset(Dataset):
    """AFLW-19 benchmark faces from ``AFLWinfo_release.mat`` (see the module docstring).

    The crop is a square around the dataset box: side ``max(w, h) * (1 + 2 * margin)`` (the default
    0.125 gives HRNet's 1.25 x box). ``boxes`` is the dataset box in crop pixels, the ``face_box``
    NME normaliser.

    Args:
        root: folder holding ``AFLWinfo_release.mat`` and ``flickr/``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"frontal"``.
        size: crop side in pixels.
        margin: crop margin, fraction of the box side on each side.
        use_mask: ``visible`` from ``mask_new`` instead of all True.
        num_train: length of the training part of ``ra`` (20,000 in the benchmark).
        mat_name: file name of the annotation file inside ``root``.
        val_fraction: share of the training photos held out as ``"val"`` (0: none, ``"train"`` is
            the benchmark's 20,000 faces).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int = 256,
        margin: float = 0.125,
        use_mask: bool = False,
        num_train: int = AFLW19_NUM_TRAIN,
        mat_name: str = "AFLWinfo_release.mat",
        val_fraction: float = 0.0,
    ) -> None:
        _check_size_margin(size, margin)
        if split not in AFLW19_SPLITS:
            raise ValueError(f"unknown AFLW-19 split {split!r}; known: {AFLW19_SPLITS}")
        if split == "val" and val_fraction == 0:
            raise ValueError("the AFLW-19 'val' split needs val_fraction > 0 (the release has no validation split)")
        self.root = Path(root)
        self.split = split
        self.size = size
        self.margin = margin
        self.use_mask = use_mask
        info = _load_aflw19_mat(self.root / mat_name)
        order = info["order"]
        if not 0 < num_train < order.size:
            raise ValueError(
                f"num_train={num_train} must lie in (0, {order.size}) for {self.root / mat_name}"
            )
        mask = info["mask_new"] > 0.5
        if split in ("train", "val"):
            idx = order[:num_train]
            if val_fraction != 0:
                train, val = holdout_split([info["names"][i] for i in idx], val_fraction)
                idx = idx[train if split == "train" else val]
        else:
            idx = order[num_train:]
            if split == "frontal":
                idx = idx[mask[idx].all(axis=1)]
        data = info["data"][idx]
        k = AFLW19.num_points
        self.points = torch.from_numpy(np.stack([data[:, :k], data[:, k:]], axis=-1)).float() + MATLAB_TO_AREA
        x1, x2, y1, y2 = info["bbox"][idx].T
        self.boxes = torch.from_numpy(np.stack([x1, y1, x2, y2], axis=-1)).float() + MATLAB_TO_AREA
        self.masks = torch.from_numpy(mask[idx])
        self.names = [info["names"][i] for i in idx]
        self.indices = idx
        log.info("AFLW-19 %s: %d faces from %s", split, len(self.names), self.root / mat_name)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points, box = self.points[index], self.boxes[index]
        mask = self.masks[index]
        visible = mask if self.use_mask else torch.ones_like(mask)
        path = self.root / "flickr" / self.names[index]
        meta = {"file": str(path), "index": int(self.indices[index]), "mask_new": mask.clone()}
        return make_crop_sample(
            load_rgb(path), points, visible, square_box(box, self.margin), self.size, face_box=box, meta=meta
        )
