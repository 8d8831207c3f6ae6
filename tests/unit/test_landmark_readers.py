"""Landmark dataset readers and the shared crop helper.

Every reader is run on a tiny tree written in the official format (scipy .mat, sqlite, CSV, jpg).
The images carry bright Gaussian dots at chosen landmark positions; after reading through the
dataset, the dots are re-located by centroid in the crop and must sit at the returned landmarks.
Crops up-scale the faces (crop pixel > image pixel), so a half-pixel frame error in a reader
(0.5 image px -> > 0.5 crop px) fails the 0.25 px tolerance.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facelit.batch import CROP_KEYS, collate_crops
from facelit.datasets.aflw import AFLW_FEATURE_NAMES, AFLW19Dataset, AFLWSqliteDataset
from facelit.datasets.crops import (
    apply_affine,
    crop_and_resize,
    crop_box_from_points,
    load_rgb,
    make_crop_sample,
    square_box,
)
from facelit.datasets.w300 import W300Dataset, read_300w_csv
from facelit.datasets.w300lp import AFLW2000Dataset, W300LPDataset
from facelit.geometry.schemes import AFLW19, AFLW21, IBUG68

TOL = 0.25  # crop pixels
# File frames, written independently of the reader constants: MATLAB files store area + 0.5
# (1-based pixel centres), 0-based tools store area - 0.5.
FILE_MATLAB = 0.5
FILE_ZERO_BASED = -0.5
SIGMA = 1.6  # dot radius (image pixels)


# ----------------------------------------------------------------------------------------- helpers
def dot_image(h: int, w: int, dots: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image with white Gaussian dots centred at area-frame points ``dots`` (N, 2)."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w), dtype=np.float64)
    for x, y in dots:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * SIGMA**2))
    return np.repeat((np.clip(img, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def save_jpg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=98, subsampling=0)


def locate(crop: torch.Tensor, near: torch.Tensor, radius: float) -> torch.Tensor:
    """Intensity centroid (area frame) of the dot of ``crop`` (3, S, S) within ``radius`` of ``near``."""
    gray = crop.mean(dim=0).double()
    s_h, s_w = gray.shape
    ys, xs = torch.meshgrid(torch.arange(s_h) + 0.5, torch.arange(s_w) + 0.5, indexing="ij")
    window = ((xs - near[0]) ** 2 + (ys - near[1]) ** 2) <= radius**2
    weight = gray * window
    weight = torch.where(weight > 0.05, weight, torch.zeros_like(weight))
    total = weight.sum()
    assert total > 0, f"no dot found near {near.tolist()}"
    return torch.stack([(weight * xs).sum() / total, (weight * ys).sum() / total]).float()


def assert_dots(sample: dict, indices: list[int], scale: float) -> None:
    """The dots drawn at landmarks ``indices`` sit at the sample's landmarks (crop pixels)."""
    for k in indices:
        pt = sample["landmarks"][k]
        found = locate(sample["image"], pt, radius=4 * SIGMA * scale)
        err = float((found - pt).norm())
        assert err < TOL, f"landmark {k}: dot at {found.tolist()}, label at {pt.tolist()} (err {err:.3f})"


def face68(cx: float, cy: float, r: float) -> np.ndarray:
    """(68, 2) area-frame points on a circle; points 0, 17, 34, 51 are a quarter turn apart."""
    ang = np.arange(68) * (2 * np.pi / 68)
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)


DOTS68 = [0, 17, 34, 51]


