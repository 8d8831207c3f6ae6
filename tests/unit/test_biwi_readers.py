"""BIWI pose files, Biwi+ labels, the fixed sequence split, BIWI/SynHead crop datasets (tiny trees)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facelit.datasets.biwi import (
    BIWI_SEQUENCES,
    BIWI_TEST_SEQUENCES,
    BIWI_TRAIN_SEQUENCES,
    BiwiDataset,
    load_biwi_plus,
    read_biwi_pose,
    scan_biwi,
)
from facelit.datasets.synhead import SynHeadDataset, read_synhead_csv

# README test vector: sequence 12, frame_00003 -> [yaw, pitch, roll] = [9.327, -0.405, -6.394].
R_FILE = [[0.980639, 0.109899, 0.162077], [-0.11023, 0.993882, -0.00697376], [-0.161851, -0.011027, 0.986754]]
YPR = [9.327, -0.405, -6.394]


def _pose_text(rot=R_FILE, centre=(10.0, 20.0, 900.0)) -> str:
    rows = [" ".join(str(v) for v in r) for r in rot]
    return "\n".join(rows) + " \n\n" + " ".join(str(v) for v in centre) + " \n"


def _write_frame(root, seq: str, frame: int, image: bool = True, pose: bool = True) -> None:
    folder = root / seq
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        Image.fromarray(np.full((48, 64, 3), 100, np.uint8)).save(folder / f"frame_{frame:05d}_rgb.png")
    if pose:
        (folder / f"frame_{frame:05d}_pose.txt").write_text(_pose_text())


def test_split_is_fixed_disjoint_and_about_thirty_percent(shared_data):
    assert len(BIWI_TRAIN_SEQUENCES) == 16 and len(BIWI_TEST_SEQUENCES) == 8
    assert sorted(BIWI_TRAIN_SEQUENCES + BIWI_TEST_SEQUENCES) == list(BIWI_SEQUENCES)
    labels = load_biwi_plus(shared_data / "biwi" / "Biwi_plus.npz")
    test = sum(n.split("/")[0] in BIWI_TEST_SEQUENCES for n in labels["images"])
    assert len(labels["images"]) == 15678 and test == 5118


def test_pose_file_gives_readme_vector(tmp_path):
    path = tmp_path / "frame_00003_pose.txt"
    path.write_text(_pose_text())
    rot, centre = read_biwi_pose(path)
    torch.testing.assert_close(rot, torch.tensor(R_FILE, dtype=torch.float64))
    torch.testing.assert_close(centre, torch.tensor([10.0, 20.0, 900.0], dtype=torch.float64))
    from facelit.geometry.pose import ypr_from_biwi_pose_matrix

    np.testing.assert_allclose(ypr_from_biwi_pose_matrix(rot).numpy(), YPR, atol=1e-3)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1 0 0\n0 1 0\n\n0 0 0\n", "3 rotation rows"),
        ("1 0 0\n0 1 0\n0 0 1 5\n\n0 0 0\n", "lengths"),
        ("1 0 0\n0 1 0\n0 0 x\n\n0 0 0\n", "not a number"),
        ("1 0 0\n0 nan 0\n0 0 1\n\n0 0 0\n", "non-finite"),
        ("1 0 0\n0 1.1 0\n0 0 1\n\n0 0 0\n", "not orthonormal"),
    ],
)
def test_bad_pose_files_name_the_file(tmp_path, text, match):
    path = tmp_path / "frame_00001_pose.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_biwi_pose(path)
    assert str(path) in str(info.value)


def test_biwi_plus_labels_and_square_boxes(shared_data):
    labels = load_biwi_plus(shared_data / "biwi" / "Biwi_plus_non_cal.npz")
    i = labels["images"].index("12/frame_00003_rgb.png")
    np.testing.assert_allclose(labels["ypr"][i].numpy(), YPR, atol=1e-3)
    wh = labels["boxes"][:, 2:] - labels["boxes"][:, :2]
    assert torch.equal(wh[:, 0], wh[:, 1]) and (wh > 0).all()


def test_biwi_plus_nan_angle_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        images=np.array(["01/frame_00001_rgb.png"]),
        ypr=np.array([[np.nan, 0, 0]]),
        bbox=np.array([[1, 1, 5, 5]], np.int32),
    )
    with pytest.raises(ValueError, match="01/frame_00001_rgb.png"):
        load_biwi_plus(path)


def test_scan_counts_missing_frames(tmp_path):
    _write_frame(tmp_path, "12", 3)
    _write_frame(tmp_path, "12", 4, pose=False)
    _write_frame(tmp_path, "12", 5, image=False)
    names, ypr, skipped = scan_biwi(tmp_path, ("12",))
    assert names == ["12/frame_00003_rgb.png"] and skipped == 2
    np.testing.assert_allclose(ypr[0].numpy(), YPR, atol=1e-3)


def test_biwi_dataset_crops_with_label_file_boxes(tmp_path):
    for f in (3, 4):
        _write_frame(tmp_path, "12", f)
    labels = tmp_path / "labels.npz"
    np.savez(
        labels,
        images=np.array(["12/frame_00003_rgb.png", "12/frame_00004_rgb.png", "12/frame_00009_rgb.png"]),
        ypr=np.array([YPR, [1.0, 2, 3], [0.0, 0, 0]]),
        bbox=np.array([[8, 4, 32, 32]] * 3, np.int32),
    )
    ds = BiwiDataset(tmp_path, ("12",), labels, size=16)
    assert len(ds) == 2 and ds.missing == 1  # frame 9 has no image
    sample = ds[1]
    assert sample["image"].shape == (3, 16, 16)
    torch.testing.assert_close(sample["pose"], torch.tensor([1.0, 2, 3]))
    torch.testing.assert_close(sample["boxes"], torch.tensor([0.0, 0, 16, 16]))  # the box is the crop
    torch.testing.assert_close(ds.poses[0], torch.tensor(YPR))
    with pytest.raises(ValueError, match="unknown BIWI sequences"):
        BiwiDataset(tmp_path, ("99",), labels)


def test_synhead_csv_and_dataset(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,x_min,y_min,x_max,y_max,yaw,pitch,roll\na.png,10,10,30,30,45,-10,5\n")
    names, boxes, poses = read_synhead_csv(csv)
    assert names == ["a.png"] and boxes.tolist() == [[10, 10, 30, 30]] and poses.tolist() == [[45, -10, 5]]
    sample = SynHeadDataset(csv, size=20)[0]
    assert sample["image"].shape == (3, 20, 20) and sample["pose"].tolist() == [45, -10, 5]


@pytest.mark.parametrize(
    "row, match",
    [
        ("a.png,1,2,3,4,5,6\n", ":1: expected 8 fields"),
        ("a.png,1,2,3,4,x,6,7\n", ":1: non-numeric"),
        ("a.png,1,2,3,4,nan,6,7\n", ":1: non-finite"),
        ("a.png,5,2,3,4,1,6,7\n", ":1: empty box"),
    ],
)
def test_synhead_bad_rows(tmp_path, row, match):
    csv = tmp_path / "labels.csv"
    csv.write_text(row)
    with pytest.raises(ValueError, match=match):
        read_synhead_csv(csv)
