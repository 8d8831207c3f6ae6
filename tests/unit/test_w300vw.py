"""300-VW reader and the clip datamodule: the published splits, .pts parsing, windows and padding,
frames from vid.avi (PyAV) or frames/, bad input naming the file, and clip batches (real tiny tree
written here in the official layout, and synthetic)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.w300vw import W300VWDataModule
from facelit.augment.clips import ClipAugment
from facelit.augment.crop import crop_resize
from facelit.datasets.clips import collate_clips, pad_clip
from facelit.datasets.w300vw import (
    W300VW_CATEGORIES,
    W300VW_TRAIN,
    W300VWClips,
    category_of,
    clip_windows,
    extract_frames,
    read_frames,
    read_pts,
    scan_clip,
)
from facelit.geometry.schemes import IBUG68

HEIGHT, WIDTH = 48, 64


def _points(frame: int) -> np.ndarray:
    """68 points (1-based .pts values) spanning x in [10.5, 30.5], y in [10.5, 30.5], shifted by the frame."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([20.5 + 10 * np.cos(t), 20.5 + 10 * np.sin(t)], 1)
    pts[0], pts[17] = (10.5, 10.5), (30.5, 30.5)  # pin the box corners
    return pts + frame


def _write_pts(path: Path, pts: np.ndarray) -> None:
    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points:  {len(pts)}\n{{\n{rows}\n}}\n")


def _frames(n: int) -> list[np.ndarray]:
    g = np.random.default_rng(0)
    return [g.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def write_clip(
    root: Path, name: str, n: int, video: bool = True, frames: bool = False, video_frames: int | None = None
) -> list[np.ndarray]:
    """A 300-VW clip folder: n annotated frames, vid.avi (lossless PNG codec) and/or frames/."""
    clip = root / name
    (clip / "annot").mkdir(parents=True)
    images = _frames(n)
    for i in range(n):
        _write_pts(clip / "annot" / f"{i + 1:06d}.pts", _points(i))
    if video:
        with av.open(str(clip / "vid.avi"), "w") as container:
            stream = container.add_stream("png", rate=30)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "rgb24"
            for img in images[: video_frames if video_frames is not None else n]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    if frames:
        (clip / "frames").mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img).save(clip / "frames" / f"{i + 1:06d}.png")
    return images


# ---------------------------------------------------------------------------------------- splits
def test_published_splits():
    assert len(W300VW_TRAIN) == 50
    assert [len(W300VW_CATEGORIES[k]) for k in (1, 2, 3)] == [31, 19, 14]
    every = list(W300VW_TRAIN) + [c for k in (1, 2, 3) for c in W300VW_CATEGORIES[k]]
    assert len(set(every)) == len(every) == 114
    # spot checks against the 300-VW challenge lists
    assert W300VW_CATEGORIES[3][:4] == ("410", "411", "516", "517") and W300VW_CATEGORIES[3][-1] == "562"
    assert W300VW_CATEGORIES[2][0] == "203" and W300VW_CATEGORIES[1][0] == "114"
    assert W300VW_TRAIN[0] == "001" and W300VW_TRAIN[-1] == "225"
    assert (category_of("548"), category_of("553"), category_of("533"), category_of("001")) == (1, 2, 3, 0)


# ------------------------------------------------------------------------------------------- pts
def test_read_pts_moves_to_the_area_frame(tmp_path):
    path = tmp_path / "a.pts"
    _write_pts(path, _points(0))
    pts = read_pts(path)
    assert pts.shape == (68, 2)
    assert torch.allclose(pts[0], torch.tensor([10.0, 10.0])) and torch.allclose(
        pts[17], torch.tensor([30.0, 30.0])
    )