# ------------------------------------------------------------------------------------------- crops
def test_crop_and_resize_dots_up_and_down_scaling():
    pts = np.array([[20.3, 30.7], [50.5, 22.25], [41.8, 60.1]])
    image = torch.from_numpy(dot_image(80, 90, pts)).permute(2, 0, 1).float() / 255
    cases = [
        ((10.0, 12.0, 62.0, 70.0), 96),  # up-scaling
        ((5.5, 8.0, 70.0, 72.5), 40),  # 1.6x down: bilinear only
        ((-20.0, -15.0, 75.0, 80.0), 40),  # 2.4x down, partly outside: box filter by 2 first
        ((-31.3, -20.6, 100.2, 110.9), 40),  # 3.3x down: box filter by 3 first
    ]
    for box, size in cases:
        crop, affine = crop_and_resize(image, torch.tensor(box), size)
        assert crop.shape == (3, size, size)
        mapped = apply_affine(torch.tensor(pts, dtype=torch.float32), affine)
        scale = size / (box[2] - box[0])
        for p in mapped:
            found = locate(crop, p, radius=4 * SIGMA * max(scale, 0.5))
            assert float((found - p).norm()) < TOL, (box, p.tolist(), found.tolist())


def test_crop_antialias_keeps_flat_regions_and_image_area():
    flat = torch.full((3, 300, 400), 0.7)
    crop, _ = crop_and_resize(flat, torch.tensor([13.3, 20.1, 290.7, 280.4]), 32)
    assert torch.allclose(crop, torch.full_like(crop, 0.7), atol=1e-5)
    # a box 1.9 x 2.2 times the image: the crop's mean is the image's share of the box (zeros outside)
    ones = torch.ones(3, 100, 120)
    crop, _ = crop_and_resize(ones, torch.tensor([-50.0, -40.0, 170.0, 150.0]), 22)
    assert math.isclose(float(crop.mean()), (120 * 100) / (220 * 190), rel_tol=0.02)
    crop, _ = crop_and_resize(ones, torch.tensor([-300.0, -300.0, -100.0, -100.0]), 8)  # misses the image
    assert torch.all(crop == 0)


def test_crop_affine_maps_box_corners_to_crop_corners_and_outside_is_black():
    image = torch.ones(3, 20, 30)
    box = torch.tensor([-10.0, 2.0, 10.0, 22.0])
    crop, affine = crop_and_resize(image, box, 20)
    corners = apply_affine(torch.tensor([[-10.0, 2.0], [10.0, 22.0]]), affine)
    assert torch.allclose(corners, torch.tensor([[0.0, 0.0], [20.0, 20.0]]))
    assert torch.all(crop[:, :, :9] == 0)  # x in [-10, -1): outside the image
    assert torch.allclose(crop[:, :17, 11:], torch.ones(3, 17, 9))


def test_square_box_and_crop_box_from_points():
    pts = torch.tensor([[10.0, 20.0], [30.0, 60.0], [1000.0, 1000.0]])
    vis = torch.tensor([True, True, False])
    box = crop_box_from_points(pts, vis, margin=0.25)  # box 20 x 40 -> side 40 * 1.5 = 60 around (20, 40)
    assert torch.allclose(box, torch.tensor([-10.0, 10.0, 50.0, 70.0]))
    with pytest.raises(ValueError, match="no visible point"):
        crop_box_from_points(pts, torch.zeros(3, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="degenerate"):
        square_box(torch.tensor([5.0, 5.0, 5.0, 5.0]), 0.2)
    with pytest.raises(ValueError, match="degenerate"):
        crop_and_resize(torch.zeros(3, 8, 8), torch.tensor([4.0, 4.0, 2.0, 6.0]), 8)


def test_make_crop_sample_contract_and_collate():
    image = torch.rand(3, 40, 50)
    pts = torch.tensor([[10.0, 10.0], [30.0, 25.0], [0.0, 0.0]])
    vis = torch.tensor([True, True, False])
    s = make_crop_sample(image, pts, vis, crop_box_from_points(pts, vis, 0.2), 32, meta={"file": "x.jpg"})
    assert set(CROP_KEYS) - {"identity"} <= set(s)
    assert s["image"].shape == (3, 32, 32) and s["landmarks"].shape == (3, 2) and s["pose"].shape == (3,)
    assert (
        s["landmarks_visible"].dtype == torch.bool and s["meta"]["has_pose"] is False and s["meta"]["file"] == "x.jpg"
    )
    assert torch.equal(s["meta"]["orig_landmarks"], pts)
    # box = tight box of the visible points, mapped to the crop
    assert torch.allclose(
        s["boxes"], torch.cat([s["landmarks"][:2].min(0).values, s["landmarks"][:2].max(0).values])
    )
    batch = collate_crops([s, s])
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["meta"]) == 2


