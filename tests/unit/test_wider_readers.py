"""Tests of the WIDER FACE readers and dataset (facelit.datasets.wider_face)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelit.batch import collate_detections
from facelit.datasets.wider_face import (
    WiderFaceDataset,
    merge_landmarks,
    parse_bbx_gt,
    parse_retinaface_labels,
    wider_stats,
)
from facelit.geometry.schemes import FIVE_POINT
from facelit.metrics.widerface import load_wider_val_gt

REPO = Path(__file__).resolve().parents[2]
WIDER = REPO.parent / "shared" / "data" / "widerface"

# The README's example lines of the RetinaFace train label.txt.
README_LABELS = (
    "# 0--Parade/0_Parade_marchingband_1_849.jpg\n"
    "449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 "
    "485.174 425.893 0.0 538.357 431.491 0.0 0.82\n"
    "# 0--Parade/0_Parade_marchingband_1_799.jpg\n"
    "78 221 7 8 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.2\n"
    "78 238 14 17 84.188 244.607 1.0 89.527 244.491 1.0 86.973 247.857 1.0 "
    "85.116 250.643 1.0 88.482 250.643 1.0 0.36\n"
)

# A train split file in the official format: a zero-face image, a degenerate box (w = -2), an invalid face.
BBX_GT = """0--Parade/0_Parade_marchingband_1_849.jpg
2 
449 330 122 149 2 0 0 0 0 0 
10 12 -2 5 0 0 0 0 0 0 
0--Parade/0_Parade_marchingband_1_799.jpg
3 
78 221 7 8 2 0 0 0 0 0 
78 238 14 17 0 0 0 1 0 0 
5 5 4 4 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_empty_1.jpg
0 
0 0 0 0 0 0 0 0 0 0 
"""


@pytest.fixture(scope="module")
def shared() -> Path:
    if not WIDER.is_dir():
        pytest.skip(f"shared WIDER FACE files not found at {WIDER}")
    return WIDER


@pytest.fixture(scope="module")
def val_records(shared: Path):
    return parse_bbx_gt(shared / "wider_face_val_bbx_gt.txt")


# ----------------------------------------------------------------------------------------------
# wider_face_*_bbx_gt.txt
# ----------------------------------------------------------------------------------------------


def test_parse_real_val_bbx_gt(val_records) -> None:
    stats = wider_stats(val_records)
    assert stats.images == 3226
    assert stats.faces + stats.degenerate_boxes + stats.all_zero_rows == 39708  # rows in the file
    assert stats.invalid_faces == 585
    assert stats.zero_face_images == stats.all_zero_rows == 4
    # w <= 0 or h <= 0: the w = -2 box plus six boxes of zero width or height
    assert stats.degenerate_boxes == 7
    assert max(r.num_faces + r.degenerate for r in val_records) == 709
    skating = next(r for r in val_records if r.path.endswith("39_Ice_Skating_iceskiing_39_583.jpg"))
    assert skating.degenerate == 1 and 7 not in skating.source_index
    for r in val_records:
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert not r.landmarks_valid.any()


def test_val_bbx_gt_agrees_with_mat(shared: Path, val_records) -> None:
    gt = load_wider_val_gt(shared)
    index = {key: i for i, key in enumerate(gt.keys())}
    assert {(r.event, r.file) for r in val_records} == set(index)
    for r in val_records:
        mat = gt.boxes[index[(r.event, r.file)]]
        assert mat.shape[0] == r.num_faces + r.degenerate + int(r.zero_row)
        xyxy = mat[r.source_index].astype(np.float32)
        xyxy[:, 2:] += xyxy[:, :2]
        np.testing.assert_array_equal(xyxy, r.boxes)


def test_parse_bbx_gt_small_file(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(BBX_GT)
    records = parse_bbx_gt(path)
    assert [r.num_faces for r in records] == [1, 3, 0]
    assert records[0].degenerate == 1
    np.testing.assert_array_equal(records[0].boxes, [[449, 330, 571, 479]])
    np.testing.assert_array_equal(records[1].ignore, [False, True, False])
    assert records[1].attributes[0, 0] == 2  # blur
    assert records[1].event == "0--Parade" and records[1].file == "0_Parade_marchingband_1_799"
    assert records[2].line == 10
    stats = wider_stats(records)
    assert (
        stats.images,
        stats.faces,
        stats.zero_face_images,
        stats.degenerate_boxes,
        stats.invalid_faces,
    ) == (3, 4, 1, 1, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 x 0\n", r"line 3: not a number: 'x'"),
        ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0\n", r"line 4: expected 10 numbers"),
        ("a/b.jpg\nthree\n", r"line 2: face count is not an integer: 'three'"),
        ("a/b.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", r"file ends inside the 3 faces"),
        ("1 2 3 4\n", r"line 1: expected an image path"),
        ("a/b.jpg\n0\n1 0 0 0 0 0 0 0 0 0\n", r"line 3: face count 0 must be followed by ten zeros"),
    ],
)
def test_parse_bbx_gt_malformed(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad_gt.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        parse_bbx_gt(path)
    assert "bad_gt.txt" in str(err.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        parse_bbx_gt(tmp_path / "nothing.txt")


# ----------------------------------------------------------------------------------------------
# RetinaFace label.txt
# ----------------------------------------------------------------------------------------------


def test_parse_real_retinaface_val(shared: Path, val_records) -> None:
    records = parse_retinaface_labels(shared / "retinaface_val_label.txt")
    assert len(records) == 3222
    assert not any(r.landmarks_valid.any() for r in records)
    by_path = {r.path: r for r in val_records}
    for r in records:  # same faces as the official split file (the four all-zero images are absent)
        np.testing.assert_array_equal(r.boxes, by_path[r.path].boxes)
    assert {p for p, r in by_path.items() if r.zero_row} == set(by_path) - {r.path for r in records}


def test_parse_retinaface_train_format(tmp_path: Path) -> None:
    path = tmp_path / "label.txt"
    path.write_text(README_LABELS)
    first, second = parse_retinaface_labels(path)
    assert first.path == "0--Parade/0_Parade_marchingband_1_849.jpg"
    np.testing.assert_array_equal(first.boxes, [[449, 330, 571, 479]])
    assert first.landmarks_valid.tolist() == [True] and first.landmarks_visible.all()
    np.testing.assert_allclose(first.landmarks[0, FIVE_POINT.index("nose_tip")], [515.031, 412.83], rtol=1e-6)
    np.testing.assert_allclose(
        first.landmarks[0, FIVE_POINT.index("mouth_right")], [538.357, 431.491], rtol=1e-6
    )
    assert second.landmarks_valid.tolist() == [False, True]
    assert (second.landmarks[0] == 0).all() and not second.landmarks_visible[0].any()  # no -1 anywhere
    assert not second.landmarks_visible[1].any()  # flag 1.0: occluded
    np.testing.assert_allclose(second.landmarks[1, 0], [84.188, 244.607], rtol=1e-6)
    assert wider_stats([first, second]).faces_without_landmarks == 1


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (
            "449 330 122 149 488.9 373.6 0.0 542.0 376.4 0.0 515.0 412.8 0.0 485.1 425.8 0.0 "
            "538.3 bad 0.0 0.82",
            r"line 2: not a number: 'bad'",
        ),
        ("449 330 122 149 488.9", r"line 2: expected 4 or 20 numbers"),
        (
            "449 330 122 149 488.9 373.6 2.0 542.0 376.4 0.0 515.0 412.8 0.0 485.1 425.8 0.0 "
            "538.3 431.4 0.0 0.82",
            r"line 2: landmark left_eye flag must be 0.0",
        ),
    ],
)
def test_parse_retinaface_malformed(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "label.txt"
    path.write_text(f"# 0--Parade/x.jpg\n{line}\n")
    with pytest.raises(ValueError, match=match) as err:
        parse_retinaface_labels(path)
    assert "label.txt" in str(err.value)


def test_merge_landmarks_pairs_duplicates_in_order(tmp_path: Path) -> None:
    (tmp_path / "gt.txt").write_text(
        "e/a.jpg\n3\n1 1 5 5 0 0 0 0 0 0\n1 1 5 5 0 0 0 0 0 0\n9 9 5 5 0 0 0 0 0 0\n"
    )
    pts = " ".join(f"{v} {v} 0.0" for v in range(5))
    pts2 = " ".join(f"{v + 10} {v + 10} 0.0" for v in range(5))
    (tmp_path / "label.txt").write_text(f"# e/a.jpg\n1 1 5 5 {pts} 0.5\n1 1 5 5 {pts2} 0.5\n")
    merged = merge_landmarks(
        parse_bbx_gt(tmp_path / "gt.txt")[0], parse_retinaface_labels(tmp_path / "label.txt")[0]
    )
    assert merged.landmarks_valid.tolist() == [True, True, False]
    assert (
        merged.landmarks[0, 0, 0] == 0
        and merged.landmarks[1, 0, 0] == 10
        and (merged.landmarks[2] == 0).all()
    )


# ----------------------------------------------------------------------------------------------
# Dataset over a tiny tree in the official layout
# ----------------------------------------------------------------------------------------------


def _write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)


def _cell(items: list) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def _write_val_mats(folder: Path, images: dict[str, list[tuple[str, np.ndarray]]], keep: dict) -> None:
    """Official eval_tools .mat structure: cells per event of cells per image."""
    from scipy.io import savemat

    events = list(images)
    common = {
        "event_list": _cell(events),
        "file_list": _cell([_cell([name for name, _ in images[e]]) for e in events]),
        "face_bbx_list": _cell([_cell([b.astype(np.int32) for _, b in images[e]]) for e in events]),
    }
    savemat(folder / "wider_face_val.mat", common)
    for s, setting in enumerate(("easy", "medium", "hard")):
        gt_list = _cell(
            [
                _cell([np.array(keep[(e, name)][s], dtype=np.uint16).reshape(-1, 1) for name, _ in images[e]])
                for e in events
            ]
        )
        savemat(folder / f"wider_{setting}_val.mat", {**common, "gt_list": gt_list})


@pytest.fixture()
def tiny_root(tmp_path: Path) -> Path:
    root = tmp_path / "widerface"
    split_dir = root / "wider_face_split"
    split_dir.mkdir(parents=True)
    for split in ("train", "val"):
        (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text(BBX_GT)
        _write_image(
            root / f"WIDER_{split}/images/0--Parade/0_Parade_marchingband_1_849.jpg", (640, 500), (255, 0, 0)
        )
        _write_image(
            root / f"WIDER_{split}/images/0--Parade/0_Parade_marchingband_1_799.jpg", (320, 300), (0, 0, 255)
        )
        _write_image(
            root / f"WIDER_{split}/images/1--Handshaking/1_Handshaking_empty_1.jpg", (40, 30), (9, 9, 9)
        )
    (root / "train").mkdir()
    (root / "train" / "label.txt").write_text(README_LABELS)
    images = {
        "0--Parade": [
            ("0_Parade_marchingband_1_849", np.array([[449, 330, 122, 149], [10, 12, -2, 5]])),
            ("0_Parade_marchingband_1_799", np.array([[78, 221, 7, 8], [78, 238, 14, 17], [5, 5, 4, 4]])),
        ],
        "1--Handshaking": [("1_Handshaking_empty_1", np.zeros((0, 4)))],
    }
    keep = {  # 1-based gt_list per (easy, medium, hard); the degenerate face 2 is kept in hard
        ("0--Parade", "0_Parade_marchingband_1_849"): ([1], [1], [1, 2]),
        ("0--Parade", "0_Parade_marchingband_1_799"): ([], [1], [1, 3]),
        ("1--Handshaking", "1_Handshaking_empty_1"): ([], [], []),
    }
    _write_val_mats(split_dir, images, keep)
    return root


def test_train_dataset(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="facelit.datasets.wider_face"):
        ds = WiderFaceDataset(tiny_root, split="train")
    assert sum("degenerate_boxes=1" in rec.getMessage() for rec in caplog.records) == 1
    assert len(ds) == 3 and ds.stats.zero_face_images == 1 and ds.stats.faces_without_landmarks == 2
    s0, s1, s2 = ds[0], ds[1], ds[2]
    assert s0["image"].shape == (3, 500, 640) and s0["image"].dtype == torch.float32
    assert s0["image"][0].mean() > 0.95 and s0["image"][2].mean() < 0.05  # red, RGB order, [0, 1]
    assert s0["meta"] == {
        "event": "0--Parade",
        "file": "0_Parade_marchingband_1_849",
        "path": "0--Parade/0_Parade_marchingband_1_849.jpg",
        "orig_size": (500, 640),
    }
    assert s0["boxes"].dtype == torch.float32 and s0["boxes"].tolist() == [[449.0, 330.0, 571.0, 479.0]]
    assert s0["landmarks"].shape == (1, 5, 2) and s0["landmarks_valid"].tolist() == [True]
    assert s1["landmarks_valid"].tolist() == [False, True, False]  # -1 face; face absent from label.txt
    assert not (s1["landmarks"] == -1).any()
    assert s1["ignore"].tolist() == [False, True, False]
    assert s1["difficulty"].tolist() == [[False, False, True], [False, False, False], [False, False, True]]
    assert s2["boxes"].shape == (0, 4) and s2["difficulty"].shape == (0, 3)
    assert "mesh" not in s0 and "mesh_valid" not in s0
    batch = collate_detections([s0, s0])
    assert batch["boxes"].shape == (2, 1, 4) and batch["landmarks_visible"].shape == (2, 1, 5)


def test_val_dataset_difficulty_from_mat(tiny_root: Path) -> None:
    ds = WiderFaceDataset(tiny_root, split="val", landmarks=False)
    s0, s1 = ds[0], ds[1]
    assert "landmarks" not in s0 and "landmarks_valid" not in s0 and "landmarks_visible" not in s0
    assert s0["difficulty"].tolist() == [[True, True, True]]  # the degenerate face 2 was dropped
    assert s1["difficulty"].tolist() == [[False, True, True], [False, False, False], [False, False, True]]


def test_dataset_transform_and_errors(tiny_root: Path) -> None:
    ds = WiderFaceDataset(tiny_root, split="train", transform=lambda s: {**s, "flipped": True})
    assert ds[0]["flipped"] is True
    missing = tiny_root / "WIDER_train/images/0--Parade/0_Parade_marchingband_1_799.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="0_Parade_marchingband_1_799.jpg"):
        ds[1]
    with pytest.raises(ValueError, match="split must be one of"):
        WiderFaceDataset(tiny_root, split="test")
    (tiny_root / "wider_face_split" / "wider_hard_val.mat").unlink()
    with pytest.raises(FileNotFoundError, match="wider_hard_val.mat"):
        WiderFaceDataset(tiny_root, split="val")