def test_read_pts_bad_input_names_the_file(tmp_path):
    path = tmp_path / "short.pts"
    _write_pts(path, _points(0)[:67])
    with pytest.raises(ValueError, match=r"short\.pts: 67 points, expected 68"):
        read_pts(path)
    bad = tmp_path / "bad.pts"
    bad.write_text("version: 1\nn_points: 68\n{\n1.0 abc\n}\n")
    with pytest.raises(ValueError, match=r"bad\.pts:4: not a number: 'abc'"):
        read_pts(bad)
    lying = tmp_path / "lying.pts"
    lying.write_text("version: 1\nn_points: 3\n{\n" + "1 2\n" * 68 + "}\n")
    with pytest.raises(ValueError, match=r"lying\.pts: header says n_points 3"):
        read_pts(lying)
    open_ = tmp_path / "open.pts"
    open_.write_text("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68)
    with pytest.raises(ValueError, match=r"open\.pts: no '}'"):
        read_pts(open_)
    with pytest.raises(FileNotFoundError, match="nowhere.pts"):
        read_pts(tmp_path / "nowhere.pts")


# --------------------------------------------------------------------------------------- windows
def test_clip_windows():
    assert clip_windows(20, 8) == [(0, 8), (8, 8), (16, 4)]  # the tail is kept (padded later)
    assert clip_windows(16, 8) == [(0, 8), (8, 8)]
    assert clip_windows(5, 8) == [(0, 5)]  # shorter than T: one short clip, not dropped
    assert clip_windows(10, 8, stride=4) == [(0, 8), (4, 6)]
    assert clip_windows(7, None) == [(0, 7)]
    with pytest.raises(ValueError, match="at least one frame"):
        clip_windows(0, 8)


def test_pad_and_collate_clips():
    a = {
        "image": torch.ones(2, 3, 4, 4),
        "landmarks": torch.ones(2, 7, 2),
        "landmarks_visible": torch.ones(2, 7, dtype=torch.bool),
        "frame_mask": torch.ones(2, dtype=torch.bool),
        "frame_index": torch.tensor([5, 6]),
        "identity": torch.tensor(1),
        "clip": "x",
    }
    b = {
        **a,
        "image": torch.ones(3, 3, 4, 4),
        "landmarks": torch.ones(3, 7, 2),
        "landmarks_visible": torch.ones(3, 7, dtype=torch.bool),
        "frame_mask": torch.ones(3, dtype=torch.bool),
        "frame_index": torch.tensor([0, 1, 2]),
        "clip": "y",
    }
    batch = collate_clips([a, b])
    assert batch["image"].shape == (2, 3, 3, 4, 4) and batch["clip"] == ["x", "y"]
    assert batch["frame_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert not batch["landmarks_visible"][0, 2].any() and float(batch["image"][0, 2].abs().sum()) == 0.0
    assert batch["identity"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="'y' has 3 frames, more than the length 2"):
        pad_clip(b, 2)


# -------------------------------------------------------------------------------------- reading
def test_clips_from_video_crop_and_pad(tmp_path):
    images = write_clip(tmp_path, "114", 5)
    ds = W300VWClips(tmp_path, ["114"], clip_length=4, size=32)
    assert len(ds) == 2
    first, tail = ds[0], ds[1]
    assert first["image"].shape == (4, 3, 32, 32) and first["landmarks"].shape == (4, 68, 2)
    assert int(first["category"]) == 1 and first["clip"] == "114"
    assert tail["frame_mask"].tolist() == [True, False, False, False]  # 1 frame + 3 padding
    assert tail["frame_index"].tolist() == [4, 0, 0, 0]
    assert not tail["landmarks_visible"][1:].any() and tail["landmarks_visible"][0].all()
    # frame 0: points span [10, 30] (area frame), crop box [5, 5, 35, 35] (margin 0.25), 32 px
    scale = 32 / 30
    assert torch.allclose(first["landmarks"][0, 0], torch.tensor([5 * scale, 5 * scale]), atol=1e-4)
    assert torch.allclose(first["landmarks"][0, 17], torch.tensor([25 * scale, 25 * scale]), atol=1e-4)
    # frame 2 moved by (2, 2): same crop coordinates, pixels from the decoded frame 2
    assert torch.allclose(first["landmarks"][2], first["landmarks"][0], atol=1e-4)
    frame2 = torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255
    expected = crop_resize(frame2, torch.tensor([7.0, 7.0, 37.0, 37.0]), 32).clamp(0, 1)
    assert torch.allclose(first["image"][2], expected, atol=1e-5)


def test_frames_folder_equals_video_and_extraction_resumes(tmp_path):
    write_clip(tmp_path, "001", 3)
    from_video = W300VWClips(tmp_path, ["001"], clip_length=None, size=24)[0]
    assert extract_frames(tmp_path) == 3
    assert extract_frames(tmp_path) == 0  # complete: nothing to do
    (tmp_path / "001" / "frames" / "000002.png").unlink()
    assert extract_frames(tmp_path) == 1  # a partial folder is completed
    from_frames = W300VWClips(tmp_path, ["001"], clip_length=None, size=24)[0]
    assert torch.allclose(from_frames["image"], from_video["image"], atol=1e-6)
    assert from_frames["frame_mask"].all() and from_frames["image"].shape[0] == 3  # whole video


def test_missing_frames_and_annotations_name_the_file(tmp_path):
    write_clip(tmp_path, "002", 5, video_frames=3)
    with pytest.raises(FileNotFoundError, match=r"002/vid\.avi: missing frame 4"):
        W300VWClips(tmp_path, ["002"], clip_length=None, size=16)[0]
    write_clip(tmp_path, "003", 3, video=False, frames=True)
    (tmp_path / "003" / "frames" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"003/frames/000002\.png"):
        read_frames(scan_clip(tmp_path / "003"), 0, 3)
    write_clip(tmp_path, "004", 4)
    (tmp_path / "004" / "annot" / "000002.pts").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing annotation .*004/annot/000002\.pts"):
        scan_clip(tmp_path / "004")
    with pytest.raises(FileNotFoundError, match=r"videos missing .*\['999'\]"):
        W300VWClips(tmp_path, ["999"])


def test_rednet7_subset_from_real_points(tmp_path):
    write_clip(tmp_path, "114", 2)
    full = W300VWClips(tmp_path, ["114"], clip_length=2, size=32)[0]
    seven = W300VWClips(tmp_path, ["114"], clip_length=2, size=32, scheme="rednet7")[0]
    assert torch.allclose(seven["landmarks"], full["landmarks"][:, [36, 39, 42, 45, 30, 48, 54]])
    assert seven["landmarks_visible"].shape == (2, 7)


# ----------------------------------------------------------------------------------- datamodule
def test_datamodule_on_a_full_tiny_tree(tmp_path):
    for name in W300VW_TRAIN + tuple(c for k in (1, 2, 3) for c in W300VW_CATEGORIES[k]):
        write_clip(tmp_path, name, 2, video=False, frames=True)
    dm = W300VWDataModule(
        data_dir=str(tmp_path),
        clip_length=2,
        image_size=16,
        batch_size=2,
        num_workers=0,
        augment="none",
        test_categories=(3,),
    )
    dm.setup("fit")
    train = {v.name for v in dm.train_set.videos}
    val = {v.name for v in dm.val_set.videos}
    assert train | val == set(W300VW_TRAIN) and not train & val and len(val) >= 1
    assert [v.name for v in dm.test_set.videos] == list(W300VW_CATEGORIES[3])
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 2, 3, 16, 16) and batch["category"].tolist() == [3, 3]
    assert batch["landmarks"].shape == (2, 2, 7, 2)  # rednet7 by default
    # identity = position in W300VW_VIDEOS: training videos 0-49, then categories 1, 2, 3
    assert batch["identity"].tolist() == [50 + 31 + 19, 50 + 31 + 19 + 1]
    assert all(0 <= int(dm.train_set[i]["identity"]) < 50 for i in range(0, len(dm.train_set), 7))
    with pytest.raises(ValueError, match="num_identities must be >= 50 on 300-VW"):
        W300VWDataModule(data_dir=str(tmp_path), num_identities=20)


def test_synthetic_datamodule_batches():
    dm = W300VWDataModule(
        clip_length=3,
        image_size=32,
        num_train_clips=4,
        num_val_clips=2,
        batch_size=2,
        num_workers=0,
        scheme="ibug68",
        rotation=0.0,
        scales=(1.0, 1.0),
        translation=0.0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 3, 32, 32) and batch["landmarks"].shape == (2, 3, 68, 2)
    for key, dtype in (
        ("landmarks_visible", torch.bool),
        ("frame_mask", torch.bool),
        ("occluded", torch.bool),
        ("identity", torch.int64),
        ("category", torch.int64),
        ("frame_index", torch.int64),
    ):
        assert batch[key].dtype == dtype, key
    val = next(iter(dm.val_dataloader()))
    assert val["clip"] == ["synth-1-0", "synth-1-1"]  # validation clips come from seed + 1
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["clip"] == ["synth-2-0", "synth-2-1"]  # test: seed + 2
    with pytest.raises(ValueError, match="unknown 300-VW test categories"):
        W300VWDataModule(test_categories=(4,))


def test_clip_augment_one_transform_per_clip():
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(3, 32, 32, generator=g)
    points = torch.rand(68, 2, generator=g) * 20 + 6
    clip = {
        "image": frame.expand(4, -1, -1, -1).clone(),
        "landmarks": points.expand(4, -1, -1).clone(),
        "landmarks_visible": torch.ones(4, 68, dtype=torch.bool),
        "frame_mask": torch.ones(4, dtype=torch.bool),
    }
    out = ClipAugment("ibug68")(clip, torch.Generator().manual_seed(1))
    assert torch.allclose(
        out["image"], out["image"][:1].expand_as(out["image"])
    )  # same transform every frame
    assert torch.allclose(out["landmarks"], out["landmarks"][:1].expand_as(out["landmarks"]))
    flip = ClipAugment("ibug68", flip_p=1.0, rotation=0.0, scales=(1.0, 1.0), translation=0.0)(clip)
    expected = points[list(IBUG68.flip_perm)] * torch.tensor([-1.0, 1.0]) + torch.tensor([32.0, 0.0])
    assert torch.allclose(flip["landmarks"][2], expected, atol=1e-4)  # x' = W - x, left/right swapped


def test_300w_stills_as_one_frame_clips(tmp_path):
    """Single-frame pre-training: 300W training photos (HRNet CSV) as one-frame clips, framed like
    the 300-VW crops (landmarks' box plus a quarter on each side)."""
    from datamodules.w300vw import W300VWDataModule as DM

    stills = tmp_path / "300w"
    (stills / "images").mkdir(parents=True)
    pts = _points(0)  # 1-based, box [10.5, 30.5]^2 -> area [10, 30]^2
    header = ["image_name", "scale", "center_w", "center_h"] + [
        f"original_{i}_{a}" for i in range(68) for a in ("x", "y")
    ]
    rows = [",".join(header)]
    for n in range(60):  # enough photos for the 5 % hold-out to leave both sides non-empty
        Image.fromarray(_frames(1)[0]).save(stills / "images" / f"p{n}.png")
        rows.append(
            ",".join([f"p{n}.png", f"{20 / 200}", "20.5", "20.5"] + [f"{v:.3f}" for v in pts.reshape(-1)])
        )
    (stills / "face_landmarks_300w_train.csv").write_text("\n".join(rows) + "\n")
    dm = DM(
        stills_dir=str(stills),
        clip_length=4,
        image_size=32,
        num_val_clips=2,
        batch_size=2,
        num_workers=0,
        augment="none",
    )
    dm.setup("fit")
    assert 0 < len(dm.train_set) < 60  # the 300W hold-out is not trained on
    sample = dm.train_set[0]
    assert sample["image"].shape == (1, 3, 32, 32) and sample["landmarks"].shape == (1, 7, 2)
    assert "identity" not in sample and sample["frame_mask"].tolist() == [True]
    # rednet7 point 0 is iBUG 36; the crop is the square [5, 35]^2 around the points' box, 32 px
    expected = (torch.tensor(pts[36], dtype=torch.float32) - 0.5 - 5.0) * 32 / 30
    assert torch.allclose(sample["landmarks"][0, 0], expected, atol=1e-3)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 3, 32, 32) and "identity" not in batch
    assert next(iter(dm.val_dataloader()))["image"].shape[1] == 4  # validation stays on clips