def test_load_rgb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_rgb(bad)


# ----------------------------------------------------------------------------------- 300W-LP tree
def _pose_para(pitch: float, yaw: float, roll: float) -> np.ndarray:
    return np.array([[pitch, yaw, roll, 10.0, 20.0, 30.0, 0.001]])


def _write_w300lp(root: Path, w: int = 96) -> dict:
    pts = face68(48.3, 50.6, 20.0)  # area frame
    offset = np.array([2.0, -1.5])  # pt2d differs from pts_2d: tells which source was read
    name = "AFW_134212_1_0"
    save_jpg(root / "AFW" / f"{name}.jpg", dot_image(w, w, pts[DOTS68]))
    mat_common = dict(
        roi=np.array([[1.0, 1.0, 90.0, 90.0]]), Shape_Para=np.zeros((199, 1)), Exp_Para=np.zeros((29, 1))
    )
    scipy.io.savemat(
        root / "AFW" / f"{name}.mat",
        dict(pt2d=(pts + offset + FILE_MATLAB).T, Pose_Para=_pose_para(0.1, -0.5, 0.2), **mat_common),
    )
    (root / "landmarks" / "AFW").mkdir(parents=True)
    scipy.io.savemat(
        root / "landmarks" / "AFW" / f"{name}_pts.mat",
        dict(pts_2d=pts + FILE_MATLAB, pts_3d=pts + FILE_MATLAB + 1.0),
    )
    # Flip: the mirrored image; its pt2d mirrored in MATLAB (x' = W + 1 - x) and re-indexed
    flip_img = dot_image(w, w, pts[DOTS68])[:, ::-1].copy()
    save_jpg(root / "AFW_Flip" / f"{name}.jpg", flip_img)
    pt2d_file = pts + offset + FILE_MATLAB
    flip_pt2d = np.stack([w + 1 - pt2d_file[:, 0], pt2d_file[:, 1]], axis=1)[list(IBUG68.flip_perm)]
    scipy.io.savemat(
        root / "AFW_Flip" / f"{name}.mat",
        dict(pt2d=flip_pt2d.T, Pose_Para=_pose_para(0.1, 0.5, -0.2), **mat_common),
    )
    return {"pts": pts, "offset": offset, "w": w}


def test_w300lp_reader_landmark_sources_pose_and_dots(tmp_path):
    root = tmp_path / "300W_LP"
    info = _write_w300lp(root)
    ds = W300LPDataset(root, subsets=("AFW",), size=64, margin=0.25)
    assert len(ds) == 2
    plain, flipped = ds[0], ds[1]
    assert plain["meta"]["subset"] == "AFW" and flipped["meta"]["subset"] == "AFW_Flip"
    # unflipped: pts_2d of landmarks/AFW/*_pts.mat, not pt2d
    assert torch.allclose(
        plain["meta"]["orig_landmarks"], torch.tensor(info["pts"], dtype=torch.float32), atol=1e-4
    )
    assert "pts_2d" in plain["meta"]["landmark_source"]
    scale = 64 / (40.0 * 1.5)
    assert_dots(plain, DOTS68, scale)
    # pose: Pose_Para (pitch, yaw, roll) radians -> (yaw, pitch, roll) degrees
    assert torch.allclose(
        plain["pose"], torch.tensor([math.degrees(-0.5), math.degrees(0.1), math.degrees(0.2)])
    )
    assert plain["meta"]["has_pose"] is True and plain["landmarks_visible"].all()
    # flipped (mirror): point 36 of the flipped face is the mirror of point 45 of the original
    w = info["w"]
    orig = torch.tensor(info["pts"], dtype=torch.float32)
    expected = torch.stack([w - orig[:, 0], orig[:, 1]], dim=1)[IBUG68.flip_tensor()]
    assert torch.allclose(flipped["meta"]["orig_landmarks"], expected, atol=1e-4)
    assert torch.allclose(
        flipped["meta"]["orig_landmarks"][36], torch.stack([w - orig[45, 0], orig[45, 1]]), atol=1e-4
    )
    assert_dots(flipped, [IBUG68.flip_perm[k] for k in DOTS68], scale)
    # flipped (pt2d): the Flip .mat as stored (mirrored pt2d, i.e. with the offset)
    ds2 = W300LPDataset(root, subsets=("AFW",), size=64, flip_landmarks="pt2d")
    off = torch.tensor(info["offset"], dtype=torch.float32)
    expected2 = torch.stack([w - (orig[:, 0] + off[0]), orig[:, 1] + off[1]], dim=1)[IBUG68.flip_tensor()]
    assert torch.allclose(ds2[1]["meta"]["orig_landmarks"], expected2, atol=1e-4)


def test_w300lp_falls_back_to_pt2d_and_reports_bad_input(tmp_path):
    root = tmp_path / "300W_LP"
    info = _write_w300lp(root)
    (root / "landmarks" / "AFW" / "AFW_134212_1_0_pts.mat").unlink()
    ds = W300LPDataset(root, subsets=("AFW",), flip_subsets=False, size=64)
    expected = torch.tensor(info["pts"] + info["offset"], dtype=torch.float32)
    assert torch.allclose(ds[0]["meta"]["orig_landmarks"], expected, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="HELEN"):
        W300LPDataset(root, subsets=("HELEN",))
    with pytest.raises(ValueError, match="unknown 300W-LP subsets"):
        W300LPDataset(root, subsets=("XM2VTS",))
    scipy.io.savemat(
        root / "AFW" / "AFW_134212_1_0.mat", dict(pt2d=np.zeros((2, 5)), Pose_Para=_pose_para(0, 0, 0))
    )
    with pytest.raises(ValueError, match=r"AFW_134212_1_0\.mat.*'pt2d' has shape \(2, 5\)"):
        ds[0]
    (root / "AFW" / "AFW_134212_1_0.mat").unlink()
    with pytest.raises(FileNotFoundError, match="no .mat annotation"):
        W300LPDataset(root, subsets=("AFW",), flip_subsets=False)


# ------------------------------------------------------------------------------- AFLW2000-3D tree
def test_aflw2000_filter_landmarks_and_dots(tmp_path):
    root = tmp_path / "AFLW2000"
    poses = {
        "image00002": (0.2, 0.3, -0.1),
        "image00004": (0.0, math.radians(120.0), 0.0),
        "image00006": (-0.3, -1.2, 0.1),
    }
    for i, (stem, (pitch, yaw, roll)) in enumerate(poses.items()):
        pts = face68(40.0 + i, 44.0 - i, 18.0)
        save_jpg(root / f"{stem}.jpg", dot_image(90, 90, pts[DOTS68]))
        pt3d = np.concatenate([(pts + FILE_MATLAB).T, np.zeros((1, 68))])
        scipy.io.savemat(
            root / f"{stem}.mat",
            dict(
                pt3d_68=pt3d,
                pt2d=np.zeros((2, 21)),
                Pose_Para=_pose_para(pitch, yaw, roll),
                roi=np.zeros((1, 4)),
            ),
        )
    assert len(AFLW2000Dataset(root, size=64)) == 3  # the landmark protocol scores every image
    ds = AFLW2000Dataset(root, size=64, margin=0.25, max_abs_angle=99.0)  # the head-pose filter, on request
    assert ds.num_filtered == 1 and len(ds) == 2
    assert [s[0] for s in ds.items] == ["image00002", "image00006"]
    s = ds[1]
    assert torch.allclose(
        s["pose"], torch.tensor([math.degrees(-1.2), math.degrees(-0.3), math.degrees(0.1)])
    )
    assert torch.allclose(
        s["meta"]["orig_landmarks"], torch.tensor(face68(42.0, 42.0, 18.0), dtype=torch.float32), atol=1e-4
    )
    assert_dots(s, DOTS68, 64 / (36.0 * 1.5))