def test_clip_augment_batched_on_the_device_path():
    """A clip batch (B, T, ...): one transform per clip, different clips get different ones; padding
    frames stay invisible."""
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(3, 32, 32, generator=g)
    points = torch.rand(68, 2, generator=g) * 20 + 6
    batch = {
        "image": frame.expand(2, 3, -1, -1, -1).clone(),
        "landmarks": points.expand(2, 3, -1, -1).clone(),
        "landmarks_visible": torch.ones(2, 3, 68, dtype=torch.bool),
        "pose": torch.zeros(2, 3, 3),
        "frame_mask": torch.tensor([[True, True, True], [True, True, False]]),
    }
    out = ClipAugment("ibug68", flip_p=0.5, rotation=20.0)(batch, torch.Generator().manual_seed(3))
    assert out["image"].shape == (2, 3, 3, 32, 32) and out["pose"].shape == (2, 3, 3)
    assert torch.allclose(out["landmarks"][:, 1], out["landmarks"][:, 0])  # same transform within a clip
    assert not torch.allclose(out["landmarks"][0, 0], out["landmarks"][1, 0])  # clips differ
    assert not out["landmarks_visible"][1, 2].any()  # the padding frame


def test_decode_video_names_a_missing_file(tmp_path):
    from facelit.datasets.video import decode_video

    with pytest.raises(FileNotFoundError, match="nothing.avi"):
        next(decode_video(tmp_path / "nothing.avi"))