# -------------------------------------------------------------------------------- AFLW sqlite tree
_AFLW_SCHEMA = """
CREATE TABLE Databases (db_id INTEGER PRIMARY KEY, path TEXT, description TEXT);
CREATE TABLE FaceImages (image_id INTEGER PRIMARY KEY, db_id INTEGER, file_id TEXT UNIQUE, filepath TEXT,
                         bw INTEGER, width INTEGER, height INTEGER);
CREATE TABLE Faces (face_id INTEGER PRIMARY KEY, file_id TEXT, db_id INTEGER);
CREATE TABLE FaceRect (face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, annot_type_id INTEGER);
CREATE TABLE FacePose (face_id INTEGER, roll REAL, pitch REAL, yaw REAL, annot_type_id INTEGER);
CREATE TABLE FaceEllipse (face_id INTEGER, x REAL, y REAL, ra REAL, rb REAL, theta REAL,
                          annot_type_id INTEGER, upsidedown INTEGER);
CREATE TABLE FaceMetaData (face_id INTEGER, sex TEXT, occluded INTEGER, glasses INTEGER, bw INTEGER,
                           annot_type_id INTEGER);
CREATE TABLE FeatureCoordTypes (feature_id INTEGER PRIMARY KEY, descr TEXT, code TEXT,
                                x REAL, y REAL, z REAL);
CREATE TABLE FeatureCoords (face_id INTEGER, feature_id INTEGER, x REAL, y REAL);
"""


def _aflw21_face(cx: float, cy: float, r: float) -> np.ndarray:
    ang = np.arange(21) * (2 * np.pi / 21)
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], axis=1)


def _write_aflw_sqlite(root: Path) -> dict:
    names = list(AFLW_FEATURE_NAMES)
    # face 10: two faces on image 0 (face 10 lacks both ears), face 12: rect only, face 13: nothing
    face10 = _aflw21_face(30.0, 34.0, 14.0)
    face11 = _aflw21_face(85.3, 40.2, 12.0)
    dots10 = [0, 7, 14]
    save_jpg(
        root / "flickr" / "0" / "image00002.jpg",
        dot_image(70, 120, np.concatenate([face10[dots10], face11[[3, 10]]])),
    )
    save_jpg(root / "flickr" / "3" / "image00013.jpg", dot_image(50, 50, np.zeros((0, 2))))
    con = sqlite3.connect(root / "aflw.sqlite")
    con.executescript(_AFLW_SCHEMA)
    con.execute("INSERT INTO Databases VALUES (1, 'flickr/', 'flickr images')")
    con.executemany(
        "INSERT INTO FaceImages VALUES (?, 1, ?, ?, 0, ?, ?)",
        [
            (1, "image00002.jpg", "0/image00002.jpg", 120, 70),
            (2, "image00013.jpg", "3/image00013.jpg", 50, 50),
        ],
    )
    con.executemany(
        "INSERT INTO Faces VALUES (?, ?, 1)",
        [(10, "image00002.jpg"), (11, "image00002.jpg"), (12, "image00013.jpg"), (13, "image00013.jpg")],
    )
    con.executemany(
        "INSERT INTO FeatureCoordTypes VALUES (?, ?, ?, 0, 0, 0)",
        [(i + 1, n, f"C{i}") for i, n in enumerate(names)] + [(22, "HeadCenter", "HC")],
    )
    coords = []
    for face_id, pts, skip in ((10, face10, {"LeftEar", "RightEar"}), (11, face11, set())):
        for i, n in enumerate(names):
            if n not in skip:
                x, y = pts[i] + FILE_ZERO_BASED
                coords.append((face_id, i + 1, float(x), float(y)))
        coords.append((face_id, 22, 1.0, 1.0))  # a name outside the 21: ignored
    con.executemany("INSERT INTO FeatureCoords VALUES (?, ?, ?, ?)", coords)
    con.executemany(
        "INSERT INTO FaceRect VALUES (?, ?, ?, ?, ?, 1)",
        [(10, 14, 18, 32, 33), (11, 70, 26, 30, 30), (12, 10, 12, 20, 24)],
    )
    con.executemany(
        "INSERT INTO FacePose VALUES (?, ?, ?, ?, 1)", [(10, 0.1, -0.2, 0.5), (11, 0.0, 0.0, -0.3)]
    )
    con.commit()
    con.close()
    return {"face10": face10, "face11": face11, "dots10": dots10}


def test_aflw_sqlite_reader(tmp_path):
    info = _write_aflw_sqlite(tmp_path)
    ds = AFLWSqliteDataset(tmp_path, size=64, margin=0.25)
    assert len(ds) == 3 and ds.num_skipped == 1
    assert ds.face_ids.tolist() == [10, 11, 12]
    s10, s11, s12 = ds[0], ds[1], ds[2]
    # name mapping: LeftEar / RightEar missing -> invisible; the rest at their scheme index
    vis = s10["landmarks_visible"]
    assert not vis[AFLW21.index("left_ear")] and not vis[AFLW21.index("right_ear")] and int(vis.sum()) == 19
    expected = torch.tensor(info["face10"], dtype=torch.float32)
    assert torch.allclose(s10["meta"]["orig_landmarks"][vis], expected[vis], atol=1e-4)
    assert torch.allclose(
        s10["pose"], torch.tensor([math.degrees(0.5), math.degrees(-0.2), math.degrees(0.1)])
    )
    assert_dots(s10, info["dots10"], 64 / (28.0 * 1.5))
    assert_dots(s11, [3, 10], 64 / (24.0 * 1.5))
    # box = FaceRect in crop pixels
    rect = apply_affine(torch.tensor([[14.0, 18.0], [46.0, 51.0]]), s10["meta"]["affine"]).view(4)
    assert torch.allclose(s10["boxes"], rect, atol=1e-4)
    # face 12: no points, cropped around its rectangle, no pose
    assert not s12["landmarks_visible"].any() and s12["meta"]["has_pose"] is False and torch.all(s12["pose"] == 0)
    # rect (10, 12, 30, 36) -> crop box: side 24 * 1.5 = 36 around (20, 24), i.e. (2, 6, 38, 42)
    assert torch.allclose(s12["boxes"], torch.tensor([8.0, 6.0, 28.0, 30.0]) * (64 / 36), atol=1e-4)


def test_aflw_sqlite_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="aflw.sqlite"):
        AFLWSqliteDataset(tmp_path)
    con = sqlite3.connect(tmp_path / "aflw.sqlite")
    con.execute("CREATE TABLE Faces (face_id INTEGER PRIMARY KEY, file_id TEXT, db_id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=r"aflw\.sqlite: missing tables \['FaceImages'"):
        AFLWSqliteDataset(tmp_path)


# -------------------------------------------------------------------------------------- AFLW-19 tree
def _write_aflw19(root: Path, n: int = 6) -> dict:
    rng = np.random.default_rng(0)
    names = np.empty((n, 1), dtype=object)
    data = np.zeros((n, 38))
    bbox = np.zeros((n, 4))
    mask = np.ones((n, 19))
    pts_all = []
    for i in range(n):
        pts = _aflw21_face(40.0 + i, 38.0, 16.0)[[j for j in range(21) if j not in (12, 16)]]
        pts_all.append(pts)
        names[i, 0] = f"{i % 3}/image{i:05d}.jpg"
        save_jpg(root / "flickr" / names[i, 0], dot_image(80, 90, pts[[0, 9, 15]]))
        file_pts = pts + FILE_MATLAB
        data[i] = np.concatenate([file_pts[:, 0], file_pts[:, 1]])
        x1, y1 = file_pts.min(0) - 2
        x2, y2 = file_pts.max(0) + 2
        bbox[i] = [x1, x2, y1, y2]
    ra = rng.permutation(n) + 1
    mask[ra[4] - 1, 5] = 0  # the first test face is not frontal
    scipy.io.savemat(
        root / "AFLWinfo_release.mat",
        dict(bbox=bbox, data=data, mask_new=mask, nameList=names, ra=ra[None].astype(np.float64)),
    )
    return {"ra": ra, "pts": pts_all, "bbox": bbox}


def test_aflw19_splits_boxes_and_dots(tmp_path):
    info = _write_aflw19(tmp_path)
    ra = info["ra"] - 1
    train = AFLW19Dataset(tmp_path, "train", size=64, num_train=4)
    test = AFLW19Dataset(tmp_path, "test", size=64, num_train=4)
    frontal = AFLW19Dataset(tmp_path, "frontal", size=64, num_train=4)
    assert train.indices.tolist() == ra[:4].tolist() and test.indices.tolist() == ra[4:].tolist()
    assert frontal.indices.tolist() == [ra[5]]
    s = test[0]
    i = int(ra[4])
    assert s["meta"]["index"] == i and s["landmarks_visible"].all() and not s["meta"]["mask_new"].all()
    assert torch.allclose(
        s["meta"]["orig_landmarks"], torch.tensor(info["pts"][i], dtype=torch.float32), atol=1e-4
    )
    x1, x2, y1, y2 = info["bbox"][i] - FILE_MATLAB
    box_crop = apply_affine(
        torch.tensor([[x1, y1], [x2, y2]], dtype=torch.float32), s["meta"]["affine"]
    ).view(4)
    assert torch.allclose(s["boxes"], box_crop, atol=1e-4)
    # the box fills the crop up to the margin: side = 1.25 * max(w, h)
    assert math.isclose(float((s["boxes"][2:] - s["boxes"][:2]).max()), 64 / 1.25, rel_tol=1e-4)
    assert_dots(s, [0, 9, 15], 64 / (36.0 * 1.25))
    masked = AFLW19Dataset(tmp_path, "test", size=64, num_train=4, use_mask=True)[0]
    assert torch.equal(masked["landmarks_visible"], masked["meta"]["mask_new"])
    with pytest.raises(ValueError, match="unknown AFLW-19 split"):
        AFLW19Dataset(tmp_path, "dev")


def test_aflw19_bad_input(tmp_path):
    info = _write_aflw19(tmp_path)
    mat = scipy.io.loadmat(tmp_path / "AFLWinfo_release.mat")
    mat["mask_new"][2, 3] = 7
    scipy.io.savemat(
        tmp_path / "AFLWinfo_release.mat", {k: v for k, v in mat.items() if not k.startswith("__")}
    )
    with pytest.raises(ValueError, match=r"AFLWinfo_release\.mat: 'mask_new' row 2 column 3 has value 7"):
        AFLW19Dataset(tmp_path, "test", num_train=4)
    mat["mask_new"][2, 3] = 1
    mat["ra"] = np.ones_like(mat["ra"])
    scipy.io.savemat(
        tmp_path / "AFLWinfo_release.mat", {k: v for k, v in mat.items() if not k.startswith("__")}
    )
    with pytest.raises(ValueError, match="'ra' must be a permutation"):
        AFLW19Dataset(tmp_path, "test", num_train=4)
    assert info["ra"].size == 6


# ------------------------------------------------------------------------------------------- 300W
def test_read_300w_csv_real_files(shared_data):
    folder = shared_data / "300w"
    sets = {
        k: read_300w_csv(folder / f"300w_face_landmarks_300w_{k}.csv")
        for k in ("test", "valid", "valid_common", "valid_challenge")
    }
    assert {k: len(v) for k, v in sets.items()} == {
        "test": 600,
        "valid": 689,
        "valid_common": 554,
        "valid_challenge": 135,
    }

    def key(r):
        return (r.image_name, r.scale, tuple(r.center.tolist()), tuple(r.landmarks.flatten().tolist()))

    assert sorted(map(key, sets["valid_common"] + sets["valid_challenge"])) == sorted(map(key, sets["valid"]))
    assert {r.image_name.split("/")[0] for r in sets["valid_challenge"]} == {"ibug"}
    r = sets["valid"][0]
    assert r.image_name == "lfpw/testset/image_0208.png" and r.scale == 0.745 and r.line == 2
    assert torch.allclose(r.center, torch.tensor([145.5, 182.5]) - FILE_MATLAB)
    assert r.landmarks.shape == (68, 2)
    # scale = max(w, h) / 200 and centre = box centre of the points, to the file's rounding
    lm = torch.stack([x.landmarks for x in sets["valid"]])
    wh = lm.amax(1) - lm.amin(1)
    assert torch.allclose(wh.amax(1) / 200, torch.tensor([x.scale for x in sets["valid"]]), atol=0.011)
    assert torch.allclose(
        (lm.amax(1) + lm.amin(1)) / 2, torch.stack([x.center for x in sets["valid"]]), atol=0.5
    )


def _csv_row(name: str, scale: float, center, pts_file: np.ndarray) -> str:
    return ",".join(
        [name, repr(scale), repr(float(center[0])), repr(float(center[1]))]
        + [repr(float(v)) for v in pts_file.reshape(-1)]
    )


def _csv_header() -> str:
    cols = ["image_name", "scale", "center_w", "center_h"]
    cols += [f"original_{i}_{c}" for i in range(68) for c in ("x", "y")]
    return ",".join(cols)


def test_w300_dataset_crop_and_dots(tmp_path):
    pts = face68(50.2, 47.7, 16.0)
    save_jpg(tmp_path / "ibug" / "image_003_1.jpg", dot_image(100, 110, pts[DOTS68]))
    file_pts = pts + FILE_MATLAB
    lo, hi = file_pts.min(0), file_pts.max(0)
    center = (lo + hi) / 2
    scale = float((hi - lo).max() / 200)
    csv_path = tmp_path / "300w_test.csv"
    csv_path.write_text(
        _csv_header() + "\n" + _csv_row("ibug/image_003_1.jpg", scale, center, file_pts) + "\n"
    )
    ds = W300Dataset(tmp_path, csv_path, size=64)
    s = ds[0]
    assert s["landmarks_visible"].all() and s["meta"]["has_pose"] is False
    assert_dots(s, DOTS68, 64 / (32.0 * 1.25))
    # HRNet crop: side = 200 * scale * 1.25 -> the 200 * scale box spans 64 / 1.25 crop pixels
    assert torch.allclose(s["boxes"], torch.tensor([0.1, 0.1, 0.9, 0.9]) * 64, atol=1e-3)
    (tmp_path / "ibug" / "image_003_1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"ibug/image_003_1\.jpg"):
        ds[0]


def test_read_300w_csv_malformed(tmp_path):
    pts = face68(50.0, 50.0, 10.0)
    good = _csv_row("a.jpg", 0.1, (50.0, 50.0), pts)
    path = tmp_path / "bad.csv"
    path.write_text(_csv_header() + "\n" + good + "\n" + good.replace(",0.1,", ",abc,", 1) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: column 'scale' has non-numeric value 'abc'"):
        read_300w_csv(path)
    path.write_text(_csv_header() + "\n" + good + "\n" + good.rsplit(",", 1)[0] + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: expected 140 fields, got 139"):
        read_300w_csv(path)
    path.write_text("name,scale\n" + good + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: header"):
        read_300w_csv(path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_300w_csv(tmp_path / "missing.csv")


def test_aflw_feature_names_cover_aflw21_in_order():
    assert [AFLW21.index(v) for v in AFLW_FEATURE_NAMES.values()] == list(range(AFLW21.num_points))
    assert AFLW19.num_points == 19
